package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	cdi "tags.cncf.io/container-device-interface/pkg/cdi"
)

// Options configure the containerd runtime.
type Options struct {
	Address           string   // containerd socket
	Namespace         string   // containerd namespace that holds everything berth makes
	RegistryConfigDir string   // hosts.toml directory, as containerd's certs.d
	CDISpecDirs       []string // where CDI specs live
	// CallTimeout bounds each containerd call that is not long by nature
	// (see longMethods); 0 means DefaultCallTimeout.
	CallTimeout time.Duration
}

// Containerd implements Runtime with a containerd daemon.
type Containerd struct {
	opts Options

	mu     sync.Mutex
	client *containerd.Client
}

var _ Runtime = (*Containerd)(nil)

// NewContainerd returns a runtime that connects to containerd on first use,
// so berth can start (and explain the problem) while containerd is down.
func NewContainerd(opts Options) (*Containerd, error) {
	if len(opts.CDISpecDirs) > 0 {
		if err := cdi.Configure(cdi.WithSpecDirs(opts.CDISpecDirs...)); err != nil {
			return nil, fmt.Errorf("configure CDI spec dirs %v: %w", opts.CDISpecDirs, err)
		}
	}
	return &Containerd{opts: opts}, nil
}

// Close releases the connection to containerd.
func (r *Containerd) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil {
		return nil
	}
	err := r.client.Close()
	r.client = nil
	return err
}

// connect returns the shared client and ctx in berth's namespace. gRPC
// reconnects by itself once connected, so a containerd restart heals.
func (r *Containerd) connect(ctx context.Context) (*containerd.Client, context.Context, error) {
	ctx = namespaces.WithNamespace(ctx, r.opts.Namespace)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil {
		return r.client, ctx, nil
	}
	if _, err := os.Stat(r.opts.Address); err != nil {
		return nil, ctx, r.unavailable(err)
	}
	timeout := r.opts.CallTimeout
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	d := callDeadline{timeout: timeout}
	c, err := containerd.New(r.opts.Address, containerd.WithTimeout(5*time.Second),
		containerd.WithExtraDialOpts([]grpc.DialOption{
			grpc.WithChainUnaryInterceptor(d.unary),
			grpc.WithChainStreamInterceptor(d.stream),
		}))
	if err != nil {
		return nil, ctx, r.unavailable(err)
	}
	r.client = c
	return c, ctx, nil
}

// load connects and loads container id.
func (r *Containerd) load(ctx context.Context, id string) (*containerd.Client, containerd.Container, context.Context, error) {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return nil, nil, ctx, err
	}
	ctr, err := c.LoadContainer(ctx, id)
	if err != nil {
		return nil, nil, ctx, r.wrap(err)
	}
	return c, ctr, ctx, nil
}

// Ping checks that containerd answers.
func (r *Containerd) Ping(ctx context.Context) error {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Version(ctx); err != nil {
		return r.wrap(err)
	}
	return nil
}

// UnavailableError says containerd cannot be used, and how to fix it.
type UnavailableError struct {
	Address string
	Err     error
}

func (e *UnavailableError) Error() string {
	hint := "start containerd (for example `systemctl start containerd`, or `make run` for a private one) or point berth at it with --containerd / BERTH_CONTAINERD"
	if errors.Is(e.Err, os.ErrPermission) || errors.Is(e.Err, syscall.EACCES) || status.Code(e.Err) == codes.PermissionDenied || strings.Contains(e.Err.Error(), "permission denied") {
		hint = "berth needs root (or write access to the socket) to use containerd"
	}
	return fmt.Sprintf("containerd is not reachable at %s (%v): %s", e.Address, e.Err, hint)
}

func (e *UnavailableError) Unwrap() []error { return []error{e.Err, errdefs.ErrUnavailable} }

func (r *Containerd) unavailable(err error) error {
	return &UnavailableError{Address: r.opts.Address, Err: err}
}

// wrap turns failures of the containerd connection into UnavailableError
// or NotRespondingError and keeps the errdefs class of everything else.
// Only errors that came over the containerd connection (marked by the
// interceptors in deadline.go) count: a registry that refuses a pull made
// by this client fails with the same syscall errors but is not containerd.
func (r *Containerd) wrap(err error) error {
	if err == nil {
		return nil
	}
	var ue *UnavailableError
	var nr *NotRespondingError
	if errors.As(err, &ue) || errors.As(err, &nr) {
		return err
	}
	switch {
	case isNotResponding(err):
		return &NotRespondingError{Address: r.opts.Address, Err: err}
	case isConnFailed(err):
		return r.unavailable(err)
	}
	return err
}

// Version is the containerd daemon's version.
func (r *Containerd) Version(ctx context.Context) (string, error) {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return "", err
	}
	v, err := c.Version(ctx)
	if err != nil {
		return "", r.wrap(err)
	}
	return v.Version, nil
}

// CheckSnapshotter says whether containerd has the snapshotter and it loaded.
func (r *Containerd) CheckSnapshotter(ctx context.Context, name string) error {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return err
	}
	resp, err := c.IntrospectionService().Plugins(ctx, "type==io.containerd.snapshotter.v1")
	if err != nil {
		return r.wrap(err)
	}
	var have []string
	for _, p := range resp.Plugins {
		if p.ID != name {
			if p.InitErr == nil {
				have = append(have, p.ID)
			}
			continue
		}
		if p.InitErr != nil {
			return fmt.Errorf("snapshotter %s failed to load in containerd: %s", name, p.InitErr.Message)
		}
		return nil
	}
	return fmt.Errorf("containerd has no snapshotter %s (available: %v)", name, have)
}
