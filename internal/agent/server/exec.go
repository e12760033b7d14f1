package server

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// Limits and defaults of exec and background processes.
const (
	// MaxExecStdin caps ExecRequest.Stdin.
	MaxExecStdin = 10 << 20
	// MaxExecRequestBytes caps the JSON body of exec and process requests;
	// it leaves room for MaxExecStdin in base64.
	MaxExecRequestBytes = 20 << 20
	// ExecEventInterval is the shortest time between two output events of
	// the same stream: output is coalesced so that a chatty command costs a
	// bounded number of events (about ten a second per stream).
	ExecEventInterval = 100 * time.Millisecond
)

func (rn *runner) routeExec(mux *http.ServeMux) {
	route(mux, wire.PathExec, map[string]http.HandlerFunc{http.MethodPost: rn.handleExec})
}

// execSpec validates what foreground and background commands share.
func (rn *runner) execSpec(req wire.ExecRequest) (*procSpec, time.Duration, error) {
	switch {
	case len(req.Argv) > 0 && req.Command != "":
		return nil, 0, badRequest("give argv or command, not both")
	case len(req.Argv) == 0 && req.Command == "":
		return nil, 0, badRequest("give argv (a program and its arguments) or command (a shell command line)")
	}
	argv := req.Argv
	if req.Command != "" {
		if err := checkString("command", req.Command); err != nil {
			return nil, 0, err
		}
		argv = []string{"/bin/sh", "-c", req.Command}
	}
	if len(req.Stdin) > MaxExecStdin {
		return nil, 0, &apiError{http.StatusRequestEntityTooLarge, wire.CodeTooLarge,
			"stdin is larger than the limit; write it to a file and redirect instead"}
	}
	if req.MaxOutput < 0 {
		return nil, 0, badRequest("max_output must not be negative")
	}
	timeout, err := millis("timeout_ms", req.TimeoutMillis)
	if err != nil {
		return nil, 0, err
	}
	spec, err := rn.prepare(argv, req.Cwd, req.Env, nil)
	if err != nil {
		return nil, 0, err
	}
	return spec, timeout, nil
}

// piped is a process whose stdout and stderr go through pipes into writers.
type piped struct {
	child   *child
	started time.Time
	// outDone and errDone are closed when each pipe reaches end of file:
	// when the command and everything it left running have closed it.
	outDone, errDone chan struct{}
	// stdin is the agent's end of the stdin pipe, if the request had input.
	stdin *os.File
}

// startPiped starts spec in its own process group with stdout and stderr
// copied into the writers, which must not block for long, and stdin fed
// from the bytes given (or /dev/null without any).
func (rn *runner) startPiped(spec *procSpec, stdin []byte, stdout, stderr io.Writer) (*piped, error) {
	p, err := rn.startPipes(spec, len(stdin) > 0, stdout, stderr)
	if err != nil {
		return nil, err
	}
	if inW := p.stdin; inW != nil {
		go func() {
			// Fails with EPIPE if the command exits without reading it
			// all, and is cut short by finishIO's Close.
			_, _ = inW.Write(stdin)
			_ = inW.Close()
		}()
	}
	return p, nil
}

// startPipes starts spec in its own process group with stdout and stderr
// copied into the writers. A write that blocks holds up that stream's pump,
// and so, once the pipe is full, the process. With withStdin the process
// reads a pipe whose write end is p.stdin, which the caller feeds and
// closes; without it, /dev/null.
func (rn *runner) startPipes(spec *procSpec, withStdin bool, stdout, stderr io.Writer) (*piped, error) {
	cmd := rn.command(spec)
	// Its own group, so that stopping it reaches what it started.
	cmd.SysProcAttr.Setpgid = true
	var toClose []*os.File
	closeAll := func() {
		for _, f := range toClose {
			_ = f.Close()
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	toClose = append(toClose, outR, outW)
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll()
		return nil, err
	}
	toClose = append(toClose, errR, errW)
	var inR, inW *os.File
	if withStdin {
		if inR, inW, err = os.Pipe(); err != nil {
			closeAll()
			return nil, err
		}
		toClose = append(toClose, inR, inW)
		cmd.Stdin = inR
	}
	// With Stdin nil, exec.Cmd opens /dev/null itself and closes it after
	// starting, which the reaper allows.
	cmd.Stdout, cmd.Stderr = outW, errW
	c, err := rn.s.reaper.startCmd(cmd)
	// The child has its copies; the agent's copies of the child's ends
	// would keep the pipes from ever reaching end of file.
	_ = outW.Close()
	_ = errW.Close()
	if inR != nil {
		_ = inR.Close()
	}
	if err != nil {
		_ = outR.Close()
		_ = errR.Close()
		if inW != nil {
			_ = inW.Close()
		}
		return nil, err
	}
	p := &piped{child: c, started: time.Now(), outDone: make(chan struct{}), errDone: make(chan struct{}), stdin: inW}
	go pump(outR, stdout, p.outDone)
	go pump(errR, stderr, p.errDone)
	return p, nil
}

// pump copies a pipe into w until end of file. The pipe's read end is the
// agent's own and non-blocking, so closing it elsewhere would also end this.
func pump(r *os.File, w io.Writer, done chan<- struct{}) {
	defer close(done)
	defer r.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			_, _ = w.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// finishIO waits, once the command has exited, until its output pipes are
// at end of file or ioGrace has passed. Something the command left running
// (cmd &) may hold the pipes for much longer; the pumps go on draining
// them, so such a process never dies of SIGPIPE, but the caller stops
// waiting. stop ends the wait early.
func (p *piped) finishIO(stop <-chan struct{}) {
	defer p.closeStdin()
	t := time.NewTimer(ioGrace)
	defer t.Stop()
	for _, done := range []<-chan struct{}{p.outDone, p.errDone} {
		select {
		case <-done:
		case <-t.C:
			return
		case <-stop:
			return
		}
	}
}

// closeStdin unblocks a write of stdin that nobody will read any more: the
// command has exited, and whatever it left behind gets end of file.
func (p *piped) closeStdin() {
	if p.stdin != nil {
		_ = p.stdin.Close()
	}
}

// execCapture collects one stream of a foreground command: the first max
// bytes for the result, and the bytes not yet streamed (at most
// ExecEventMaxData, the newest). After detach it only discards, so a
// process left running in the background can keep writing into a pipe the
// agent no longer reports.
type execCapture struct {
	mu       sync.Mutex
	max      int
	head     []byte
	total    int64
	pending  []byte
	detached bool
}

func newExecCapture(max int) *execCapture {
	return &execCapture{max: max, pending: make([]byte, 0, wire.ExecEventMaxData)}
}

func (c *execCapture) Write(p []byte) (int, error) {
	n := len(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.detached {
		return n, nil
	}
	c.total += int64(n)
	if room := c.max - len(c.head); room > 0 {
		c.head = append(c.head, p[:min(room, n)]...)
	}
	if n >= wire.ExecEventMaxData {
		c.pending = append(c.pending[:0], p[n-wire.ExecEventMaxData:]...)
		return n, nil
	}
	if over := len(c.pending) + n - wire.ExecEventMaxData; over > 0 {
		c.pending = c.pending[:copy(c.pending, c.pending[over:])]
	}
	c.pending = append(c.pending, p...)
	return n, nil
}

// takePending returns the bytes not yet streamed and where they start.
func (c *execCapture) takePending() ([]byte, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		return nil, 0
	}
	data := append([]byte(nil), c.pending...)
	c.pending = c.pending[:0]
	return data, c.total - int64(len(data))
}

// detach ends the capture and returns what the result reports.
func (c *execCapture) detach() (head []byte, total int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.detached = true
	return c.head, c.total
}

// eventWriter writes ExecEvent lines and flushes each, so the host sees
// output while the command runs. After the first failure (the host went
// away, or stopped reading for execWriteTimeout) it writes nothing more; the
// command then runs on until it ends or times out.
type eventWriter struct {
	enc *json.Encoder
	rc  *http.ResponseController
	err error
}

// execWriteTimeout bounds one event write to a host that does not read.
const execWriteTimeout = 30 * time.Second

func (ew *eventWriter) send(ev wire.ExecEvent) {
	if ew.err != nil {
		return
	}
	_ = ew.rc.SetWriteDeadline(time.Now().Add(execWriteTimeout))
	if ew.err = ew.enc.Encode(ev); ew.err == nil {
		ew.err = ew.rc.Flush()
	}
}

func (rn *runner) handleExec(w http.ResponseWriter, r *http.Request) {
	var req wire.ExecRequest
	if err := readJSON(w, r, MaxExecRequestBytes, &req, false); err != nil {
		writeAPIError(w, err)
		return
	}
	spec, timeout, err := rn.execSpec(req)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	maxOut := req.MaxOutput
	if maxOut == 0 {
		maxOut = wire.DefaultExecMaxOutput
	}
	maxOut = min(maxOut, wire.MaxExecOutput)

	ew := &eventWriter{enc: json.NewEncoder(w), rc: http.NewResponseController(w)}
	// The server sets no write deadlines of its own, so one left here
	// would break the next response on the same (kept-alive) connection.
	defer func() { _ = ew.rc.SetWriteDeadline(time.Time{}) }()
	startStream := func() {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		ew.err = ew.rc.Flush()
	}
	shellFailure := func(code int, msg string) {
		startStream()
		res := &wire.ExecResult{ExitCode: code, Stderr: []byte(msg), StderrTotal: int64(len(msg))}
		if len(res.Stderr) > maxOut {
			res.Stderr, res.StderrTruncated = res.Stderr[:maxOut], true
		}
		ew.send(wire.ExecEvent{Result: res})
	}
	if spec.notFound != "" {
		shellFailure(127, "berth: "+spec.notFound+": command not found\n")
		return
	}
	stdout, stderr := newExecCapture(maxOut), newExecCapture(maxOut)
	p, err := rn.startPiped(spec, req.Stdin, stdout, stderr)
	if err != nil {
		if code, msg, ok := startFailure(spec.argv[0], err); ok {
			shellFailure(code, msg)
			return
		}
		writeAPIError(w, internalError("starting %s: %v", spec.argv[0], err))
		return
	}
	rn.log.Debug("exec started", "pid", p.child.Pid(), "program", spec.path)
	startStream()

	streams := []struct {
		name string
		c    *execCapture
	}{{wire.StreamStdout, stdout}, {wire.StreamStderr, stderr}}
	flush := func() {
		for _, st := range streams {
			if data, off := st.c.takePending(); len(data) > 0 {
				ew.send(wire.ExecEvent{Stream: st.name, Offset: off, Data: data})
			}
		}
	}
	detach := func() {
		for _, st := range streams {
			st.c.detach()
		}
	}

	var killOnce sync.Once
	kill := func() { killOnce.Do(func() { go killGroup(p.child) }) }
	// The timeout is a timer of its own rather than a case of the loop
	// below, which can be held up writing to a host that reads slowly.
	var timedOut atomic.Bool
	if timeout > 0 {
		t := time.AfterFunc(timeout, func() {
			select {
			case <-p.child.Done():
			default:
				timedOut.Store(true)
				kill()
			}
		})
		defer t.Stop()
	}
	tick := time.NewTicker(ExecEventInterval)
	defer tick.Stop()
	ctx := r.Context()
wait:
	for {
		select {
		case <-p.child.Done():
			break wait
		case <-tick.C:
			flush()
		case <-ctx.Done():
			// The host closed the connection: it cancelled the call.
			kill()
			rn.awaitExit(p.child)
			p.closeStdin()
			detach()
			rn.log.Debug("exec cancelled by the host", "pid", p.child.Pid())
			return
		case <-rn.s.reaper.stopCh:
			kill()
			p.closeStdin()
			detach()
			ew.send(wire.ExecEvent{Error: &wire.ErrorResponse{Code: wire.CodeInternal,
				Error: "the agent is stopping; the command's exit status is lost"}})
			return
		}
	}
	ended := time.Now()
	p.finishIO(ctx.Done())
	// Written by the reaper before it closed Done.
	code, sig := exitStatus(p.child.status)
	res := &wire.ExecResult{
		ExitCode:       code,
		Signal:         sig,
		TimedOut:       timedOut.Load(),
		DurationMillis: ended.Sub(p.started).Milliseconds(),
		PID:            p.child.Pid(),
	}
	// Stream what is left before the result, so that a host that shows the
	// stream sees all of it when the output was slow enough to stream.
	flush()
	res.Stdout, res.StdoutTotal = stdout.detach()
	res.Stderr, res.StderrTotal = stderr.detach()
	res.StdoutTruncated = res.StdoutTotal > int64(len(res.Stdout))
	res.StderrTruncated = res.StderrTotal > int64(len(res.Stderr))
	ew.send(wire.ExecEvent{Result: res})
	rn.log.Debug("exec finished", "pid", res.PID, "exit_code", res.ExitCode, "timed_out", res.TimedOut,
		"duration_ms", res.DurationMillis)
}

// awaitExit waits a bounded time for a killed command to be reaped, so a
// cancelled request does not return while its process is still dying, nor
// hang on one stuck in the kernel.
func (rn *runner) awaitExit(c *child) {
	t := time.NewTimer(killGrace + 5*time.Second)
	defer t.Stop()
	select {
	case <-c.Done():
	case <-t.C:
		rn.log.Warn("killed command did not exit", "pid", c.Pid())
	case <-rn.s.reaper.stopCh:
	}
}
