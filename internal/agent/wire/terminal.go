package wire

import "time"

// Terminals are shells on pseudo-terminals that live until closed, until
// their shell exits or until they sit idle too long. They belong to no
// request, so any host session can use one by id.
//
//	POST   /v1/terminals               TerminalRequest -> TerminalInfo (201)
//	GET    /v1/terminals               -> TerminalList
//	GET    /v1/terminals/{id}          -> TerminalInfo
//	DELETE /v1/terminals/{id}          hang up and forget -> TerminalInfo
//	POST   /v1/terminals/{id}/input    TerminalInput -> OutputChunk (with Terminal)
//	GET    /v1/terminals/{id}/output   ?offset=N&limit=M -> OutputChunk (with Terminal)
//	POST   /v1/terminals/{id}/resize   TerminalResize -> TerminalInfo
//	GET    /v1/terminals/{id}/attach   [?offset=N] Upgrade: berth-terminal -> 101, then raw bytes both ways
//	                                   (output kept from offset N first; without it, output from now on)
const PathTerminals = "/v1/terminals"

// TerminalUpgrade is the protocol named in the Upgrade header of an attach:
// after the 101 answer the connection carries the terminal's raw output
// towards the host and raw input towards the terminal.
const TerminalUpgrade = "berth-terminal"

const (
	// MaxTerminals is how many terminals may run at once, and how many the
	// agent remembers (exited ones are forgotten first).
	MaxTerminals = 64

	// MaxTerminalSize bounds rows and columns.
	MaxTerminalSize = 1000

	// DefaultTerminalWait and MaxTerminalWait bound how long SendTerminal
	// waits for its pattern or for the output to settle.
	DefaultTerminalWait = 10 * time.Second

	MaxTerminalWait = 5 * time.Minute
)

// TerminalRequest opens a terminal.
type TerminalRequest struct {
	// Shell is the program to run; empty means /bin/bash if the image has
	// it, else /bin/sh. A name without a slash is looked up in PATH.
	Shell string `json:"shell,omitempty"`
	// Args are passed to the shell (for example ["-l"] for a login shell).
	Args []string `json:"args,omitempty"`
	// Rows and Cols default to 24x80; at most MaxTerminalSize.
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Cwd works as in ExecRequest.
	Cwd string `json:"cwd,omitempty"`
	// Env is added to the agent's environment; TERM defaults to
	// DefaultTerminalTerm.
	Env map[string]string `json:"env,omitempty"`
	// IdleTimeoutMillis hangs the terminal up once nobody has sent input,
	// read output or been attached for this long; 0 means never.
	IdleTimeoutMillis int64 `json:"idle_timeout_ms,omitempty"`
}

// TerminalInfo describes a terminal.
type TerminalInfo struct {
	// ID names the terminal in this agent ("t1", "t2", ...).
	ID  string `json:"id"`
	PID int    `json:"pid"`
	// Shell is the program that was started.
	Shell        string    `json:"shell"`
	Rows         uint16    `json:"rows"`
	Cols         uint16    `json:"cols"`
	Cwd          string    `json:"cwd"`
	StartedAt    time.Time `json:"started_at"`
	LastActivity time.Time `json:"last_activity"`
	// Running is true until the shell has exited and the output is
	// complete.
	Running  bool       `json:"running"`
	ExitCode *int       `json:"exit_code,omitempty"`
	Signal   string     `json:"signal,omitempty"`
	EndedAt  *time.Time `json:"ended_at,omitempty"`
	// IdleClosed says the agent hung it up for being idle.
	IdleClosed        bool  `json:"idle_closed,omitempty"`
	IdleTimeoutMillis int64 `json:"idle_timeout_ms,omitempty"`
	// Attached counts the raw connections attached right now.
	Attached int `json:"attached,omitempty"`
	// OutputTotal counts every byte of output so far.
	OutputTotal int64 `json:"output_total"`
}

// TerminalList is the answer to GET PathTerminals, oldest first.
type TerminalList struct {
	Terminals []TerminalInfo `json:"terminals"`
}

// TerminalInput is typed into a terminal; the answer is the output produced
// from just before the input was written, after the optional wait.
type TerminalInput struct {
	// Data is written to the terminal as is ("ls\n", "\x03" for ^C). It may
	// be empty, to wait for output only.
	Data []byte `json:"data,omitempty"`
	// WaitSettleMillis returns once no new output arrived for this long.
	WaitSettleMillis int64 `json:"wait_settle_ms,omitempty"`
	// WaitPattern (a Go regular expression) returns once the output since
	// the input matches it. The output is raw: it includes the terminal's
	// echo of the input and any escape sequences.
	WaitPattern string `json:"wait_pattern,omitempty"`
	// WaitTimeoutMillis bounds the wait: default DefaultTerminalWait, at
	// most MaxTerminalWait. With neither WaitSettleMillis nor WaitPattern
	// there is no wait.
	WaitTimeoutMillis int64 `json:"wait_timeout_ms,omitempty"`
	// MaxOutput caps the bytes returned (from the start of the new output):
	// default DefaultOutputLimit, at most MaxOutputLimit. Read on from
	// NextOffset for the rest.
	MaxOutput int `json:"max_output,omitempty"`
}

// TerminalResize is the body of POST PathTerminals/{id}/resize.
type TerminalResize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}
