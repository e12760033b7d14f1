package wire

import "time"

// Tunnels carry a TCP connection to a port inside the workspace over the
// agent's socket, so the host reaches what a bot serves whatever the
// workspace's network (none included: the agent dials the workspace's own
// loopback).
//
//	POST /v1/tunnel?port=N   with Connection: Upgrade and Upgrade: berth-tunnel
//	                         -> 101, then raw bytes both ways
//
// The agent dials 127.0.0.1:N, then [::1]:N, before it answers. Nothing
// listening on either (or a port out of range, or too many tunnels) gets an
// ordinary JSON error answer: CodeUnreachable with status 502 when the
// port refused or did not answer, CodeBadRequest, CodeLimit. After the 101
// the connection is the TCP connection's bytes: end of file from one side is
// passed on as a half close (shutdown of writing) to the other, and the
// tunnel ends once both directions have ended or either side fails.
const PathTunnel = "/v1/tunnel"

// TunnelUpgrade is the protocol named in the Upgrade header of PathTunnel.
const TunnelUpgrade = "berth-tunnel"

// CodeUnreachable says the workspace port a tunnel asked for did not accept
// the connection: nothing listens there (yet), or it did not answer in time.
const CodeUnreachable = "unreachable"

const (
	// MaxTunnels is how many tunnels the agent carries at once; the host
	// caps each bot below this, but the agent must not trust the host's
	// caps to protect itself.
	MaxTunnels = 512

	// TunnelDialTimeout bounds the agent's connect to the workspace port.
	// A local port accepts or refuses at once; only a listener whose
	// accept queue is full leaves a connect hanging.
	TunnelDialTimeout = 5 * time.Second
)
