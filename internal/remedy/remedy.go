// Package remedy lets the packages below berth's tools say what would let a
// failed call succeed, in their own terms, without naming a tool: an error
// carries a Remedy, and the layer that knows the tools (tools.Explain)
// words it. This keeps tool names out of the workspace, runtime, agent and
// proxy packages, which other front ends (the console, the CLI) share.
package remedy

import "errors"

// Remedy is what brings berth to where a failed call can succeed.
type Remedy int

const (
	None Remedy = iota
	// Create: the bot has no workspace yet.
	Create
	// Start: the workspace is not running.
	Start
	// Restart: stop and start the workspace; it gets a fresh agent.
	Restart
	// ImportImage: the image is not present and may not be pulled.
	ImportImage
	// ListMCPServers: the named MCP server is not one the workspace has.
	ListMCPServers
	// RemoveMCPServer: the workspace has as many MCP servers as it may.
	RemoveMCPServer
	// UnexposePort: the workspace exposes as many ports as it may.
	UnexposePort
	// ListExports: the export id is not one berth handed out.
	ListExports
	// PreserveData: there is no preserved /data to restore.
	PreserveData
)

type remedied struct {
	err    error
	remedy Remedy
}

func (e *remedied) Error() string { return e.err.Error() }
func (e *remedied) Unwrap() error { return e.err }

// With attaches r to err; err's class (errdefs) is kept.
func With(r Remedy, err error) error {
	if err == nil {
		return nil
	}
	return &remedied{err: err, remedy: r}
}

// Of is the remedy err carries, or None.
func Of(err error) Remedy {
	var r *remedied
	if errors.As(err, &r) {
		return r.remedy
	}
	return None
}
