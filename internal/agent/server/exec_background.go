package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// Limits of background processes and of output reads.
const (
	// ProcessOutputBuffer is how much of each stream of a background
	// process the agent keeps: the most recent bytes.
	ProcessOutputBuffer = 1 << 20
)

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

func (p *bgProc) info() wire.ProcessInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	info := wire.ProcessInfo{
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
		limit:    wire.MaxProcesses,
		tooMany:  tooMany("background processes running", wire.MaxProcesses, "stop some first"),
		notFound: "no background process %q (it may have been forgotten)",
	}}
}

func (pt *procTable) route(mux *http.ServeMux) {
	info := (*bgProc).info
	route(mux, wire.PathProcesses, map[string]http.HandlerFunc{
		http.MethodGet:  listHandler(&pt.procs, info, func(l []wire.ProcessInfo) wire.ProcessList { return wire.ProcessList{Processes: l} }),
		http.MethodPost: pt.handleStart,
	})
	route(mux, wire.PathProcesses+"/{id}", map[string]http.HandlerFunc{
		http.MethodGet:    getHandler(&pt.procs, info),
		http.MethodDelete: pt.handleForget,
	})
	route(mux, wire.PathProcesses+"/{id}/output", map[string]http.HandlerFunc{http.MethodGet: pt.handleOutput})
	route(mux, wire.PathProcesses+"/{id}/signal", map[string]http.HandlerFunc{http.MethodPost: pt.handleSignal})
}

func (pt *procTable) handleStart(w http.ResponseWriter, r *http.Request) {
	var req wire.ExecRequest
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
func (pt *procTable) start(spec *procSpec, req wire.ExecRequest) (*bgProc, *piped, error) {
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
			command:   wire.TruncateInfo(req.Command, wire.MaxInfoString),
			cwd:       wire.TruncateInfo(spec.dir, wire.MaxInfoString),
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

// displayArgv cuts an argument list to about MaxInfoString bytes in all.
func displayArgv(argv []string) []string {
	out := make([]string, 0, min(len(argv), wire.MaxInfoArgs+1))
	budget := wire.MaxInfoString
	for i, a := range argv {
		if budget <= 0 || i == wire.MaxInfoArgs {
			out = append(out, "…")
			break
		}
		a = wire.TruncateInfo(a, budget)
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
	case "", wire.StreamStdout:
		buf = p.stdout
	case wire.StreamStderr:
		buf = p.stderr
	default:
		writeAPIError(w, badRequest("stream must be stdout or stderr, not %q", wire.TruncateInfo(stream, 32)))
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
	chunk, err := readChunk(buf, offset, wire.OutputLimit(limit))
	if err != nil {
		writeAPIError(w, err)
		return
	}
	chunk.Process = &info
	writeJSON(w, http.StatusOK, chunk)
}

// readChunk reads an outbuf into an OutputChunk.
func readChunk(b *outbuf, offset int64, limit int) (wire.OutputChunk, error) {
	rd, err := b.read(offset, limit)
	if err != nil {
		var beyond errOffsetBeyondEnd
		if errors.As(err, &beyond) {
			return wire.OutputChunk{}, badRequest("%v", err)
		}
		return wire.OutputChunk{}, err
	}
	return wire.OutputChunk{Data: rd.data, Offset: rd.offset, NextOffset: rd.next, Total: rd.total, Dropped: rd.dropped}, nil
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
