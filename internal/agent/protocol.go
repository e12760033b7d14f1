package agent

import (
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
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

// maxVersionLen bounds the free-form version string the agent reports; it
// ends up in logs and error messages on the host.
const maxVersionLen = 128

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

// ErrBadResponse marks an answer that came from something listening on the
// socket but is not a valid berth agent response (too large, malformed, or
// with impossible values). Retrying does not help.
var ErrBadResponse = errors.New("invalid response from berth agent")

// validate checks a Health document read from the (untrusted) agent.
func (h Health) validate() error {
	switch {
	case h.ProtocolVersion < 1:
		return fmt.Errorf("%w: protocol_version %d", ErrBadResponse, h.ProtocolVersion)
	case h.PID < 1:
		return fmt.Errorf("%w: pid %d", ErrBadResponse, h.PID)
	case h.StartedAt.IsZero():
		return fmt.Errorf("%w: started_at missing", ErrBadResponse)
	case h.Children < -1:
		return fmt.Errorf("%w: children %d", ErrBadResponse, h.Children)
	}
	if err := checkText(h.BerthVersion, maxVersionLen); err != nil {
		return fmt.Errorf("%w: berth_version: %v", ErrBadResponse, err)
	}
	return nil
}

// checkText accepts short, printable UTF-8 only, because such strings from
// the agent end up in host logs and in messages shown to models and people.
func checkText(s string, maxLen int) error {
	if len(s) > maxLen {
		return fmt.Errorf("%d bytes, more than %d", len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("contains unprintable character %U", r)
		}
	}
	return nil
}

// ProtocolMismatchError says the agent in a workspace speaks another protocol
// version than this berth. The agent binary is fixed when the container
// starts, so the only remedy is restarting the workspace.
type ProtocolMismatchError struct {
	Got, Want int
	// BerthVersion is what the agent reported, if it could be read; it is
	// untrusted and already sanitized.
	BerthVersion string
}

func (e *ProtocolMismatchError) Error() string {
	who := "another berth version"
	if e.BerthVersion != "" {
		who = fmt.Sprintf("berth %q", e.BerthVersion)
	}
	return fmt.Sprintf("berth agent speaks protocol %d but this berth speaks protocol %d: "+
		"the workspace was started by %s; restart it (workspace_stop, then workspace_start) to get the current agent",
		e.Got, e.Want, who)
}
