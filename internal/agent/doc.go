// Package agent owns berth's in-container agent and the host's view of it:
// the wire protocol (protocol.go), the server that runs as PID 1 inside every
// workspace container (server.go, reaper.go), and the host-side client the
// workspace Manager uses to reach it (client.go).
//
// The agent is the berth binary itself, bind-mounted read-only into the
// container and started as `berth agent`. Because it is the container's init
// it must reap every orphan and forward the host's signals, so that any OCI
// image works without tini. It talks to the host over a unix socket in a
// per-workspace host directory that is bind-mounted at ContainerDir.
//
// This package must not know about containerd, workspaces or MCP: it only
// runs processes inside one container and answers the host. Everything the
// client reads from the agent is untrusted input from the workspace, so the
// client caps sizes and validates every field.
//
// Rule for future code in this package: every child process the agent starts
// must be started through the reaper (see reaper.startCmd), never with
// exec.Cmd.Wait or os.Process.Wait. The reaper calls wait4(-1), which would
// steal the exit status from any other waiter.
package agent
