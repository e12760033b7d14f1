package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// StdioProcess is a process started with StartStdio: its stdout is read
// with Read, its stdin written with Write. The process lives as long as the
// connection: Close ends both.
//
// One goroutine may Read while others Write, CloseStdin or Close; frames
// of concurrent writes do not interleave within one Write, but their order
// between Writes is whatever the callers make it.
//
// Stdout, stderr and the exit arrive in order on one connection, so the
// exit (and Done) only comes once stdout has been read to its end: read
// until Read fails, or Close.
type StdioProcess struct {
	conn   *upgradedConn
	pid    int
	stderr io.Writer

	stdoutR *io.PipeReader
	stdoutW *io.PipeWriter

	wmu         sync.Mutex
	stdinClosed bool

	closeOnce sync.Once
	closed    chan struct{}

	done chan struct{}
	// Set before done is closed.
	exit    wire.StdioExit
	gotExit bool
	err     error
}

// errStdioClosedByHost is how Read and Exit describe a Close.
var errStdioClosedByHost = errors.New("stdio process closed")

// StartStdio starts req.Argv in the workspace with its stdin and stdout
// connected to the returned process. stderr receives what the process
// writes to stderr, from the goroutine that reads the connection: it must
// not block long (nil discards it). ctx bounds only the start (by default
// as long as an ordinary call); the process then runs until it exits or
// Close. Errors of the request (program not found, too many processes)
// are *RemoteError.
func (c *Client) StartStdio(ctx context.Context, req wire.StdioRequest, stderr io.Writer) (*StdioProcess, error) {
	if len(req.Argv) == 0 {
		return nil, errors.New("berth agent: stdio process without argv")
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	p := &StdioProcess{stderr: stderr, closed: make(chan struct{}), done: make(chan struct{})}
	buf := make([]byte, wire.StdioMaxFrame)
	conn, err := c.upgrade(ctx, upgradeRequest{
		method:   http.MethodPost,
		path:     wire.PathStdio,
		body:     body,
		protocol: wire.StdioUpgrade,
		what:     "starting stdio process " + wire.TruncateInfo(req.Argv[0], 64),
	}, func(conn *upgradedConn) error {
		typ, payload, err := wire.ReadStdioFrame(conn, buf)
		if err != nil {
			return fmt.Errorf("reading the started frame: %w", stdioReadErr(err))
		}
		if typ != wire.StdioFrameStarted {
			return badResponse("stdio: first frame is %q, not %q", typ, wire.StdioFrameStarted)
		}
		var st wire.StdioStarted
		if err := decodeStdioControl(payload, &st); err != nil {
			return err
		}
		if st.PID < 1 {
			return badResponse("stdio: started with pid %d", st.PID)
		}
		p.pid = st.PID
		return nil
	})
	if err != nil {
		return nil, err
	}
	p.conn = conn
	p.stdoutR, p.stdoutW = io.Pipe()
	go p.readLoop(buf)
	return p, nil
}

// stdioReadErr marks a broken frame from the agent as a bad response.
func stdioReadErr(err error) error {
	if errors.Is(err, wire.ErrStdioProtocol) {
		return fmt.Errorf("%w: %v", ErrBadResponse, err)
	}
	return err
}

// decodeStdioControl decodes the JSON of a started or exit frame.
func decodeStdioControl(payload []byte, v any) error {
	if len(payload) > wire.MaxStdioControl {
		return badResponse("stdio: control frame of %d bytes", len(payload))
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return badResponse("stdio: control frame: %v", err)
	}
	return nil
}

// readLoop takes the agent's frames apart until the exit frame or the end
// of the connection.
func (p *StdioProcess) readLoop(buf []byte) {
	err := p.readFrames(buf)
	select {
	case <-p.closed:
		if !p.gotExit {
			err = errStdioClosedByHost
		}
	default:
	}
	if p.gotExit {
		_ = p.stdoutW.Close()
	} else {
		if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = errors.New("connection to the agent closed")
		}
		p.err = err
		_ = p.stdoutW.CloseWithError(fmt.Errorf("berth agent: stdio process %d: %w", p.pid, err))
	}
	// Nothing comes after the exit, and Write should fail at once rather
	// than into a connection the agent no longer reads.
	_ = p.conn.Close()
	close(p.done)
}

func (p *StdioProcess) readFrames(buf []byte) error {
	for {
		typ, payload, err := wire.ReadStdioFrame(p.conn, buf)
		if err != nil {
			return stdioReadErr(err)
		}
		switch typ {
		case wire.StdioFrameStdout:
			// Blocks until Read took it all: the backpressure.
			if _, err := p.stdoutW.Write(payload); err != nil {
				return err
			}
		case wire.StdioFrameStderr:
			if p.stderr != nil {
				_, _ = p.stderr.Write(payload)
			}
		case wire.StdioFrameExit:
			var ex wire.StdioExit
			if err := decodeStdioControl(payload, &ex); err != nil {
				return err
			}
			if ex.ExitCode < 0 || ex.ExitCode > 255 {
				return badResponse("stdio: exit_code %d", ex.ExitCode)
			}
			if err := checkText(ex.Signal, 32); err != nil {
				return badResponse("stdio: signal: %v", err)
			}
			p.exit, p.gotExit = ex, true
			return nil
		default:
			return badResponse("stdio: unexpected frame type %q", typ)
		}
	}
}

// PID is the process id in the workspace.
func (p *StdioProcess) PID() int { return p.pid }

// Read reads the process's stdout. It returns io.EOF once stdout ended and
// the process exited, and an error if the connection broke first or after
// Close.
func (p *StdioProcess) Read(b []byte) (int, error) { return p.stdoutR.Read(b) }

// Write sends b to the process's stdin. It blocks while the process does
// not read its stdin (and the pipe and connection buffers are full).
func (p *StdioProcess) Write(b []byte) (int, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.writable(); err != nil {
		return 0, err
	}
	written := 0
	for written < len(b) {
		n := min(len(b)-written, wire.StdioMaxFrame)
		if err := p.sendLocked(wire.StdioFrameStdin, b[written:written+n]); err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

// CloseStdin closes the process's stdin: it reads end of file. Calling it
// again does nothing.
func (p *StdioProcess) CloseStdin() error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.stdinClosed {
		return nil
	}
	if err := p.writable(); err != nil {
		return err
	}
	p.stdinClosed = true
	return p.sendLocked(wire.StdioFrameCloseStdin, nil)
}

// writable says why stdin cannot be written, if it cannot; p.wmu is held.
func (p *StdioProcess) writable() error {
	switch {
	case p.stdinClosed:
		return fmt.Errorf("berth agent: stdio process %d: stdin is closed", p.pid)
	case p.isClosed():
		return fmt.Errorf("berth agent: stdio process %d: %w", p.pid, errStdioClosedByHost)
	case p.isDone():
		return fmt.Errorf("berth agent: stdio process %d has ended", p.pid)
	}
	return nil
}

func (p *StdioProcess) sendLocked(typ byte, payload []byte) error {
	// One write (writev) for header and payload.
	bufs := net.Buffers{wire.StdioHeader(typ, len(payload)), payload}
	if _, err := bufs.WriteTo(p.conn.Conn); err != nil {
		if p.isDone() {
			return fmt.Errorf("berth agent: stdio process %d has ended", p.pid)
		}
		return fmt.Errorf("berth agent: stdio process %d: writing stdin: %w", p.pid, err)
	}
	return nil
}

func (p *StdioProcess) isDone() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *StdioProcess) isClosed() bool {
	select {
	case <-p.closed:
		return true
	default:
		return false
	}
}

// Done is closed once the exit arrived (after the end of stdout) or the
// connection ended without it.
func (p *StdioProcess) Done() <-chan struct{} { return p.done }

// Exit tells how the process ended, once Done is closed. The error says why
// that is unknown: the connection broke (the agent stopped, the workspace
// went away), the agent sent something invalid, or Close came first.
func (p *StdioProcess) Exit() (wire.StdioExit, error) {
	if !p.isDone() {
		return wire.StdioExit{}, fmt.Errorf("berth agent: stdio process %d is still running; wait for Done", p.pid)
	}
	if !p.gotExit {
		return wire.StdioExit{}, fmt.Errorf("berth agent: stdio process %d: no exit status: %w", p.pid, p.err)
	}
	return p.exit, nil
}

// Close closes the connection, upon which the agent kills the process
// group (SIGTERM, then SIGKILL after StdioKillGrace) unless it has exited
// already. It returns once the connection is done; the process may still
// be dying in the workspace.
func (p *StdioProcess) Close() error {
	p.closeOnce.Do(func() {
		close(p.closed)
		_ = p.conn.Close()
		_ = p.stdoutR.CloseWithError(errStdioClosedByHost)
	})
	<-p.done
	return nil
}
