package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/server"
)

// ExecInput is a command to run in the workspace.
type ExecInput struct {
	BotID          string            `json:"bot_id" jsonschema:"description=the bot whose workspace runs the command"`
	Command        string            `json:"command,omitempty" jsonschema:"description=shell command line\\, run with /bin/sh -c (give this or argv)"`
	Argv           []string          `json:"argv,omitempty" jsonschema:"description=program and arguments\\, run without a shell (give this or command)"`
	Cwd            string            `json:"cwd,omitempty" jsonschema:"description=working directory (default /data\\, created if missing; relative paths are under /data)"`
	Env            map[string]string `json:"env,omitempty" jsonschema:"description=extra environment variables"`
	Stdin          string            `json:"stdin,omitempty" jsonschema:"description=text fed to the command's standard input"`
	TimeoutSeconds *float64          `json:"timeout_seconds,omitempty" jsonschema:"minimum=0,description=kill the command (its whole process group) after this many seconds; default 60; 0 = no timeout"`
	MaxOutputBytes int               `json:"max_output_bytes,omitempty" jsonschema:"minimum=0,maximum=1048576,description=cap on stdout and on stderr returned (default 65536; at most 1 MiB: redirect more to a file)"`
	Background     bool              `json:"background,omitempty" jsonschema:"description=start the command and return a process_id at once; read its output with process_output"`
}

func (e ExecInput) bot() string { return e.BotID }

// ExecOutput is what a command did.
type ExecOutput struct {
	ExitCode        int    `json:"exit_code" jsonschema:"description=the exit status; 128+N when killed by signal N"`
	Signal          string `json:"signal,omitempty"`
	TimedOut        bool   `json:"timed_out,omitempty"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutBytes     int64  `json:"stdout_bytes" jsonschema:"description=total bytes the command wrote to stdout"`
	StderrBytes     int64  `json:"stderr_bytes"`
	StdoutTruncated bool   `json:"stdout_truncated,omitempty"`
	StderrTruncated bool   `json:"stderr_truncated,omitempty"`
	DurationMillis  int64  `json:"duration_ms"`
	ProcessID       string `json:"process_id,omitempty" jsonschema:"description=for background commands: the id for process_output\\, process_signal and process_kill"`
	PID             int    `json:"pid,omitempty"`
}

// ProcessInput names a background process.
type ProcessInput struct {
	BotID     string `json:"bot_id"`
	ProcessID string `json:"process_id"`
}

func (p ProcessInput) bot() string { return p.BotID }

// ProcessOutputInput reads a background process's output from an offset.
type ProcessOutputInput struct {
	BotID     string `json:"bot_id"`
	ProcessID string `json:"process_id"`
	Stream    string `json:"stream,omitempty" jsonschema:"enum=stdout,enum=stderr,description=default stdout"`
	Offset    int64  `json:"offset,omitempty" jsonschema:"minimum=0,description=byte offset to read from: next_offset of the previous read"`
	Limit     int    `json:"limit,omitempty" jsonschema:"minimum=0,maximum=1048576,description=bytes at most (default 65536)"`
}

func (p ProcessOutputInput) bot() string { return p.BotID }

// SignalInput sends a signal to a background process's group.
type SignalInput struct {
	BotID     string `json:"bot_id"`
	ProcessID string `json:"process_id"`
	Signal    string `json:"signal" jsonschema:"description=signal name or number\\, e.g. SIGTERM\\, INT\\, 9"`
}

func (s SignalInput) bot() string { return s.BotID }

// ProcessListOutput lists background processes.
type ProcessListOutput struct {
	Processes []wire.ProcessInfo `json:"processes"`
}

// OutputChunkOutput is a piece of a process's or terminal's output.
type OutputChunkOutput struct {
	Output     string `json:"output"`
	Offset     int64  `json:"offset" jsonschema:"description=offset of the first byte returned"`
	NextOffset int64  `json:"next_offset" jsonschema:"description=pass as offset to read on"`
	Total      int64  `json:"total" jsonschema:"description=bytes produced so far"`
	Dropped    int64  `json:"dropped,omitempty" jsonschema:"description=bytes lost before offset because the bounded history overflowed"`
	Running    bool   `json:"running"`
	ExitCode   *int   `json:"exit_code,omitempty"`
	Matched    bool   `json:"matched,omitempty" jsonschema:"description=terminal_send: wait_pattern matched"`
	TimedOut   bool   `json:"timed_out,omitempty" jsonschema:"description=terminal_send: the wait ended at its timeout"`
}

func execTools(h handlers) []server.ServerTool {
	return []server.ServerTool{
		define("exec", "Run a command",
			"Run a command in the bot's workspace and return its exit code, stdout and stderr (kept apart, each capped). Long commands stream output as progress notifications; cancelling the call or the timeout kills the whole process group. With background=true it returns a process_id at once.",
			hints{openWorld: true}, auth.ScopeExec, h.exec),
		define("process_list", "List background processes",
			"List the background processes started with exec background=true in the bot's workspace, running or exited.",
			hints{readOnly: true, idempotent: true}, auth.ScopeExec, h.processList),
		define("process_output", "Read process output",
			"Read a background process's stdout or stderr from a byte offset; pass next_offset to continue.",
			hints{readOnly: true, idempotent: true}, auth.ScopeExec, h.processOutput),
		define("process_signal", "Signal a process",
			"Send a signal to a background process and its process group.",
			hints{destructive: true}, auth.ScopeExec, h.processSignal),
		define("process_kill", "Kill a process",
			"Kill a background process and its process group with SIGKILL.",
			hints{destructive: true, idempotent: true}, auth.ScopeExec, h.processKill),
	}
}

func (h handlers) exec(ctx context.Context, c *call, in ExecInput) (ExecOutput, string, error) {
	req, err := h.execRequest(in)
	if err != nil {
		return ExecOutput{}, "", err
	}
	if in.Background {
		p, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.ProcessInfo, error) { return a.StartProcess(ctx, req) })
		if err != nil {
			return ExecOutput{}, "", err
		}
		return ExecOutput{ProcessID: p.ID, PID: p.PID},
			fmt.Sprintf("started background process %s (pid %d); read its output with process_output", p.ID, p.PID), nil
	}
	res, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.ExecResult, error) {
		return a.Exec(ctx, req, outputProgress(ctx, c))
	})
	if err != nil {
		return ExecOutput{}, "", err
	}
	out := ExecOutput{
		ExitCode: res.ExitCode, Signal: res.Signal, TimedOut: res.TimedOut,
		Stdout: text(res.Stdout), Stderr: text(res.Stderr),
		StdoutBytes: res.StdoutTotal, StderrBytes: res.StderrTotal,
		StdoutTruncated: res.StdoutTruncated, StderrTruncated: res.StderrTruncated,
		DurationMillis: res.DurationMillis, PID: res.PID,
	}
	return out, execSummary(out), nil
}

func (h handlers) processList(ctx context.Context, _ *call, in BotInput) (ProcessListOutput, string, error) {
	ps, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) ([]wire.ProcessInfo, error) { return a.Processes(ctx) })
	if err != nil {
		return ProcessListOutput{}, "", err
	}
	return ProcessListOutput{Processes: ps}, fmt.Sprintf("%d background process(es)", len(ps)), nil
}

func (h handlers) processOutput(ctx context.Context, _ *call, in ProcessOutputInput) (OutputChunkOutput, string, error) {
	stream := in.Stream
	if stream == "" {
		stream = "stdout"
	}
	if stream != "stdout" && stream != "stderr" {
		return OutputChunkOutput{}, "", fmt.Errorf("stream must be stdout or stderr")
	}
	chunk, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.OutputChunk, error) {
		return a.ProcessOutput(ctx, in.ProcessID, stream, in.Offset, in.Limit)
	})
	if err != nil {
		return OutputChunkOutput{}, "", err
	}
	out := chunkOutput(chunk)
	return out, chunkSummary(in.ProcessID, out), nil
}

func (h handlers) processSignal(ctx context.Context, _ *call, in SignalInput) (ProcessInput, string, error) {
	if err := h.Manager.WithAgent(ctx, in.BotID, func(a *client.Client) error { return a.SignalProcess(ctx, in.ProcessID, in.Signal) }); err != nil {
		return ProcessInput{}, "", err
	}
	return ProcessInput{BotID: in.BotID, ProcessID: in.ProcessID}, fmt.Sprintf("sent %s to process %s", in.Signal, in.ProcessID), nil
}

func (h handlers) processKill(ctx context.Context, _ *call, in ProcessInput) (ProcessInput, string, error) {
	// Killing a process that has ended (or was already forgotten) leaves
	// it as asked: not an error. Only the agent's answer may say so.
	var ended *client.RemoteError
	err := h.Manager.WithAgent(ctx, in.BotID, func(a *client.Client) error {
		err := a.SignalProcess(ctx, in.ProcessID, "SIGKILL")
		if errors.As(err, &ended) && (ended.Code == wire.CodeConflict || ended.Code == wire.CodeNotFound) {
			return nil
		}
		ended = nil
		return err
	})
	switch {
	case err != nil:
		return ProcessInput{}, "", err
	case ended != nil:
		return in, fmt.Sprintf("process %s is not running (%s): nothing to kill", in.ProcessID, ended.Message), nil
	}
	return in, "sent SIGKILL to process " + in.ProcessID, nil
}

// MaxExecOutput caps what one exec returns of each stream. An answer
// holds its output several times over while it is encoded (text and
// structured content, JSON escapes), so this bounds berth's memory per call
// as much as it bounds a model's context; bigger output belongs in a file.
const MaxExecOutput = 1 << 20

// maxExecTimeout is the longest timeout_seconds a foreground command may
// ask for: longer work belongs in a background process.
const maxExecTimeout = 24 * time.Hour

func (h handlers) execRequest(in ExecInput) (wire.ExecRequest, error) {
	if (in.Command == "") == (len(in.Argv) == 0) {
		return wire.ExecRequest{}, errors.New("give exactly one of command (a shell command line) or argv (a program and its arguments)")
	}
	timeout := h.Limits.ExecTimeout
	if in.TimeoutSeconds != nil {
		secs := *in.TimeoutSeconds
		// The comparison is false for NaN, so NaN is refused too.
		if !(secs >= 0 && secs <= maxExecTimeout.Seconds()) {
			return wire.ExecRequest{}, fmt.Errorf("timeout_seconds must be between 0 (no timeout) and %.0f (%s); for longer work use background=true", maxExecTimeout.Seconds(), maxExecTimeout)
		}
		timeout = time.Duration(secs * float64(time.Second))
	}
	maxOut := h.Limits.ExecMaxOutput
	if in.MaxOutputBytes < 0 || in.MaxOutputBytes > MaxExecOutput {
		return wire.ExecRequest{}, fmt.Errorf("max_output_bytes must be between 1 and %d (1 MiB); redirect bigger output to a file and read it with fs_read", MaxExecOutput)
	}
	if in.MaxOutputBytes > 0 {
		maxOut = in.MaxOutputBytes
	}
	return wire.ExecRequest{
		Argv: in.Argv, Command: in.Command, Cwd: in.Cwd, Env: in.Env, Stdin: []byte(in.Stdin),
		TimeoutMillis: timeout.Milliseconds(), MaxOutput: maxOut,
	}, nil
}

// outputProgress streams a command's output to the client as progress
// notifications, when the client asked for progress.
func outputProgress(ctx context.Context, c *call) func(stream string, data []byte) {
	report := c.progress(ctx)
	if report == nil {
		return nil
	}
	var total float64
	return func(stream string, data []byte) {
		total += float64(len(data))
		const maxMessage = 4 << 10
		msg := text(data)
		if len(msg) > maxMessage {
			msg = msg[:maxMessage] + "…"
		}
		report(workspace.Progress{Done: total, Message: stream + ": " + msg})
	}
}

// text makes command output safe for JSON text: invalid UTF-8 is replaced.
func text(b []byte) string { return strings.ToValidUTF8(string(b), "\uFFFD") }

func execSummary(o ExecOutput) string {
	var b strings.Builder
	switch {
	case o.TimedOut:
		fmt.Fprintf(&b, "timed out after %d ms and was killed (exit code %d)", o.DurationMillis, o.ExitCode)
	case o.Signal != "":
		fmt.Fprintf(&b, "killed by %s (exit code %d)", o.Signal, o.ExitCode)
	default:
		fmt.Fprintf(&b, "exit code %d", o.ExitCode)
	}
	section := func(name, body string, total int64, truncated bool) {
		if body == "" && total == 0 {
			return
		}
		fmt.Fprintf(&b, "\n--- %s ---\n%s", name, body)
		if truncated {
			fmt.Fprintf(&b, "\n[… truncated: %d bytes in all, first %d shown; raise max_output_bytes or redirect to a file]", total, len(body))
		}
	}
	section("stdout", o.Stdout, o.StdoutBytes, o.StdoutTruncated)
	section("stderr", o.Stderr, o.StderrBytes, o.StderrTruncated)
	return b.String()
}

// chunkOutput shapes a piece of a process's or terminal's output.
func chunkOutput(c wire.OutputChunk) OutputChunkOutput {
	out := OutputChunkOutput{
		Output: text(c.Data), Offset: c.Offset, NextOffset: c.NextOffset, Total: c.Total, Dropped: c.Dropped,
		Matched: c.Matched, TimedOut: c.TimedOut,
	}
	switch {
	case c.Process != nil:
		out.Running, out.ExitCode = c.Process.Running, c.Process.ExitCode
	case c.Terminal != nil:
		out.Running, out.ExitCode = c.Terminal.Running, c.Terminal.ExitCode
	}
	return out
}

func chunkSummary(id string, o OutputChunkOutput) string {
	state := "running"
	if !o.Running {
		state = "exited"
		if o.ExitCode != nil {
			state = fmt.Sprintf("exited with %d", *o.ExitCode)
		}
	}
	s := fmt.Sprintf("%s (%s): bytes %d-%d of %d", id, state, o.Offset, o.NextOffset, o.Total)
	if o.Dropped > 0 {
		s += fmt.Sprintf("; %d earlier bytes were dropped from the bounded history", o.Dropped)
	}
	if o.NextOffset < o.Total {
		s += "; more follows: pass next_offset"
	}
	return s + "\n" + o.Output
}
