package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Limits and defaults of terminals.
const (
	// TerminalOutputBuffer is how much recent output a terminal keeps.
	TerminalOutputBuffer = 1 << 20
	// DefaultTerminalRows and DefaultTerminalCols size a new terminal.
	DefaultTerminalRows = 24
	DefaultTerminalCols = 80
	// DefaultTerminalTerm is TERM unless the request sets it.
	DefaultTerminalTerm = "xterm-256color"
	// maxWaitPattern bounds the regular expression of an input request.
	maxWaitPattern = 4096
	// matchInterval spaces out the matching of a wait pattern against a
	// growing output, so a flood of small writes does not rescan up to a
	// mebibyte for each.
	matchInterval = 20 * time.Millisecond
	// attachWriteTimeout drops an attached connection whose reader stopped
	// reading, instead of holding its goroutine forever.
	attachWriteTimeout = 30 * time.Second
)

// terminal is one pty and the shell on it.
type terminal struct {
	id          string
	shell       string
	cwd         string
	startedAt   time.Time
	idleTimeout time.Duration
	child       *child
	// master is the agent's side of the pty, non-blocking so that
	// deadlines and Close interrupt reads and writes.
	master     *os.File
	out        *outbuf
	readerDone chan struct{}
	// ended is closed once the terminal is over: shell gone, output
	// complete, master closed.
	ended chan struct{}

	// inMu keeps inputs from interleaving and marks "before the input" for
	// SendTerminal.
	inMu sync.Mutex

	mu           sync.Mutex
	rows, cols   uint16
	lastActivity time.Time
	attached     int
	idleTimer    *time.Timer
	idleClosed   bool
	isEnded      bool
	exitCode     *int
	signal       string
	endedAt      time.Time
}

func (t *terminal) info() wire.TerminalInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	info := wire.TerminalInfo{
		ID:                t.id,
		PID:               t.child.Pid(),
		Shell:             t.shell,
		Rows:              t.rows,
		Cols:              t.cols,
		Cwd:               t.cwd,
		StartedAt:         t.startedAt,
		LastActivity:      t.lastActivity,
		Running:           !t.isEnded,
		Signal:            t.signal,
		IdleClosed:        t.idleClosed,
		IdleTimeoutMillis: t.idleTimeout.Milliseconds(),
		Attached:          t.attached,
		OutputTotal:       t.out.state().total,
	}
	if t.isEnded {
		if t.exitCode != nil {
			code := *t.exitCode
			info.ExitCode = &code
		}
		at := t.endedAt
		info.EndedAt = &at
	}
	return info
}

func (t *terminal) ID() string { return t.id }

func (t *terminal) Ended() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.endedAt, t.isEnded
}

func (t *terminal) release() { t.out.release() }

func (t *terminal) running() bool {
	select {
	case <-t.ended:
		return false
	default:
		return true
	}
}

// touch records activity, which postpones the idle timeout.
func (t *terminal) touch() {
	t.mu.Lock()
	t.lastActivity = time.Now().UTC()
	t.mu.Unlock()
}

// termTable holds the terminals of one agent.
type termTable struct {
	rn        *runner
	terms     registry[*terminal]
	watchOnce sync.Once
}

func newTermTable(rn *runner) *termTable {
	return &termTable{rn: rn, terms: registry[*terminal]{
		prefix:   "t",
		limit:    wire.MaxTerminals,
		tooMany:  tooMany("terminals open", wire.MaxTerminals, "close some first"),
		notFound: "no terminal %q (it may have been closed)",
	}}
}

func (tt *termTable) route(mux *http.ServeMux) {
	info := (*terminal).info
	route(mux, wire.PathTerminals, map[string]http.HandlerFunc{
		http.MethodGet:  listHandler(&tt.terms, info, func(l []wire.TerminalInfo) wire.TerminalList { return wire.TerminalList{Terminals: l} }),
		http.MethodPost: tt.handleOpen,
	})
	route(mux, wire.PathTerminals+"/{id}", map[string]http.HandlerFunc{
		http.MethodGet:    getHandler(&tt.terms, info),
		http.MethodDelete: tt.handleClose,
	})
	route(mux, wire.PathTerminals+"/{id}/input", map[string]http.HandlerFunc{http.MethodPost: tt.handleInput})
	route(mux, wire.PathTerminals+"/{id}/output", map[string]http.HandlerFunc{http.MethodGet: tt.handleOutput})
	route(mux, wire.PathTerminals+"/{id}/resize", map[string]http.HandlerFunc{http.MethodPost: tt.handleResize})
	route(mux, wire.PathTerminals+"/{id}/attach", map[string]http.HandlerFunc{http.MethodGet: tt.handleAttach})
}

func terminalSize(rows, cols uint16, defaults bool) (uint16, uint16, error) {
	if defaults {
		if rows == 0 {
			rows = DefaultTerminalRows
		}
		if cols == 0 {
			cols = DefaultTerminalCols
		}
	}
	if rows < 1 || cols < 1 || rows > wire.MaxTerminalSize || cols > wire.MaxTerminalSize {
		return 0, 0, badRequest("terminal size %dx%d (rows x cols) out of range 1-%d", rows, cols, wire.MaxTerminalSize)
	}
	return rows, cols, nil
}

// defaultShell is bash when the image has it: people and models expect its
// line editing and job control.
func defaultShell() string {
	if fi, err := os.Stat("/bin/bash"); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return "/bin/bash"
	}
	return "/bin/sh"
}

func (tt *termTable) handleOpen(w http.ResponseWriter, r *http.Request) {
	var req wire.TerminalRequest
	if err := readJSON(w, r, maxJSONRequest, &req, true); err != nil {
		writeAPIError(w, err)
		return
	}
	t, err := tt.open(req)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	tt.rn.log.Info("terminal opened", "id", t.id, "pid", t.child.Pid(), "shell", t.shell)
	writeJSON(w, http.StatusCreated, t.info())
}

func (tt *termTable) open(req wire.TerminalRequest) (*terminal, error) {
	rows, cols, err := terminalSize(req.Rows, req.Cols, true)
	if err != nil {
		return nil, err
	}
	idle, err := millis("idle_timeout_ms", req.IdleTimeoutMillis)
	if err != nil {
		return nil, err
	}
	shell := req.Shell
	if shell == "" {
		shell = defaultShell()
	}
	if len(shell) > maxPathLen {
		return nil, badRequest("shell of %d bytes; at most %d", len(shell), maxPathLen)
	}
	spec, err := tt.rn.prepare(append([]string{shell}, req.Args...), req.Cwd, req.Env,
		map[string]string{"TERM": DefaultTerminalTerm})
	if err != nil {
		return nil, err
	}
	if spec.notFound != "" {
		return nil, badRequest("shell %s: command not found in PATH", spec.notFound)
	}

	t, err := tt.terms.add(func(id string) (*terminal, error) {
		c, master, err := tt.startShell(spec, rows, cols)
		if err != nil {
			if _, msg, ok := startFailure(shell, err); ok {
				return nil, badRequest("cannot start shell %s", strings.TrimSpace(strings.TrimPrefix(msg, "berth: ")))
			}
			return nil, internalError("starting terminal: %v", err)
		}
		now := time.Now().UTC()
		t := &terminal{
			id:           id,
			shell:        wire.TruncateInfo(spec.path, wire.MaxInfoString),
			cwd:          wire.TruncateInfo(spec.dir, wire.MaxInfoString),
			startedAt:    now,
			idleTimeout:  idle,
			child:        c,
			master:       master,
			out:          newOutbuf(TerminalOutputBuffer),
			readerDone:   make(chan struct{}),
			ended:        make(chan struct{}),
			rows:         rows,
			cols:         cols,
			lastActivity: now,
		}
		go t.pumpOutput()
		go tt.watch(t)
		if idle > 0 {
			t.mu.Lock()
			t.idleTimer = time.AfterFunc(idle, func() { tt.checkIdle(t) })
			t.mu.Unlock()
		}
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	tt.watchOnce.Do(tt.watchShutdown)
	return t, nil
}

// startShell starts spec on a new pty as the leader of a new session with
// the pty as its controlling terminal. pty.Start would call cmd.Start
// itself, out of the reaper's sight, so the pty is opened here and the
// command started through the reaper like every other child.
func (tt *termTable) startShell(spec *procSpec, rows, cols uint16) (*child, *os.File, error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	defer tty.Close()
	if err := pty.Setsize(tty, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		_ = ptmx.Close()
		return nil, nil, err
	}
	if u := tt.rn.user(); u != nil {
		// As login does: the user's own terminal, so programs that check
		// or reopen it (mesg, script, ssh) work.
		_ = tty.Chown(int(u.UID), int(u.GID))
	}
	master, err := nonblockingFile(ptmx)
	if err != nil {
		return nil, nil, err
	}
	cmd := tt.rn.command(spec)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0 // the child's stdin, which is tty
	c, err := tt.rn.s.reaper.startCmd(cmd)
	if err != nil {
		_ = master.Close()
		return nil, nil, err
	}
	return c, master, nil
}

// nonblockingFile replaces f by a non-blocking duplicate. creack/pty's
// ioctls call File.Fd, which switches the master to blocking mode for good:
// reads would then tie up a thread each and ignore deadlines and Close. The
// duplicate shares the open file, so setting O_NONBLOCK on it is enough,
// and os.NewFile puts a non-blocking descriptor in the runtime's poller.
func nonblockingFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	name := f.Name()
	_ = f.Close()
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// pumpOutput copies the pty's output into the buffer until the pty ends
// (EIO once no process holds the terminal open) or the master is closed.
func (t *terminal) pumpOutput() {
	defer close(t.readerDone)
	buf := make([]byte, 32<<10)
	for {
		n, err := t.master.Read(buf)
		if n > 0 {
			_, _ = t.out.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// watch waits for the shell to exit, lets the reader take the last output,
// then closes the pty. Closing it also hangs up what the shell left running
// on the terminal.
func (tt *termTable) watch(t *terminal) {
	stop := tt.rn.s.reaper.stopCh
	select {
	case <-t.child.Done():
	case <-stop:
	}
	grace := time.NewTimer(ioGrace)
	select {
	case <-t.readerDone:
	case <-grace.C:
	case <-stop:
	}
	grace.Stop()
	_ = t.master.Close()
	<-t.readerDone
	t.out.closeWrite()
	t.mu.Lock()
	t.isEnded = true
	t.endedAt = time.Now().UTC()
	select {
	case <-t.child.Done():
		code, sig := exitStatus(t.child.status)
		t.exitCode, t.signal = &code, sig
	default:
	}
	if t.idleTimer != nil {
		t.idleTimer.Stop()
	}
	t.mu.Unlock()
	close(t.ended)
	tt.rn.log.Info("terminal ended", "id", t.id, "pid", t.child.Pid(), "signal", t.signal)
}

// checkIdle hangs the terminal up once it has been idle long enough, and
// otherwise looks again when it could be.
func (tt *termTable) checkIdle(t *terminal) {
	t.mu.Lock()
	if t.isEnded {
		t.mu.Unlock()
		return
	}
	idleFor := time.Since(t.lastActivity)
	if t.attached > 0 || idleFor < t.idleTimeout {
		wait := t.idleTimeout - idleFor
		if t.attached > 0 || wait <= 0 {
			wait = t.idleTimeout
		}
		t.idleTimer.Reset(wait)
		t.mu.Unlock()
		return
	}
	t.idleClosed = true
	t.mu.Unlock()
	tt.rn.log.Info("terminal idle; hanging up", "id", t.id, "idle_timeout", t.idleTimeout)
	tt.hangup(t)
}

// hangup ends a terminal's session: SIGHUP to every process in it (the
// shell passes it on to its jobs, which are in process groups of their
// own), then SIGKILL to whatever is left after a short grace. Processes
// that started a session of their own (setsid, daemons) are not part of
// it and survive, as they would a logout.
func (tt *termTable) hangup(t *terminal) {
	if !t.running() {
		return
	}
	_ = signalGroup(t.child, unix.SIGHUP)
	tt.signalSession(t, unix.SIGHUP)
	wait := time.NewTimer(killGrace)
	select {
	case <-t.child.Done():
	case <-wait.C:
	}
	wait.Stop()
	_ = signalGroup(t.child, unix.SIGKILL)
	tt.signalSession(t, unix.SIGKILL)
	wait = time.NewTimer(2 * time.Second)
	defer wait.Stop()
	select {
	case <-t.ended:
	case <-wait.C:
		tt.rn.log.Warn("terminal did not end after SIGKILL", "id", t.id, "pid", t.child.Pid())
	}
}

// signalSession signals every live process whose session is the one the
// shell leads. The session id is the shell's pid, which cannot be reused
// while any member lives.
func (tt *termTable) signalSession(t *terminal, sig unix.Signal) {
	for _, pid := range sessionMembers(tt.rn.s.procRoot, t.child.Pid()) {
		if pid != tt.rn.s.pid {
			_ = unix.Kill(pid, sig)
		}
	}
}

// sessionMembers lists the live processes of session sid.
func sessionMembers(procRoot string, sid int) []int {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid pgrp session ..."; comm may contain
		// anything, so count fields from the last ')'.
		end := bytes.LastIndexByte(b, ')')
		if end < 0 {
			continue
		}
		f := bytes.Fields(b[end+1:])
		if len(f) < 4 || f[0][0] == 'Z' || f[0][0] == 'X' {
			continue
		}
		if s, err := strconv.Atoi(string(f[3])); err == nil && s == sid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// watchShutdown hangs up every terminal when the agent is told to stop. An
// interactive shell ignores the SIGTERM the agent forwards, and would keep
// the container from stopping until the runtime's SIGKILL. The watch ends
// with the agent's reaper, so an agent that stopped for other reasons (a
// test's context) does not leave a handler behind.
func (tt *termTable) watchShutdown() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	go func() {
		defer signal.Stop(sigs)
		select {
		case <-sigs:
		case <-tt.rn.s.reaper.stopCh:
			return
		}
		for _, t := range tt.terms.list() {
			if t.running() {
				_ = signalGroup(t.child, unix.SIGHUP)
				tt.signalSession(t, unix.SIGHUP)
			}
		}
	}()
}

func (tt *termTable) handleClose(w http.ResponseWriter, r *http.Request) {
	t, err := tt.terms.lookup(r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	tt.hangup(t)
	tt.terms.remove(t)
	tt.rn.log.Info("terminal closed", "id", t.id)
	writeJSON(w, http.StatusOK, t.info())
}

func (tt *termTable) handleOutput(w http.ResponseWriter, r *http.Request) {
	t, err := tt.terms.lookup(r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	offset, err := queryInt(r, "offset", 0)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	limit, err := queryInt(r, "limit", 0)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	t.touch()
	info := t.info()
	chunk, err := readChunk(t.out, offset, wire.OutputLimit(limit))
	if err != nil {
		writeAPIError(w, err)
		return
	}
	chunk.Terminal = &info
	writeJSON(w, http.StatusOK, chunk)
}

func (tt *termTable) handleResize(w http.ResponseWriter, r *http.Request) {
	t, err := tt.terms.lookup(r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	var req wire.TerminalResize
	if err := readJSON(w, r, maxJSONRequest, &req, false); err != nil {
		writeAPIError(w, err)
		return
	}
	rows, cols, err := terminalSize(req.Rows, req.Cols, false)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if !t.running() {
		writeAPIError(w, conflict("terminal %s has ended", t.id))
		return
	}
	if err := setWinsize(t.master, rows, cols); err != nil {
		if errors.Is(err, os.ErrClosed) {
			writeAPIError(w, conflict("terminal %s has ended", t.id))
			return
		}
		writeAPIError(w, internalError("resizing terminal %s: %v", t.id, err))
		return
	}
	t.mu.Lock()
	t.rows, t.cols = rows, cols
	t.lastActivity = time.Now().UTC()
	t.mu.Unlock()
	writeJSON(w, http.StatusOK, t.info())
}

// setWinsize resizes through the runtime's hold on the descriptor (not
// File.Fd, which would make it blocking); the kernel sends SIGWINCH to the
// terminal's foreground process group.
func setWinsize(f *os.File, rows, cols uint16) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return err
	}
	return ioErr
}

func (tt *termTable) handleInput(w http.ResponseWriter, r *http.Request) {
	t, err := tt.terms.lookup(r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	var in wire.TerminalInput
	if err := readJSON(w, r, maxJSONRequest, &in, false); err != nil {
		writeAPIError(w, err)
		return
	}
	settle, err := millis("wait_settle_ms", in.WaitSettleMillis)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	waitFor, err := millis("wait_timeout_ms", in.WaitTimeoutMillis)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if waitFor == 0 {
		waitFor = wire.DefaultTerminalWait
	}
	waitFor = min(waitFor, wire.MaxTerminalWait)
	if in.MaxOutput < 0 {
		writeAPIError(w, badRequest("max_output must not be negative"))
		return
	}
	var re *regexp.Regexp
	if in.WaitPattern != "" {
		if len(in.WaitPattern) > maxWaitPattern {
			writeAPIError(w, badRequest("wait_pattern of %d bytes; at most %d", len(in.WaitPattern), maxWaitPattern))
			return
		}
		if re, err = regexp.Compile(in.WaitPattern); err != nil {
			writeAPIError(w, badRequest("wait_pattern: %v", err))
			return
		}
	}
	if !t.running() {
		writeAPIError(w, conflict("terminal %s has ended; open a new one", t.id))
		return
	}
	deadline := time.Now().Add(waitFor)
	t.touch()
	start, err := t.write(in.Data, deadline)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	var chunkFlags wire.OutputChunk
	if re != nil || settle > 0 {
		chunkFlags = t.wait(r.Context(), start, re, settle, deadline)
	}
	t.touch()
	info := t.info()
	chunk, err := readChunk(t.out, start, wire.OutputLimit(int64(in.MaxOutput)))
	if err != nil {
		writeAPIError(w, err)
		return
	}
	chunk.Matched, chunk.Settled, chunk.TimedOut = chunkFlags.Matched, chunkFlags.Settled, chunkFlags.TimedOut
	chunk.Terminal = &info
	writeJSON(w, http.StatusOK, chunk)
}

// write types p into the terminal and returns the output offset from just
// before it. A terminal whose program does not read its input fills the
// pty's buffer; the deadline turns that into an error instead of a request
// that never returns.
func (t *terminal) write(p []byte, deadline time.Time) (int64, error) {
	t.inMu.Lock()
	defer t.inMu.Unlock()
	start := t.out.state().total
	if len(p) == 0 {
		return start, nil
	}
	_ = t.master.SetWriteDeadline(deadline)
	n, err := t.master.Write(p)
	_ = t.master.SetWriteDeadline(time.Time{})
	switch {
	case err == nil:
		return start, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, &apiError{http.StatusGatewayTimeout, CodeTimeout,
			fmt.Sprintf("terminal %s took only %d of %d bytes of input before the timeout: its program is not reading input", t.id, n, len(p))}
	case errors.Is(err, os.ErrClosed) || !t.running():
		return 0, conflict("terminal %s has ended", t.id)
	default:
		return 0, internalError("writing to terminal %s: %v", t.id, err)
	}
}

// wait blocks until the output since start matches re, or has been quiet
// for settle, or the terminal ends, the deadline passes or the host goes
// away; the flags of the result say which.
func (t *terminal) wait(ctx context.Context, start int64, re *regexp.Regexp, settle time.Duration, deadline time.Time) wire.OutputChunk {
	var res wire.OutputChunk
	lastTotal, lastChange := start, time.Now()
	matchedUpTo := int64(-1)
	var lastMatch time.Time
	tryMatch := func(total int64) bool {
		matchedUpTo, lastMatch = total, time.Now()
		rd, err := t.out.read(start, TerminalOutputBuffer)
		return err == nil && re.Match(rd.data)
	}
	for {
		st := t.out.state()
		now := time.Now()
		if st.total != lastTotal {
			lastTotal, lastChange = st.total, now
		}
		over := !t.running() || !now.Before(deadline) || ctx.Err() != nil
		if re != nil && st.total != matchedUpTo && (over || now.Sub(lastMatch) >= matchInterval) {
			if tryMatch(st.total) {
				res.Matched = true
				return res
			}
		}
		if settle > 0 && now.Sub(lastChange) >= settle {
			res.Settled = true
			return res
		}
		if over {
			res.TimedOut = t.running() && ctx.Err() == nil
			return res
		}
		next := deadline
		if settle > 0 {
			next = minTime(next, lastChange.Add(settle))
		}
		if re != nil && st.total != matchedUpTo {
			next = minTime(next, lastMatch.Add(matchInterval))
		}
		timer := time.NewTimer(time.Until(next))
		select {
		case <-st.changed:
		case <-timer.C:
		case <-t.ended:
		case <-ctx.Done():
		}
		timer.Stop()
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// handleAttach takes the connection over after a 101 answer and then copies
// output from the live position to the host and the host's bytes to the
// terminal, until either side ends.
func (tt *termTable) handleAttach(w http.ResponseWriter, r *http.Request) {
	t, err := tt.terms.lookup(r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), wire.TerminalUpgrade) {
		w.Header().Set("Upgrade", wire.TerminalUpgrade)
		writeError(w, http.StatusUpgradeRequired, wire.CodeBadRequest,
			"attach needs Connection: Upgrade and Upgrade: "+wire.TerminalUpgrade)
		return
	}
	if !t.running() {
		writeAPIError(w, conflict("terminal %s has ended", t.id))
		return
	}
	// Without an offset the connection carries what comes from now on;
	// with one (a read's next_offset) it first carries what is kept from
	// there, so a reader of the history misses nothing in between.
	pos := t.out.state().total
	if r.URL.Query().Has("offset") {
		from, err := queryInt(r, "offset", 0)
		if err == nil && from < 0 {
			err = badRequest("offset must not be negative")
		}
		if err == nil && from > pos {
			err = badRequest("%v", errOffsetBeyondEnd{from, pos})
		}
		if err != nil {
			writeAPIError(w, err)
			return
		}
		pos = from
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeAPIError(w, internalError("cannot take over the connection: %v", err))
		return
	}
	defer conn.Close()
	// The server's timeouts no longer apply to a taken-over connection;
	// clear any it left.
	_ = conn.SetDeadline(time.Time{})
	_, err = io.WriteString(brw, "HTTP/1.1 101 Switching Protocols\r\n"+
		"Connection: Upgrade\r\nUpgrade: "+wire.TerminalUpgrade+"\r\n"+
		wire.ProtocolHeader+": "+strconv.Itoa(wire.ProtocolVersion)+"\r\n\r\n")
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		return
	}
	t.mu.Lock()
	t.attached++
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.attached--
		t.lastActivity = time.Now().UTC()
		t.mu.Unlock()
	}()
	tt.rn.log.Info("terminal attached", "id", t.id)
	inputDone := make(chan struct{})
	go func() {
		defer close(inputDone)
		t.copyInput(brw.Reader)
	}()
	t.copyOutput(conn, pos, inputDone)
	// Ends the input side too, if it is still reading.
	_ = conn.Close()
	<-inputDone
	tt.rn.log.Info("terminal detached", "id", t.id)
}

// copyInput types what the host sends until it stops or the terminal ends.
func (t *terminal) copyInput(r *bufio.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := t.write(buf[:n], time.Now().Add(attachWriteTimeout)); werr != nil {
				return
			}
			t.touch()
		}
		if err != nil {
			return
		}
	}
}

// copyOutput sends output from pos on until the terminal ends, the host
// stops reading, or stop is closed. If the host falls more than the buffer
// behind, the lost part is skipped.
func (t *terminal) copyOutput(conn net.Conn, pos int64, stop <-chan struct{}) {
	for {
		st := t.out.state()
		if st.total > pos {
			rd, err := t.out.read(pos, 32<<10)
			if err != nil {
				return
			}
			_ = conn.SetWriteDeadline(time.Now().Add(attachWriteTimeout))
			if _, err := conn.Write(rd.data); err != nil {
				return
			}
			pos = rd.next
			continue
		}
		if st.eof {
			return
		}
		select {
		case <-st.changed:
		case <-stop:
			return
		}
	}
}

// headerHasToken reports whether a comma-separated header lists token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}
