package wire

import (
	"time"
	"unicode/utf8"
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

const (
	// MaxProcesses is how many background processes may run at once, and
	// how many the agent remembers: beyond it, the ones that exited first
	// are forgotten.
	MaxProcesses = 256

	// MaxInfoString bounds the command line and directory shown in a
	// ProcessInfo, so that a full list stays small; MaxInfoArgs bounds the
	// number of arguments shown.
	MaxInfoString = 2048

	MaxInfoArgs = 256
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

// TruncateInfo shortens a string shown in process listings, so that 256
// processes with huge command lines still fit in a bounded answer.
func TruncateInfo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

const (
	// DefaultOutputLimit and MaxOutputLimit bound one read of process or
	// terminal output.
	DefaultOutputLimit = 64 << 10
	MaxOutputLimit     = 1 << 20
)
