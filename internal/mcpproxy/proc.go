package mcpproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/workspace"
)

// proc is one process of a bot's stdio MCP server, running in its
// workspace through the agent. Its stdout is read as JSON-RPC lines and
// handed to onMessage one at a time; lines that are not JSON-RPC (banners,
// stray prints) are logged and skipped. Closing the connection to the agent
// kills the process, so a berth that dies leaves none behind.
type proc struct {
	label  string // "bot/name" for logs and errors
	log    *slog.Logger
	sp     stdio
	stderr *stderrTail

	writeMu sync.Mutex
	// done is closed once stdout has ended and the exit is known.
	done chan struct{}
	exit exitInfo
}

// stdio is what a proc needs of a process the agent runs
// (*client.StdioProcess); unit tests stand in for the agent with it.
type stdio interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Done() <-chan struct{}
	Exit() (wire.StdioExit, error)
	Close() error
	PID() int
}

// exitInfo is how a process ended.
type exitInfo struct {
	Code   int
	Signal string
	// Err is set when the exit status could not be learned (the
	// workspace stopped, the agent went away).
	Err error
	At  time.Time
}

func (e exitInfo) String() string {
	switch {
	case e.Err != nil:
		return "ended: " + e.Err.Error()
	case e.Signal != "":
		return fmt.Sprintf("was killed by %s (exit code %d)", e.Signal, e.Code)
	default:
		return fmt.Sprintf("exited with code %d", e.Code)
	}
}

// startProc starts spec in the bot's workspace. Nothing is read from it
// until serve.
func startProc(ctx context.Context, client *client.Client, label string, spec workspace.MCPServerSpec,
	stderr *stderrTail, log *slog.Logger) (*proc, error) {
	sp, err := client.StartStdio(ctx, wire.StdioRequest{Argv: spec.Argv(), Cwd: spec.Cwd, Env: spec.Env}, stderr)
	if err != nil {
		return nil, fmt.Errorf("start MCP server %s: %w", label, err)
	}
	return &proc{label: label, log: log, sp: sp, stderr: stderr, done: make(chan struct{})}, nil
}

// serve reads the process's messages and hands them to onMessage, on one
// goroutine: onMessage must not block for long.
func (p *proc) serve(onMessage func(*message, []byte)) { go p.read(onMessage) }

func (p *proc) pid() int { return p.sp.PID() }

func (p *proc) read(onMessage func(*message, []byte)) {
	defer close(p.done)
	lr := newLineReader(p.sp)
	var noise noisyLog
	for {
		line, err := lr.next()
		if errors.Is(err, errLineTooLong) {
			if ok, dropped := noise.allow(time.Now()); ok {
				p.log.Warn("MCP server wrote a line over the message cap; skipped", "server", p.label, "cap", MaxMessageBytes, "earlier_lines_not_logged", dropped)
			}
			continue
		}
		if err != nil {
			break
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		msg, err := parseMessage(line)
		if err != nil {
			if ok, dropped := noise.allow(time.Now()); ok {
				p.log.Info("MCP server wrote a line on stdout that is not JSON-RPC; skipped", "server", p.label, "line", preview(line), "why", err, "earlier_lines_not_logged", dropped)
			}
			continue
		}
		onMessage(msg, line)
	}
	<-p.sp.Done()
	st, err := p.sp.Exit()
	p.exit = exitInfo{Code: st.ExitCode, Signal: st.Signal, Err: err, At: time.Now()}
}

// exitGrace is how long a failed write waits for the process's exit to be
// read, so that the exit, not the write's error, explains the failure.
var exitGrace = 5 * time.Second

// send writes one message line (with its newline) to the server's stdin.
// It must not be called from the goroutine that reads the process (read),
// which is what closes done.
func (p *proc) send(line []byte) error {
	p.writeMu.Lock()
	_, err := p.sp.Write(line)
	p.writeMu.Unlock()
	if err == nil {
		return nil
	}
	// A process that dies while berth writes to it fails the write
	// ("writev: broken pipe": the agent closed the connection after the
	// exit) before the exit, already on its way, has been read. Which
	// side notices first is chance; the exit status and stderr say why
	// the server is gone, so they win when they come soon.
	t := time.NewTimer(exitGrace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.exitError()
	case <-t.C:
		return fmt.Errorf("MCP server %s: write: %w", p.label, err)
	}
}

// sendMessage encodes and sends m.
func (p *proc) sendMessage(m any) error {
	line, err := encodeLine(m)
	if err != nil {
		return err
	}
	return p.send(line)
}

// stop kills the process (through the agent) and waits for its end.
func (p *proc) stop() {
	_ = p.sp.Close()
	<-p.done
}

// exitError describes the end of the process for a client: how it ended
// and the last lines it wrote to stderr. Only valid after done.
func (p *proc) exitError() error {
	return fmt.Errorf("MCP server %s %s%s", p.label, p.exit, p.stderr.suffix())
}

// stderrTail keeps the last bytes a server wrote to stderr, across its
// restarts, for mcp_server_logs and for error messages.
type stderrTail struct {
	mu    sync.Mutex
	buf   []byte
	limit int
	total int64
}

// stderrTailBytes is how much stderr is kept per server.
const stderrTailBytes = 64 << 10

func newStderrTail() *stderrTail { return &stderrTail{limit: stderrTailBytes} }

func (t *stderrTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.writeLocked(p)
	return len(p), nil
}

func (t *stderrTail) writeLocked(p []byte) {
	t.total += int64(len(p))
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
}

// note adds a line of berth's own, such as a restart marker, on a line of
// its own even when the server's last line has no newline.
func (t *stderrTail) note(format string, args ...any) {
	line := "[berth] " + fmt.Sprintf(format, args...) + "\n"
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.buf); n > 0 && t.buf[n-1] != '\n' {
		line = "\n" + line
	}
	t.writeLocked([]byte(line))
}

// lines returns up to n of the last lines, oldest first, and the byte
// count ever written.
func (t *stderrTail) lines(n int) ([]string, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	text := strings.TrimRight(strings.ToValidUTF8(string(t.buf), "\uFFFD"), "\n")
	if text == "" || n <= 0 {
		return nil, t.total
	}
	all := strings.Split(text, "\n")
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all, t.total
}

// suffix is the last stderr lines of the server (without berth's notes),
// ready to append to an error message.
func (t *stderrTail) suffix() string {
	lines, _ := t.lines(20)
	var own []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "[berth] ") {
			own = append(own, l)
		}
	}
	if len(own) > 5 {
		own = own[len(own)-5:]
	}
	if len(own) == 0 {
		return ""
	}
	return "; last stderr lines:\n" + strings.Join(own, "\n")
}

// noisyLog lets a few skipped-line notes a minute into berth's log and
// counts the rest: a bot's server that floods its stdout with text must not
// flood the host's log (the next note says how many were left out).
type noisyLog struct {
	window  time.Time
	logged  int
	dropped int
}

const noisyLinesPerMinute = 10

// allow says whether to log a note now, and how many were left out since
// the last one that was logged in an earlier window.
func (l *noisyLog) allow(now time.Time) (ok bool, dropped int) {
	if now.Sub(l.window) >= time.Minute {
		dropped = l.dropped
		l.window, l.logged, l.dropped = now, 0, 0
	}
	if l.logged < noisyLinesPerMinute {
		l.logged++
		return true, dropped
	}
	l.dropped++
	return false, 0
}
