package client

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// listenAt listens on a unix socket at path for the test's lifetime.
func listenAt(t *testing.T, path string) *net.UnixListener {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// nothingPending fails the test if a connection reached ln. A unix connect
// is queued on the listener before connect(2) returns, so this needs no wait.
func nothingPending(t *testing.T, ln *net.UnixListener) {
	t.Helper()
	_ = ln.SetDeadline(time.Now())
	if c, err := ln.Accept(); err == nil {
		_ = c.Close()
		t.Fatal("a connection reached the other socket")
	}
}

func TestDialAgentRefusesWhatIsNotTheAgent(t *testing.T) {
	base := t.TempDir()
	alpha := filepath.Join(base, "alpha")
	bravo := filepath.Join(base, "bravo")
	for _, d := range []string{alpha, bravo} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	bravoSock := filepath.Join(bravo, wire.SocketName)
	bravoLn := listenAt(t, bravoSock)
	alphaSock := filepath.Join(alpha, wire.SocketName)
	me := uint32(os.Getpid())
	ctx := context.Background()

	t.Run("symlink to another workspace's socket", func(t *testing.T) {
		if err := os.Symlink(bravoSock, alphaSock); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(alphaSock)
		// Even with bravo's own pid expected, a symlink is never followed.
		_, err := dialAgent(ctx, alphaSock, me)
		if !errors.Is(err, ErrNotAgent) {
			t.Fatalf("dial through a symlink: %v, want ErrNotAgent", err)
		}
		nothingPending(t, bravoLn)
	})

	t.Run("regular file", func(t *testing.T) {
		if err := os.WriteFile(alphaSock, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(alphaSock)
		if _, err := dialAgent(ctx, alphaSock, me); !errors.Is(err, ErrNotAgent) {
			t.Fatalf("dial a regular file: %v, want ErrNotAgent", err)
		}
	})

	t.Run("socket served by another process", func(t *testing.T) {
		ln := listenAt(t, alphaSock)
		defer os.Remove(alphaSock)
		// The listener is this process; the workspace's init would be
		// another pid.
		_, err := dialAgent(ctx, alphaSock, me+1)
		if !errors.Is(err, ErrNotAgent) {
			t.Fatalf("dial an impostor: %v, want ErrNotAgent", err)
		}
		// The impostor got a connection but not one byte of a request.
		_ = ln.SetDeadline(time.Now().Add(time.Minute))
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("impostor read %d bytes, err %v; want nothing and EOF", n, err)
		}
	})

	t.Run("the agent itself", func(t *testing.T) {
		ln := listenAt(t, alphaSock)
		defer os.Remove(alphaSock)
		c, err := dialAgent(ctx, alphaSock, me)
		if err != nil {
			t.Fatalf("dial the real listener: %v", err)
		}
		_ = c.Close()
		_ = ln.SetDeadline(time.Now().Add(time.Minute))
		if s, err := ln.Accept(); err != nil {
			t.Fatal(err)
		} else {
			_ = s.Close()
		}
	})

	t.Run("missing socket reads as not existing", func(t *testing.T) {
		_, err := dialAgent(ctx, alphaSock, me)
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("dial a missing socket: %v, want ErrNotExist", err)
		}
	})
}

// TestSilentAgentTimesOut: an agent that accepts connections and never
// answers must not hang the host's streaming calls.
func TestSilentAgentTimesOut(t *testing.T) {
	sock := filepath.Join(t.TempDir(), wire.SocketName)
	ln := listenAt(t, sock)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Read the request and keep the connection open, silently.
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	c := New(sock, WithInitPID(uint32(os.Getpid())))
	defer c.Close()
	c.answerTimeout = 50 * time.Millisecond
	ctx := context.Background()

	if _, err := c.Exec(ctx, wire.ExecRequest{Argv: []string{"true"}}, nil); !errors.Is(err, errAgentSilent) {
		t.Fatalf("exec on a silent agent: %v, want errAgentSilent", err)
	}
	if _, _, err := c.ReadRange(ctx, "/etc/hostname", 0, 0); !errors.Is(err, errAgentSilent) {
		t.Fatalf("read on a silent agent: %v, want errAgentSilent", err)
	}
	if _, err := c.Export(ctx, "/data"); !errors.Is(err, errAgentSilent) {
		t.Fatalf("export on a silent agent: %v, want errAgentSilent", err)
	}
	// JSON calls have their own default deadline.
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.Stat(sctx, "/etc"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stat on a silent agent: %v, want a deadline error", err)
	}
}
