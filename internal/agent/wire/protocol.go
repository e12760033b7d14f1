package wire

import (
	"fmt"
	"time"
)

// The wire protocol is HTTP/1.1 over the unix socket with JSON bodies. HTTP
// rather than a bespoke framing so that later endpoints (exec output, PTYs)
// can stream with chunked responses or take over the connection by hijacking,
// while simple calls stay simple and debuggable with curl --unix-socket.

// ProtocolVersion is bumped whenever the host and the agent could misread
// each other. A running workspace keeps the agent binary it was started with,
// so a host upgraded in between must detect the difference instead of
// guessing.
const ProtocolVersion = 1

// ContainerDir is where the per-workspace host directory appears inside the
// container.
const ContainerDir = "/run/berth"

// SocketName is the agent's socket inside ContainerDir (and inside the host
// directory that is mounted there).
const SocketName = "agent.sock"

// ProtocolHeader is set on every response, errors included, so the client can
// tell a berth agent of another protocol version apart from a broken one
// before it tries to decode a body whose shape may have changed.
const ProtocolHeader = "Berth-Agent-Protocol"

// PathHealth answers GET with a Health document.
const PathHealth = "/v1/health"

// MaxResponseBytes caps how much of any response the client reads. The agent
// runs inside the workspace, which the bot controls, so a response can be
// anything; no plain JSON answer of this protocol comes near this size.
const MaxResponseBytes = 1 << 20

// Health is the answer to GET /v1/health.
type Health struct {
	ProtocolVersion int       `json:"protocol_version"`
	BerthVersion    string    `json:"berth_version"`
	PID             int       `json:"pid"`
	StartedAt       time.Time `json:"started_at"`
	// Reaped counts the processes the agent has waited for since it started:
	// its own children and the orphans the kernel reparented to it.
	Reaped uint64 `json:"reaped"`
	// Children is the number of live processes in the container other than
	// the agent (as init: everything in /proc; as a subreaper in tests: its
	// descendants). -1 means the agent could not read /proc.
	Children int `json:"children"`
}

// ErrorResponse is the body of every non-2xx response.
type ErrorResponse struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Error codes carried in ErrorResponse.Code. They are stable identifiers for
// programs; the message is for people.
const (
	CodeBadRequest       = "bad_request"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeInternal         = "internal"
)

// MaxSocketPath is the longest path a unix socket address can hold on Linux
// (sun_path is 108 bytes including the terminating NUL).
const MaxSocketPath = 107

func CheckSocketPath(path string) error {
	if len(path) > MaxSocketPath {
		return fmt.Errorf("socket path %q is %d bytes long; unix sockets allow at most %d", path, len(path), MaxSocketPath)
	}
	return nil
}

// DefaultDataDir is the workspace directory of a bot.
const DefaultDataDir = "/data"
