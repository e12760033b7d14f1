// Package transports serves berth's MCP server to clients: over stdio for
// one local client, and over streamable HTTP at /mcp for many, with bearer
// token auth, an Origin check, and /healthz and /readyz. It decides who a
// caller is; what a caller may do is decided by the tools.
package transports

import (
	"github.com/berth-dev/berth/resources"
	"github.com/berth-dev/berth/tools"
	"github.com/mark3labs/mcp-go/server"
)

const instructions = `berth gives each bot its own long-lived Linux workspace (a container whose files persist).
Start with workspace_create for your bot_id (it is idempotent), then use the other workspace_* tools.`

// NewMCPServer builds the MCP server with every tool and resource.
func NewMCPServer(version string, d tools.Deps) *server.MCPServer {
	s := server.NewMCPServer("berth", version,
		server.WithToolCapabilities(true),
		server.WithResourceCapabilities(false, true),
		server.WithInstructions(instructions),
		server.WithRecovery(),
		server.WithResourceRecovery(),
	)
	tools.Register(s, d)
	resources.Register(s, d.Manager, d.Skills)
	return s
}
