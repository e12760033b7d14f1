// Package client is the host's side of the agent protocol: the Client with
// which the workspace Manager, the tools and the MCP proxy reach the agent in
// a workspace over its unix socket (calls, streamed exec output, exports and
// imports, connections upgraded for terminals and stdio processes), the
// dialing that proves the listening end is the workspace's init (dial.go),
// and WaitReady.
//
// Everything the client reads from the agent is untrusted input from the
// workspace, which the bot controls, so the client caps sizes and validates
// every field before host code sees it; what fails is ErrBadResponse.
//
// It speaks the contract in internal/agent/wire and must not import the agent
// server (internal/agent/server), nor know of containerd, workspaces or MCP.
package client
