// Package server is berth's in-container agent: the server that runs as PID 1
// inside every workspace container (server.go, reaper.go) and answers the
// host over a unix socket: commands and background processes, terminals,
// stdio processes, files and archives.
//
// The agent is the berth binary itself, bind-mounted read-only into the
// container and started as `berth agent`, whose subcommand is the only
// importer of this package. Because it is the container's init it must reap
// every orphan and forward the host's signals, so that any OCI image works
// without tini. It talks to the host over a unix socket in a per-workspace
// host directory that is bind-mounted at wire.ContainerDir.
//
// This package must not know about containerd, workspaces or MCP (a test in
// internal/agent checks its imports): it only runs processes inside one
// container and answers the host in the protocol of internal/agent/wire. It
// must not import the host's client either.
//
// Rule for future code in this package: every child process the agent starts
// must be started through the reaper (see reaper.startCmd), never with
// exec.Cmd.Wait or os.Process.Wait. The reaper calls wait4(-1), which would
// steal the exit status from any other waiter.
package server
