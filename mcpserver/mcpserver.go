// Package transports serves berth's MCP server to clients: over stdio for
// one local client, and over streamable HTTP at /mcp for many, with bearer
// token auth, an Origin check, and /healthz and /readyz. It decides who a
// caller is; what a caller may do is decided by the tools.
package transports

import (
	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/resources"
	"github.com/berth-dev/berth/tools"
	"github.com/mark3labs/mcp-go/server"
)

const instructions = `berth gives each bot its own long-lived Linux workspace (a container whose files persist).
Start with workspace_create for your bot_id (it is idempotent), then use the other workspace_* tools.`

// Option configures NewMCPServer.
type Option func(*mcpOptions)

type mcpOptions struct {
	opts   []server.ServerOption
	botLog *BotLog
}

// WithAudit records every tool call and resource read in a. The audit
// middleware is outermost, so a call that panics is recorded as failed.
func WithAudit(a *audit.Logger) Option {
	return func(o *mcpOptions) {
		if a != nil {
			o.opts = append(o.opts, server.WithToolHandlerMiddleware(auditTools(a)),
				server.WithResourceHandlerMiddleware(auditResources(a)))
		}
	}
}

// NewMCPServer builds the MCP server with every tool and resource. With
// d.MCP, the tools of bots' own MCP servers join the tool lists: on stdio
// those of stdioBot, over HTTP those of the one bot a session is limited to.
func NewMCPServer(version string, d tools.Deps, stdioBot string, options ...Option) *server.MCPServer {
	var mo mcpOptions
	for _, o := range options {
		o(&mo)
	}
	opts := append(mo.opts,
		server.WithToolCapabilities(true),
		server.WithResourceCapabilities(false, true),
		server.WithInstructions(instructions),
		server.WithRecovery(),
		server.WithResourceRecovery(),
	)
	var fed *federation
	hooks := &server.Hooks{}
	if d.MCP != nil {
		fed = newFederation(d, stdioBot)
		hooks = fed.hooks()
	}
	opts = append(opts, server.WithHooks(hooks))
	s := server.NewMCPServer("berth", version, opts...)
	tools.Register(s, d)
	resources.Register(s, hooks, d.Manager, d.Skills)
	if mo.botLog != nil {
		mo.botLog.attach(s, hooks)
	}
	if fed != nil {
		fed.start(s)
	}
	return s
}
