package agent

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Background processes run detached from any request until they exit; any
// host session can read their output by offset, signal them and finally
// forget them.
//
//	POST   /v1/processes                 ExecRequest -> ProcessInfo (201)
//	GET    /v1/processes                 -> ProcessList
//	GET    /v1/processes/{id}            -> ProcessInfo
//	DELETE /v1/processes/{id}            forget an exited process -> ProcessInfo
//	GET    /v1/processes/{id}/output     ?stream=stdout|stderr&offset=N&limit=M -> OutputChunk
//	POST   /v1/processes/{id}/signal     SignalRequest -> ProcessInfo
const PathProcesses = "/v1/processes"

// Limits of background processes and of output reads.
const (
	// MaxProcesses is how many background processes may run at once, and
	// how many the agent remembers: beyond it, the ones that exited first
	// are forgotten.
	MaxProcesses = 256
	// ProcessOutputBuffer is how much of each stream of a background
	// process the agent keeps: the most recent bytes.
	ProcessOutputBuffer = 1 << 20
	// DefaultOutputLimit and MaxOutputLimit bound one read of process or
	// terminal output.
	DefaultOutputLimit = 64 << 10
	MaxOutputLimit     = 1 << 20
	// maxInfoString bounds the command line and directory shown in a
	// ProcessInfo, so that a full list stays small; maxInfoArgs bounds the
	// number of arguments shown.
	maxInfoString = 2048
	maxInfoArgs   = 256
)

// ProcessInfo describes a background process.
type ProcessInfo struct {
	// ID names the process in this agent ("p1", "p2", ...). IDs are not
	// reused while the agent runs; they start again after it restarts.
	ID  string `json:"id"`
	PID int    `json:"pid"`
	// Argv or Command as requested; for display only: each is cut to about
	// 2 KiB (marked with "…").
	Argv    []string `json:"argv,omitempty"`
	Command string   `json:"command,omitempty"`
	// Cwd is the working directory it was started in.
	Cwd       string    `json:"cwd"`
	StartedAt time.Time `json:"started_at"`
	// Running is true until the process has exited and its output pipes
	// reached end of file (or a short grace passed), so once it is false a
	// read up to Total has everything, except what processes it left
	// running in the background may still write.
	Running bool `json:"running"`
	// ExitCode is set once it exited: its exit status, or 128+N for death
	// by signal N. It stays unset if the agent could not learn it.
	ExitCode *int       `json:"exit_code,omitempty"`
	Signal   string     `json:"signal,omitempty"`
	TimedOut bool       `json:"timed_out,omitempty"`
	EndedAt  *time.Time `json:"ended_at,omitempty"`
	// StdoutTotal and StderrTotal count all the bytes written so far.
	StdoutTotal int64 `json:"stdout_total"`
	StderrTotal int64 `json:"stderr_total"`
}

// ProcessList is the answer to GET PathProcesses, oldest first.
type ProcessList struct {
	Processes []ProcessInfo `json:"processes"`
}

// SignalRequest is the body of POST PathProcesses/{id}/signal. The agent
// also accepts a JSON number for Signal.
type SignalRequest struct {
	// Signal is a name with or without "SIG" ("SIGTERM", "term") or a
	// number ("15").
	Signal string `json:"signal"`
}

// OutputChunk is a piece of a process's or terminal's output, addressed by
// absolute byte offsets in that stream.
type OutputChunk struct {
	Data []byte `json:"data"`
	// Offset is where Data starts. It is past the requested offset when
	// those bytes were already dropped from the bounded buffer (see
	// Dropped), and a negative requested offset -N means "the last N
	// bytes".
	Offset int64 `json:"offset"`
	// NextOffset is Offset+len(Data): where to read on.
	NextOffset int64 `json:"next_offset"`
	// Total is how many bytes the stream has produced so far.
	Total int64 `json:"total"`
	// Dropped counts bytes between the requested offset and Offset that
	// are gone.
	Dropped int64 `json:"dropped"`

	// Matched, Settled and TimedOut say why SendTerminal stopped waiting:
	// its pattern matched, the output was quiet for the settle time, or
	// the wait timed out. All false: it did not wait, or the terminal
	// ended.
	Matched  bool `json:"matched,omitempty"`
	Settled  bool `json:"settled,omitempty"`
	TimedOut bool `json:"timed_out,omitempty"`

	// Process is set for process output, Terminal for terminal output: the
	// state taken just before the data was read, so when it says the
	// process or terminal is no longer running, Data reaches the end.
	Process  *ProcessInfo  `json:"process,omitempty"`
	Terminal *TerminalInfo `json:"terminal,omitempty"`
}

// bgProc is a background process the agent tracks.
type bgProc struct {
	id        string
	argv      []string
	command   string
	cwd       string
	startedAt time.Time
	child     *child
	stdout    *outbuf
	stderr    *outbuf

	mu       sync.Mutex
	ended    bool
	exitCode *int
	signal   string
	timedOut bool
	endedAt  time.Time
}

func (p *bgProc) info() ProcessInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	info := ProcessInfo{
		ID:          p.id,
		PID:         p.child.Pid(),
		Argv:        p.argv,
		Command:     p.command,
		Cwd:         p.cwd,
		StartedAt:   p.startedAt,
		Running:     !p.ended,
		Signal:      p.signal,
		TimedOut:    p.timedOut,
		StdoutTotal: p.stdout.state().total,
		StderrTotal: p.stderr.state().total,
	}
	if p.ended {
		if p.exitCode != nil {
			code := *p.exitCode
			info.ExitCode = &code
		}
		at := p.endedAt
		info.EndedAt = &at
	}
	return info
}

func (p *bgProc) ID() string { return p.id }

func (p *bgProc) Ended() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.endedAt, p.ended
}

func (p *bgProc) release() {
	p.stdout.release()
	p.stderr.release()
}

// procTable holds the background processes of one agent.
type procTable struct {
	rn    *runner
	procs registry[*bgProc]
}

func newProcTable(rn *runner) *procTable {
	return &procTable{rn: rn, procs: registry[*bgProc]{
		prefix:   "p",
		limit:    MaxProcesses,
		tooMany:  tooMany("background processes running", MaxProcesses, "stop some first"),
		notFound: "no background process %q (it may have been forgotten)",
	}}
}

func (pt *procTable) route(mux *http.ServeMux) {
	info := (*bgProc).info
	route(mux, PathProcesses, map[string]http.HandlerFunc{
		http.MethodGet:  listHandler(&pt.procs, info, func(l []ProcessInfo) ProcessList { return ProcessList{Processes: l} }),
		http.MethodPost: pt.handleStart,
	})
	route(mux, PathProcesses+"/{id}", map[string]http.HandlerFunc{
		http.MethodGet:    getHandler(&pt.procs, info),
		http.MethodDelete: pt.handleForget,
	})
	route(mux, PathProcesses+"/{id}/output", map[string]http.HandlerFunc{http.MethodGet: pt.handleOutput})
	route(mux, PathProcesses+"/{id}/signal", map[string]http.HandlerFunc{http.MethodPost: pt.handleSignal})
}

func (pt *procTable) handleStart(w http.ResponseWriter, r *http.Request) {
	var req ExecRequest
	if err := readJSON(w, r, MaxExecRequestBytes, &req, false); err != nil {
		writeAPIError(w, err)
		return
	}
	spec, timeout, err := pt.rn.execSpec(req)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if spec.notFound != "" {
		writeAPIError(w, badRequest("%s: command not found in PATH", spec.notFound))
		return
	}
	bp, p, err := pt.start(spec, req)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	go pt.watch(bp, p, timeout)
	pt.rn.log.Info("background process started", "id", bp.id, "pid", bp.child.Pid(), "program", spec.path)
	writeJSON(w, http.StatusCreated, bp.info())
}

// start starts the process as a new entry of the table.
func (pt *procTable) start(spec *procSpec, req ExecRequest) (*bgProc, *piped, error) {
	var p *piped
	bp, err := pt.procs.add(func(id string) (*bgProc, error) {
		stdout, stderr := newOutbuf(ProcessOutputBuffer), newOutbuf(ProcessOutputBuffer)
		var err error
		p, err = pt.rn.startPiped(spec, req.Stdin, stdout, stderr)
		if err != nil {
			if _, msg, ok := startFailure(spec.argv[0], err); ok {
				return nil, badRequest("cannot start %s", strings.TrimSpace(strings.TrimPrefix(msg, "berth: ")))
			}
			return nil, internalError("starting %s: %v", spec.argv[0], err)
		}
		bp := &bgProc{
			id:        id,
			command:   truncateInfo(req.Command, maxInfoString),
			cwd:       truncateInfo(spec.dir, maxInfoString),
			startedAt: p.started.UTC(),
			child:     p.child,
			stdout:    stdout,
			stderr:    stderr,
		}
		if req.Command == "" {
			bp.argv = displayArgv(req.Argv)
		}
		return bp, nil
	})
	return bp, p, err
}

// displayArgv cuts an argument list to about maxInfoString bytes in all.
func displayArgv(argv []string) []string {
	out := make([]string, 0, min(len(argv), maxInfoArgs+1))
	budget := maxInfoString
	for i, a := range argv {
		if budget <= 0 || i == maxInfoArgs {
			out = append(out, "…")
			break
		}
		a = truncateInfo(a, budget)
		budget -= len(a)
		out = append(out, a)
	}
	return out
}

// watch records how the process ends, killing it at its timeout.
func (pt *procTable) watch(bp *bgProc, p *piped, timeout time.Duration) {
	stop := pt.rn.s.reaper.stopCh
	var timeoutC <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout - time.Since(p.started))
		defer t.Stop()
		timeoutC = t.C
	}
	select {
	case <-p.child.Done():
	case <-timeoutC:
		bp.mu.Lock()
		bp.timedOut = true
		bp.mu.Unlock()
		pt.rn.log.Info("background process timed out", "id", bp.id, "pid", p.child.Pid())
		killGroup(p.child)
		select {
		case <-p.child.Done():
		case <-stop:
		}
	case <-stop:
	}
	select {
	case <-p.child.Done():
		p.finishIO(stop)
	default:
		// The agent is stopping and the status is lost; say it ended
		// without an exit code rather than claim it still runs.
		p.closeStdin()
	}
	bp.mu.Lock()
	defer bp.mu.Unlock()
	bp.ended = true
	bp.endedAt = time.Now().UTC()
	select {
	case <-p.child.Done():
		code, sig := exitStatus(p.child.status)
		bp.exitCode, bp.signal = &code, sig
	default:
	}
	pt.rn.log.Info("background process ended", "id", bp.id, "pid", p.child.Pid(), "signal", bp.signal)
}

func (pt *procTable) handleOutput(w http.ResponseWriter, r *http.Request) {
	p, err := pt.procs.lookup(r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	var buf *outbuf
	switch stream := r.URL.Query().Get("stream"); stream {
	case "", StreamStdout:
		buf = p.stdout
	case StreamStderr:
		buf = p.stderr
	default:
		writeAPIError(w, badRequest("stream must be stdout or stderr, not %q", truncateInfo(stream, 32)))
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
	info := p.info()
	chunk, err := readChunk(buf, offset, outputLimit(limit))
	if err != nil {
		writeAPIError(w, err)
		return
	}
	chunk.Process = &info
	writeJSON(w, http.StatusOK, chunk)
}

// readChunk reads an outbuf into an OutputChunk.
func readChunk(b *outbuf, offset int64, limit int) (OutputChunk, error) {
	rd, err := b.read(offset, limit)
	if err != nil {
		var beyond errOffsetBeyondEnd
		if errors.As(err, &beyond) {
			return OutputChunk{}, badRequest("%v", err)
		}
		return OutputChunk{}, err
	}
	return OutputChunk{Data: rd.data, Offset: rd.offset, NextOffset: rd.next, Total: rd.total, Dropped: rd.dropped}, nil
}

func (pt *procTable) handleSignal(w http.ResponseWriter, r *http.Request) {
	p, err := pt.procs.lookup(r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	var req struct {
		Signal json.RawMessage `json:"signal"`
	}
	if err := readJSON(w, r, maxJSONRequest, &req, false); err != nil {
		writeAPIError(w, err)
		return
	}
	if len(req.Signal) == 0 {
		writeAPIError(w, badRequest("signal is missing"))
		return
	}
	sig, err := parseSignal(req.Signal)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if err := signalGroup(p.child, sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			writeAPIError(w, conflict("process %s has already exited", p.id))
			return
		}
		writeAPIError(w, internalError("signalling process %s: %v", p.id, err))
		return
	}
	pt.rn.log.Info("signalled background process", "id", p.id, "pid", p.child.Pid(), "signal", signalName(sig))
	writeJSON(w, http.StatusOK, p.info())
}

func (pt *procTable) handleForget(w http.ResponseWriter, r *http.Request) {
	p, err := pt.procs.lookup(r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	info := p.info()
	if info.Running {
		writeAPIError(w, conflict("process %s is still running; signal it first", p.id))
		return
	}
	pt.procs.remove(p)
	writeJSON(w, http.StatusOK, info)
}
