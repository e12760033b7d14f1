package wire

// PathExec runs a command in the foreground: POST an ExecRequest; the answer
// is a stream of ExecEvent lines (newline-delimited JSON), the last of which
// carries the result. Closing the connection kills the command.
const PathExec = "/v1/exec"

const (
	// DefaultExecMaxOutput is how much of each of stdout and stderr a
	// foreground command returns when the request does not say.
	DefaultExecMaxOutput = 64 << 10

	// MaxExecOutput is the most a request may ask for per stream; larger
	// values are lowered to it.
	MaxExecOutput = 16 << 20

	// ExecEventMaxData caps the data of one streamed output event.
	ExecEventMaxData = 32 << 10
)

// ExecRequest describes a command, for PathExec and PathProcesses.
type ExecRequest struct {
	// Argv is the program and its arguments, run without a shell; a
	// program name without a slash is looked up in the command's PATH.
	Argv []string `json:"argv,omitempty"`
	// Command is a shell command line, run with /bin/sh -c. Exactly one of
	// Argv and Command must be given.
	Command string `json:"command,omitempty"`
	// Cwd is the working directory; empty means the data directory and
	// relative paths are taken from it. A missing directory is created
	// (the data directory by the agent for the user, anything else with
	// the user's own permissions).
	Cwd string `json:"cwd,omitempty"`
	// Env is added to the environment the agent inherited from the image.
	Env map[string]string `json:"env,omitempty"`
	// Stdin is fed to the command's standard input, which is then closed;
	// without it the command reads /dev/null. At most MaxExecStdin bytes.
	Stdin []byte `json:"stdin,omitempty"`
	// TimeoutMillis kills the command's whole process group (SIGTERM, then
	// SIGKILL after a short grace) once it has run this long; 0 means no
	// timeout.
	TimeoutMillis int64 `json:"timeout_ms,omitempty"`
	// MaxOutput is how many bytes of each of stdout and stderr a foreground
	// command keeps and returns (the first ones); 0 means
	// DefaultExecMaxOutput, and it is at most MaxExecOutput. Background
	// processes ignore it: they keep the last ProcessOutputBuffer bytes.
	MaxOutput int `json:"max_output,omitempty"`
}

// ExecResult is how a foreground command ended.
type ExecResult struct {
	// ExitCode is the exit status, or 128+N when signal N killed the
	// command, as a shell reports it. 127 and 126 with a message on Stderr
	// mean the program was not found or could not be run.
	ExitCode int `json:"exit_code"`
	// Signal names the signal that killed the command ("SIGKILL"); empty
	// when it exited.
	Signal string `json:"signal,omitempty"`
	// TimedOut says the agent killed the command for exceeding its timeout.
	TimedOut bool `json:"timed_out,omitempty"`
	// Stdout and Stderr hold the first MaxOutput bytes of each stream.
	Stdout []byte `json:"stdout"`
	Stderr []byte `json:"stderr"`
	// StdoutTotal and StderrTotal count every byte the command wrote.
	StdoutTotal     int64 `json:"stdout_total"`
	StderrTotal     int64 `json:"stderr_total"`
	StdoutTruncated bool  `json:"stdout_truncated,omitempty"`
	StderrTruncated bool  `json:"stderr_truncated,omitempty"`
	// DurationMillis runs from the start until the command exited.
	DurationMillis int64 `json:"duration_ms"`
	// PID is the command's process id (0 if it never started).
	PID int `json:"pid"`
}

// ExecEvent is one line of PathExec's answer: output while the command
// runs, then exactly one Result (or, if the agent itself fails after the
// command started, one Error).
//
// Streamed output is a live view, not the record: when a stream produces
// more than ExecEventMaxData per ExecEventInterval, the oldest unsent bytes
// are skipped (Offset shows where), while Result always has the first
// MaxOutput bytes and the totals.
type ExecEvent struct {
	// Stream is "stdout" or "stderr" for output events.
	Stream string `json:"stream,omitempty"`
	// Offset is the position of Data in its stream.
	Offset int64  `json:"offset,omitempty"`
	Data   []byte `json:"data,omitempty"`

	Result *ExecResult    `json:"result,omitempty"`
	Error  *ErrorResponse `json:"error,omitempty"`
}

// Stream names.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

const (
	// MaxTimeoutMillis bounds every duration in a request so that
	// converting it to a time.Duration cannot overflow; 30 days is "no
	// limit" in practice.
	MaxTimeoutMillis = 30 * 24 * 3600 * 1000
)

// OutputLimit turns a requested read limit into the one used.
func OutputLimit(n int64) int {
	if n <= 0 {
		return DefaultOutputLimit
	}
	return int(min(n, MaxOutputLimit))
}
