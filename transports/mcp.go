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

// NewMCPServer builds the MCP server with every tool and resource. With
// d.MCP, the tools of bots' own MCP servers join the tool lists: on stdio
// those of stdioBot, over HTTP those of the one bot a session is limited to.
func NewMCPServer(version string, d tools.Deps, stdioBot string) *server.MCPServer {
	opts := []server.ServerOption{
		server.WithToolCapabilities(true),
		server.WithResourceCapabilities(false, true),
		server.WithInstructions(instructions),
		server.WithRecovery(),
		server.WithResourceRecovery(),
	}
	var fed *federation
	if d.MCP != nil {
		fed = newFederation(d, stdioBot)
		opts = append(opts, server.WithHooks(fed.hooks()))
	}
	s := server.NewMCPServer("berth", version, opts...)
	tools.Register(s, d)
	resources.Register(s, d.Manager, d.Skills)
	if fed != nil {
		fed.start(s)
	}
	return s
}
