package runtime

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultCallTimeout bounds a containerd call whose method is not known to
// be long; Options.CallTimeout overrides it.
const DefaultCallTimeout = 30 * time.Second

// Markers put into the messages of the errors the interceptors make. The
// containerd client turns every gRPC status into a plain error (errgrpc
// ToNative keeps only the code's class and the text), so the text is the
// one thing that survives the trip back to wrap.
const (
	notRespondingText = "containerd is not responding"
	connFailedText    = "containerd connection failed"
)

// longMethods are containerd methods whose duration follows the work asked
// for, not containerd's health: waiting for a task to exit, computing or
// applying a layer, walking or copying a snapshot's files, streaming blobs
// and events. They run under their caller's context only.
var longMethods = map[string]bool{
	"/containerd.services.tasks.v1.Tasks/Wait":            true,
	"/containerd.services.diff.v1.Diff/Apply":             true,
	"/containerd.services.diff.v1.Diff/Diff":              true,
	"/containerd.services.snapshots.v1.Snapshots/Prepare": true, // native copies the parent
	"/containerd.services.snapshots.v1.Snapshots/View":    true,
	"/containerd.services.snapshots.v1.Snapshots/Commit":  true, // overlayfs sums the layer's usage
	"/containerd.services.snapshots.v1.Snapshots/Usage":   true, // walks the layer
	"/containerd.services.content.v1.Content/Read":        true,
	"/containerd.services.content.v1.Content/Write":       true,
	"/containerd.services.events.v1.Events/Subscribe":     true,
	"/containerd.services.streaming.v1.Streaming/Stream":  true,
	"/containerd.services.transfer.v1.Transfer/Transfer":  true,
}

// callDeadline gives every containerd call that is not in longMethods a
// deadline of at most timeout, so a frozen containerd is reported instead
// of hanging the caller. A call whose context already ends sooner keeps
// its own deadline.
type callDeadline struct{ timeout time.Duration }

func (d callDeadline) bound(ctx context.Context, method string) (context.Context, context.CancelFunc, bool) {
	if longMethods[method] {
		return ctx, func() {}, false
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d.timeout {
		return ctx, func() {}, false
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	return ctx, cancel, true
}

// classify rewrites what the connection answered: our own deadline firing
// becomes "containerd is not responding", and gRPC's Unavailable (nothing
// listens, the connection broke) is marked as a failure of the containerd
// connection itself, so wrap can tell it from a registry that refused a
// pull (those errors never travel over this connection).
func (d callDeadline) classify(parent context.Context, method string, ours bool, err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch {
	case ours && s.Code() == codes.DeadlineExceeded && parent.Err() == nil:
		return status.Errorf(codes.Unavailable, "%s (no answer to %s within %s)", notRespondingText, shortMethod(method), d.timeout)
	case s.Code() == codes.Unavailable && !strings.Contains(s.Message(), notRespondingText):
		return status.Errorf(codes.Unavailable, "%s: %s", connFailedText, s.Message())
	}
	return err
}

func (d callDeadline) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	bctx, cancel, ours := d.bound(ctx, method)
	defer cancel()
	return d.classify(ctx, method, ours, invoker(bctx, method, req, reply, cc, opts...))
}

func (d callDeadline) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	bctx, cancel, ours := d.bound(ctx, method)
	cs, err := streamer(bctx, desc, cc, method, opts...)
	if err != nil {
		cancel()
		return nil, d.classify(ctx, method, ours, err)
	}
	return &boundStream{ClientStream: cs, d: d, parent: ctx, method: method, ours: ours, cancel: cancel}, nil
}

// boundStream releases its deadline's timer when the stream ends and
// classifies the errors it ends with. A stream its reader abandons is
// released when the deadline passes.
type boundStream struct {
	grpc.ClientStream
	d      callDeadline
	parent context.Context
	method string
	ours   bool
	cancel context.CancelFunc
}

func (s *boundStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.cancel()
		return s.d.classify(s.parent, s.method, s.ours, err)
	}
	return nil
}

func (s *boundStream) SendMsg(m any) error {
	return s.d.classify(s.parent, s.method, s.ours, s.ClientStream.SendMsg(m))
}

// shortMethod turns "/containerd.services.containers.v1.Containers/Get"
// into "containers.Get".
func shortMethod(method string) string {
	svc, name, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	if !ok {
		return method
	}
	svc = strings.TrimPrefix(svc, "containerd.services.")
	if i := strings.Index(svc, "."); i > 0 {
		svc = svc[:i]
	}
	return svc + "." + name
}

// NotRespondingError says containerd accepted a call but did not answer it
// in time: it is overloaded, frozen or stuck.
type NotRespondingError struct {
	Address string
	Err     error
}

func (e *NotRespondingError) Error() string {
	msg := strings.TrimSuffix(e.Err.Error(), ": unavailable")
	if i := strings.Index(msg, notRespondingText); i >= 0 {
		msg = msg[i+len(notRespondingText):]
	}
	return fmt.Sprintf("%s%s at %s; it may be overloaded or stopped: check it (for example `systemctl status containerd`), then retry", notRespondingText, msg, e.Address)
}

func (e *NotRespondingError) Unwrap() []error { return []error{e.Err, errdefs.ErrUnavailable} }

// isNotResponding and isConnFailed recognise the interceptors' errors
// after the containerd client has flattened them.
func isNotResponding(err error) bool {
	return err != nil && strings.Contains(err.Error(), notRespondingText)
}

func isConnFailed(err error) bool {
	return err != nil && strings.Contains(err.Error(), connFailedText)
}
