package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Stdio processes are long-lived programs whose stdin and stdout are carried
// over one connection, for the host to talk to them as to a local child: a
// bot's stdio MCP servers run in its workspace this way. The process belongs
// to the connection: when the host's connection closes, the agent kills the
// process group.
//
//	POST /v1/stdio   StdioRequest, with Connection: Upgrade and
//	                 Upgrade: berth-stdio -> 101, then frames both ways
//
// A request the agent refuses (bad request, program not found or not
// executable, too many stdio processes) gets an ordinary JSON error answer.
// Otherwise the process has started when the agent answers 101 Switching
// Protocols (with Upgrade: berth-stdio and the protocol header), and from
// then on both sides send frames: a type byte, the payload's length as a
// 4-byte big-endian number, then the payload, at most StdioMaxFrame bytes.
//
// The agent sends:
//
//	's'  started, first and once: JSON StdioStarted {"pid":N}
//	'o'  bytes the process wrote to stdout
//	'e'  bytes the process wrote to stderr (interleaved with stdout)
//	'x'  exit, last and once: JSON StdioExit {"exit_code":N,"signal":"SIGKILL"},
//	     with ExecResult's conventions (128+N for death by signal N). It comes
//	     once the process exited and its stdout and stderr reached end of file,
//	     or, when something it left running still holds them, once they were
//	     quiet for a short grace. The agent closes the connection after it.
//
// The host sends:
//
//	'i'  bytes for the process's stdin (dropped once stdin is closed or the
//	     process stopped reading it for good)
//	'c'  close stdin (empty payload); the process reads end of file
//
// Any other frame, or a length over StdioMaxFrame, is a protocol error: the
// agent kills the process and closes the connection without an exit frame,
// as it does when the host closes the connection or shuts down its writing
// side. Killing is SIGTERM to the process group, then SIGKILL after
// StdioKillGrace. A process that exited on its own is not killed: like a
// command's, what it left running in the background is left alone.
//
// Backpressure goes both ways. The agent forwards output as it reads it and
// never buffers more than a frame per stream, so a host that does not read
// makes the process block in its writes. Symmetrically, input is written to
// the process as it arrives, so a process that does not read its stdin makes
// the host's writes block.
const PathStdio = "/v1/stdio"

// StdioUpgrade is the protocol named in the Upgrade header of PathStdio.
const StdioUpgrade = "berth-stdio"

const (
	// StdioMaxFrame caps the payload of one frame, either way.
	StdioMaxFrame = 64 << 10
)

// Frame types of a stdio connection; see PathStdio.
const (
	StdioFrameStarted    byte = 's'
	StdioFrameStdout     byte = 'o'
	StdioFrameStderr     byte = 'e'
	StdioFrameExit       byte = 'x'
	StdioFrameStdin      byte = 'i'
	StdioFrameCloseStdin byte = 'c'
)

const (
	// MaxStdioControl caps the JSON payload of the started and exit
	// frames, which is a few dozen bytes.
	MaxStdioControl = 1024
)

// StdioRequest starts a stdio process.
type StdioRequest struct {
	// Argv is the program and its arguments, run without a shell; a program
	// name without a slash is looked up in the process's PATH.
	Argv []string `json:"argv"`
	// Cwd and Env work as in ExecRequest.
	Cwd string            `json:"cwd,omitempty"`
	Env map[string]string `json:"env,omitempty"`
}

// StdioStarted is the payload of the started frame.
type StdioStarted struct {
	PID int `json:"pid"`
}

// StdioExit is how a stdio process ended: the payload of the exit frame.
type StdioExit struct {
	// ExitCode is the exit status, or 128+N when signal N killed it.
	ExitCode int `json:"exit_code"`
	// Signal names the signal that killed it ("SIGTERM"); empty when it
	// exited.
	Signal string `json:"signal,omitempty"`
}

// ErrStdioProtocol marks a malformed frame.
var ErrStdioProtocol = errors.New("stdio protocol error")

// ReadStdioFrame reads one frame into buf (at least StdioMaxFrame long);
// the payload is only valid until the next call.
func ReadStdioFrame(r io.Reader, buf []byte) (typ byte, payload []byte, err error) {
	var hdr [StdioFrameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > StdioMaxFrame {
		return 0, nil, fmt.Errorf("%w: frame %q of %d bytes, more than %d", ErrStdioProtocol, hdr[0], n, StdioMaxFrame)
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], buf[:n], nil
}

// StdioHeader is the header of a frame of typ with n bytes.
func StdioHeader(typ byte, n int) []byte {
	h := make([]byte, StdioFrameHeader)
	h[0] = typ
	binary.BigEndian.PutUint32(h[1:], uint32(n))
	return h
}

const (
	// StdioFrameHeader is the type byte and the length.
	StdioFrameHeader = 5
)
