package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// Limits of stdio processes.
const (
	// MaxStdioProcesses is how many stdio processes may run at once.
	MaxStdioProcesses = 64
	// StdioKillGrace is how long a stdio process group gets between SIGTERM
	// and SIGKILL once its connection is gone: longer than a command's,
	// because servers flush and clean up on SIGTERM.
	StdioKillGrace = 2 * time.Second
)

const (
	// stdinHangupCheck is how often a write to a process that does not
	// read its stdin stops to check whether the host is still there: while
	// the input goroutine is stuck in such a write it does not read the
	// connection, so it would not notice its end otherwise.
	stdinHangupCheck = 500 * time.Millisecond
)

// stdioTable counts the running stdio processes; they belong to their
// connections, so nothing else needs to know them.
type stdioTable struct {
	rn     *runner
	mu     sync.Mutex
	active int
}

func newStdioTable(rn *runner) *stdioTable { return &stdioTable{rn: rn} }

func (st *stdioTable) route(mux *http.ServeMux) {
	route(mux, wire.PathStdio, map[string]http.HandlerFunc{http.MethodPost: st.handleStdio})
}

func (st *stdioTable) acquire() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.active >= MaxStdioProcesses {
		return false
	}
	st.active++
	return true
}

func (st *stdioTable) release() {
	st.mu.Lock()
	st.active--
	st.mu.Unlock()
}

// stdioSession is the agent's side of one stdio connection.
type stdioSession struct {
	conn net.Conn
	// wmu keeps frames whole. It is held from before the process starts
	// until the 101 answer and the started frame are out, so output
	// cannot overtake them.
	wmu sync.Mutex
	// werr is the first write error; after it, output is discarded so
	// that the pumps go on draining the pipes.
	werr error
	// writing counts output writes in progress and lastOut is when one
	// last finished (unix nanoseconds): a stream is not idle while its
	// frames are on their way to a host that reads slowly.
	writing atomic.Int32
	lastOut atomic.Int64
}

// writeFrameLocked sends one frame; the caller holds wmu.
//
// Writes have no deadline. Blocking here is the backpressure the protocol
// promises: a host that reads slowly slows the process down instead of
// losing its output or having it killed, and a host that paused reading
// for minutes (a model thinking) must find its server still there. The
// host owns the process and can always end it by closing the connection;
// if the host dies, the kernel closes the connection, which fails the
// write at once; and when the agent stops, the connection is closed.
func (ss *stdioSession) writeFrameLocked(typ byte, payload []byte) error {
	if ss.werr != nil {
		return ss.werr
	}
	bufs := net.Buffers{wire.StdioHeader(typ, len(payload)), payload}
	_, ss.werr = bufs.WriteTo(ss.conn)
	return ss.werr
}

func (ss *stdioSession) writeFrame(typ byte, payload []byte) error {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	return ss.writeFrameLocked(typ, payload)
}

// stdioStream turns a process's output pipe into frames of one type.
type stdioStream struct {
	ss  *stdioSession
	typ byte
}

func (w stdioStream) Write(p []byte) (int, error) {
	w.ss.writing.Add(1)
	defer func() {
		w.ss.lastOut.Store(time.Now().UnixNano())
		w.ss.writing.Add(-1)
	}()
	for rest := p; len(rest) > 0; {
		n := min(len(rest), wire.StdioMaxFrame)
		if err := w.ss.writeFrame(w.typ, rest[:n]); err != nil {
			return len(p) - len(rest), err
		}
		rest = rest[n:]
	}
	return len(p), nil
}

func (st *stdioTable) handleStdio(w http.ResponseWriter, r *http.Request) {
	rn := st.rn
	if !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), wire.StdioUpgrade) {
		w.Header().Set("Upgrade", wire.StdioUpgrade)
		writeError(w, http.StatusUpgradeRequired, wire.CodeBadRequest,
			"stdio needs Connection: Upgrade and Upgrade: "+wire.StdioUpgrade)
		return
	}
	var req wire.StdioRequest
	if err := readJSON(w, r, maxJSONRequest, &req, false); err != nil {
		writeAPIError(w, err)
		return
	}
	if len(req.Argv) == 0 {
		writeAPIError(w, badRequest("argv is empty; give the program and its arguments"))
		return
	}
	spec, err := rn.prepare(req.Argv, req.Cwd, req.Env, nil)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if spec.notFound != "" {
		writeAPIError(w, badRequest("program %s not found in PATH", spec.notFound))
		return
	}
	if !st.acquire() {
		writeAPIError(w, &apiError{http.StatusTooManyRequests, wire.CodeLimit,
			"too many stdio processes running (" + strconv.Itoa(MaxStdioProcesses) + "); close some first"})
		return
	}
	defer st.release()

	ss := &stdioSession{}
	ss.wmu.Lock()
	p, err := rn.startPipes(spec, true, stdioStream{ss, wire.StdioFrameStdout}, stdioStream{ss, wire.StdioFrameStderr})
	if err != nil {
		ss.werr = errors.New("not started")
		ss.wmu.Unlock()
		if _, msg, ok := startFailure(spec.argv[0], err); ok {
			writeAPIError(w, badRequest("cannot start program %s", strings.TrimSpace(strings.TrimPrefix(msg, "berth: "))))
			return
		}
		writeAPIError(w, internalError("starting %s: %v", spec.argv[0], err))
		return
	}
	pid := p.child.Pid()
	stop := rn.s.reaper.stopCh
	// Whatever happens below, the process must not outlive the handler
	// unless it is being killed already.
	abort := func() {
		p.closeStdin()
		killGroupAfter(p.child, StdioKillGrace)
		rn.awaitExit(p.child)
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		ss.werr = err
		ss.wmu.Unlock()
		abort()
		writeAPIError(w, internalError("cannot take over the connection: %v", err))
		return
	}
	ss.conn = conn
	defer conn.Close()
	// The server's timeouts no longer apply to a taken-over connection.
	_ = conn.SetDeadline(time.Time{})
	started, _ := json.Marshal(wire.StdioStarted{PID: pid})
	_, ss.werr = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\n"+
		"Connection: Upgrade\r\nUpgrade: "+wire.StdioUpgrade+"\r\n"+
		wire.ProtocolHeader+": "+strconv.Itoa(wire.ProtocolVersion)+"\r\n\r\n")
	werr := ss.writeFrameLocked(wire.StdioFrameStarted, started)
	ss.wmu.Unlock()
	if werr != nil {
		abort()
		return
	}
	rn.log.Info("stdio process started", "pid", pid, "program", spec.path)

	handlerDone := make(chan struct{})
	defer close(handlerDone)
	go func() {
		// A write to a host that does not read blocks without a deadline;
		// the agent's end must not wait on it.
		select {
		case <-stop:
			_ = conn.Close()
		case <-handlerDone:
		}
	}()
	inputErr := make(chan error, 1)
	inputDone := make(chan struct{})
	go func() {
		defer close(inputDone)
		inputErr <- ss.copyInput(brw.Reader, p)
	}()
	defer func() {
		// Unblocks a write of input that the process will never read.
		p.closeStdin()
		_ = conn.Close()
		<-inputDone
	}()

	select {
	case <-p.child.Done():
	case err := <-inputErr:
		if errors.Is(err, wire.ErrStdioProtocol) {
			rn.log.Warn("stdio process: bad frame from the host; killing it", "pid", pid, "err", err)
		} else {
			rn.log.Info("stdio connection closed; killing the process", "pid", pid)
		}
		abort()
		return
	case <-stop:
		p.closeStdin()
		killGroup(p.child)
		return
	}
	// The process exited on its own: send the rest of its output, then
	// how it ended.
	if !ss.finishOutput(p, inputDone, stop) {
		return
	}
	code, sig := exitStatus(p.child.status)
	exit, _ := json.Marshal(wire.StdioExit{ExitCode: code, Signal: sig})
	_ = ss.writeFrame(wire.StdioFrameExit, exit)
	rn.log.Info("stdio process exited", "pid", pid, "exit_code", code, "signal", sig)
}

// finishOutput waits, after the process exited, until its stdout and stderr
// are at end of file. Something it left running may hold them much longer,
// so the wait ends once output has been quiet for ioGrace; output still on
// its way to a slow host does not count as quiet. It reports false when the
// host or the agent went away meanwhile.
func (ss *stdioSession) finishOutput(p *piped, hostGone, stop <-chan struct{}) bool {
	exited := time.Now().UnixNano()
	for _, done := range []<-chan struct{}{p.outDone, p.errDone} {
		for waiting := true; waiting; {
			last := max(exited, ss.lastOut.Load())
			wait := ioGrace - time.Since(time.Unix(0, last))
			if ss.writing.Load() > 0 {
				wait = ioGrace
			}
			if wait <= 0 {
				return true
			}
			t := time.NewTimer(wait)
			select {
			case <-done:
				waiting = false
			case <-t.C:
			case <-hostGone:
				t.Stop()
				return false
			case <-stop:
				t.Stop()
				return false
			}
			t.Stop()
		}
	}
	return true
}

// copyInput carries the host's frames to the process until the connection
// ends or a frame is malformed; it always returns an error saying which.
func (ss *stdioSession) copyInput(br *bufio.Reader, p *piped) error {
	buf := make([]byte, wire.StdioMaxFrame)
	open := true
	for {
		typ, payload, err := wire.ReadStdioFrame(br, buf)
		if err != nil {
			return err
		}
		switch typ {
		case wire.StdioFrameStdin:
			if !open || len(payload) == 0 {
				continue
			}
			if err := ss.writeStdin(p.stdin, payload); err != nil {
				if errors.Is(err, errHostGone) {
					return err
				}
				// The process closed its stdin or exited: what the host
				// sends from now on has no reader.
				open = false
			}
		case wire.StdioFrameCloseStdin:
			if len(payload) != 0 {
				return fmt.Errorf("%w: close-stdin frame with %d bytes of payload", wire.ErrStdioProtocol, len(payload))
			}
			p.closeStdin()
			open = false
		default:
			return fmt.Errorf("%w: unknown frame type %q", wire.ErrStdioProtocol, typ)
		}
	}
}

// errHostGone says the host closed the connection while input was waiting
// for a process that does not read it.
var errHostGone = errors.New("host closed the stdio connection")

// writeStdin writes b to the process's stdin, waiting as long as the
// process takes to read it, but no longer than the host stays connected.
func (ss *stdioSession) writeStdin(f *os.File, b []byte) error {
	defer func() { _ = f.SetWriteDeadline(time.Time{}) }()
	for {
		_ = f.SetWriteDeadline(time.Now().Add(stdinHangupCheck))
		n, err := f.Write(b)
		if err == nil {
			return nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		b = b[n:]
		if peerHungUp(ss.conn) {
			return errHostGone
		}
	}
}

// peerHungUp reports whether the other end of conn has closed it or shut
// down its writing side, without reading from it: the kernel flags that
// (POLLRDHUP) even while unread data is queued.
func peerHungUp(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	hung := false
	err = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, err := unix.Poll(fds, 0)
		hung = err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	})
	return hung || err != nil
}
