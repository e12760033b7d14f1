package mcpproxy

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// deadStdio is a process that has exited, but whose exit berth has not read
// yet: a write fails with a broken pipe (the agent closed the connection),
// and stdout ends and the exit becomes known only after that failure, the
// order that made a crash read "writev: broken pipe" on a busy machine.
type deadStdio struct {
	writeFailed chan struct{}
	done        chan struct{}
}

func newDeadStdio() *deadStdio {
	return &deadStdio{writeFailed: make(chan struct{}), done: make(chan struct{})}
}

func (d *deadStdio) Read([]byte) (int, error) {
	<-d.writeFailed
	return 0, io.EOF
}

func (d *deadStdio) Write([]byte) (int, error) {
	select {
	case <-d.writeFailed:
	default:
		close(d.writeFailed)
		// The reader may now see the end; done follows in read.
		go func() { close(d.done) }()
	}
	return 0, &netOpError{syscall.EPIPE}
}

func (d *deadStdio) Done() <-chan struct{} { return d.done }
func (d *deadStdio) Exit() (wire.StdioExit, error) {
	return wire.StdioExit{ExitCode: 4}, nil
}
func (d *deadStdio) Close() error { return nil }
func (d *deadStdio) PID() int     { return 42 }

// netOpError reads as the agent client's write error does.
type netOpError struct{ err error }

func (e *netOpError) Error() string { return "writev: " + e.err.Error() }
func (e *netOpError) Unwrap() error { return e.err }

// TestSendPrefersExit writes to a process that died first: the error the
// caller gets is the exit and its stderr, not the broken pipe.
func TestSendPrefersExit(t *testing.T) {
	stderr := newStderrTail()
	_, _ = stderr.Write([]byte("missing dependency\n"))
	p := &proc{label: "bot/bad", log: slog.New(slog.DiscardHandler), sp: newDeadStdio(), stderr: stderr, done: make(chan struct{})}
	p.serve(func(*message, []byte) {})

	err := p.send([]byte("{}\n"))
	if err == nil || !strings.Contains(err.Error(), "exited with code 4") || !strings.Contains(err.Error(), "missing dependency") ||
		strings.Contains(err.Error(), "broken pipe") {
		t.Fatalf("write to a dead process: %v; want its exit and stderr", err)
	}
}

// stuckStdio fails writes while the process has not ended (its stdin was
// closed, say): the write's own error is all there is to report.
type stuckStdio struct{ done chan struct{} }

func (s *stuckStdio) Read([]byte) (int, error) { <-s.done; return 0, io.EOF }
func (s *stuckStdio) Write([]byte) (int, error) {
	return 0, errors.New("stdin is closed")
}
func (s *stuckStdio) Done() <-chan struct{}         { return s.done }
func (s *stuckStdio) Exit() (wire.StdioExit, error) { return wire.StdioExit{}, nil }
func (s *stuckStdio) Close() error                  { return nil }
func (s *stuckStdio) PID() int                      { return 43 }

// TestSendWriteErrorWithoutExit: with no exit to prefer, the write's error
// comes back once the grace is over.
func TestSendWriteErrorWithoutExit(t *testing.T) {
	saved := exitGrace
	exitGrace = time.Millisecond
	t.Cleanup(func() { exitGrace = saved })
	sp := &stuckStdio{done: make(chan struct{})}
	p := &proc{label: "bot/stuck", log: slog.New(slog.DiscardHandler), sp: sp, stderr: newStderrTail(), done: make(chan struct{})}
	p.serve(func(*message, []byte) {})
	t.Cleanup(func() { close(sp.done); <-p.done })

	if err := p.send([]byte("{}\n")); err == nil || !strings.Contains(err.Error(), "stdin is closed") {
		t.Fatalf("write error: %v", err)
	}
}
