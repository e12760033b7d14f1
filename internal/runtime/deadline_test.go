package runtime

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// hang answers like gRPC does for a server that never replies: nothing
// until the call's context ends.
func hang(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
	<-ctx.Done()
	return status.FromContextError(ctx.Err()).Err()
}

func TestCallDeadlineReportsNotResponding(t *testing.T) {
	d := callDeadline{timeout: 20 * time.Millisecond}
	err := d.unary(context.Background(), "/containerd.services.containers.v1.Containers/Get", nil, nil, nil, hang)
	// The containerd client flattens the status like this before berth sees it.
	err = (&Containerd{opts: Options{Address: "/x/containerd.sock"}}).wrap(errgrpc.ToNative(err))
	var nr *NotRespondingError
	if !errors.As(err, &nr) || !errdefs.IsUnavailable(err) {
		t.Fatalf("want a NotRespondingError of class unavailable, got %T %v", err, err)
	}
	msg := err.Error()
	for _, want := range []string{"containerd is not responding", "containers.Get", "20ms", "/x/containerd.sock"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestCallDeadlineKeepsCallersDeadlineAndLongMethods(t *testing.T) {
	d := callDeadline{timeout: time.Hour}
	// The caller's own, shorter deadline stays the caller's: its expiry is
	// not containerd's fault.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := d.unary(ctx, "/containerd.services.containers.v1.Containers/Get", nil, nil, nil, hang)
	if status.Code(err) != codes.DeadlineExceeded || isNotResponding(err) {
		t.Fatalf("caller's deadline: got %v", err)
	}
	// A long method gets no deadline of ours.
	var had bool
	_ = d.unary(context.Background(), "/containerd.services.tasks.v1.Tasks/Wait", nil, nil, nil,
		func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
			_, had = ctx.Deadline()
			return nil
		})
	if had {
		t.Fatal("Tasks/Wait got a deadline")
	}
	// Every other method gets one.
	_ = d.unary(context.Background(), "/containerd.services.tasks.v1.Tasks/Get", nil, nil, nil,
		func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
			_, had = ctx.Deadline()
			return nil
		})
	if !had {
		t.Fatal("Tasks/Get got no deadline")
	}
}

func TestWrapClassifiesOnlyTheContainerdConnection(t *testing.T) {
	r := &Containerd{opts: Options{Address: "/x/containerd.sock"}}
	d := callDeadline{timeout: time.Second}
	down := d.unary(context.Background(), "/containerd.services.version.v1.Version/Version", nil, nil, nil,
		func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
			return status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial unix /x/containerd.sock: connect: connection refused"`)
		})
	var ue *UnavailableError
	if err := r.wrap(errgrpc.ToNative(down)); !errors.As(err, &ue) || !strings.Contains(err.Error(), "start containerd") {
		t.Fatalf("containerd down: got %v", err)
	}
	// A registry that refuses a pull fails in this process, with the same
	// syscall error, but not over the containerd connection.
	registry := errors.New(`failed to resolve reference "127.0.0.1:1/x:1": dial tcp 127.0.0.1:1: connect: connection refused`)
	if err := r.wrap(registry); errors.As(err, &ue) || strings.Contains(err.Error(), "containerd") {
		t.Fatalf("registry refused: got %v", err)
	}
}

func TestShortMethod(t *testing.T) {
	for in, want := range map[string]string{
		"/containerd.services.containers.v1.Containers/Get": "containers.Get",
		"/containerd.services.snapshots.v1.Snapshots/List":  "snapshots.List",
		"odd": "odd",
	} {
		if got := shortMethod(in); got != want {
			t.Errorf("shortMethod(%q) = %q, want %q", in, got, want)
		}
	}
}
