// Package mcpserver assembles berth's MCP server: its tools and resources,
// the tools of the bots' own MCP servers (federation), the warnings sent to
// a bot's sessions, and the work every call passes through (audit, the
// per-caller limit, metrics) as tool and resource middleware, in one place.
// The transports serve what it builds; it knows nothing of stdio or HTTP.
package mcpserver

import (
	"context"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/remedy"
	"github.com/berth-dev/berth/resources"
	"github.com/berth-dev/berth/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

const instructions = `berth gives each bot its own long-lived Linux workspace (a container whose files persist).
Start with workspace_create for your bot_id (it is idempotent), then use the other workspace_* tools.`

// Option configures New.
type Option func(*options)

type options struct {
	audit    *audit.Logger
	maxCalls int
	botLog   *BotLog
	tasks    *Tasks
}

// WithAudit records every tool call and resource read in a.
func WithAudit(a *audit.Logger) Option {
	return func(o *options) { o.audit = a }
}

// WithCallLimit bounds the calls each token has in flight (n <= 0: the
// default); without it there is no bound.
func WithCallLimit(n int) Option {
	if n <= 0 {
		n = DefaultMaxCallsPerToken
	}
	return func(o *options) { o.maxCalls = n }
}

// WithBotLog declares the logging capability (logging/setLevel) and sends
// b's warnings to the sessions of their bot.
func WithBotLog(b *BotLog) Option {
	return func(o *options) { o.botLog = b }
}

// New builds the MCP server with every tool and resource. With d.MCP, the
// tools of bots' own MCP servers join the tool lists: on stdio those of
// stdioBot, over HTTP those of the one bot a session is limited to.
func New(version string, d tools.Deps, stdioBot string, opts ...Option) *server.MCPServer {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	sopts := append(o.middleware(d),
		server.WithToolCapabilities(true),
		server.WithResourceCapabilities(true, true),
		server.WithInstructions(instructions),
		server.WithRecovery(),
		server.WithResourceRecovery(),
	)
	if o.botLog != nil {
		sopts = append(sopts, server.WithLogging())
	}
	prompts := newSkillPrompts(d, stdioBot)
	sopts = append(sopts, prompts.serverOptions()...)
	sopts = append(sopts, server.WithCompletions(), server.WithResourceCompletionProvider(resources.NewCompletions(d.Manager, d.Skills)))
	if o.tasks != nil {
		sopts = append(sopts, o.tasks.serverOptions()...)
	}
	var fed *federation
	hooks := &server.Hooks{}
	if d.MCP != nil {
		fed = newFederation(d, stdioBot)
		hooks = fed.hooks()
	}
	sopts = append(sopts, server.WithHooks(hooks))
	s := server.NewMCPServer("berth", version, sopts...)
	tools.Register(s, d)
	resources.Register(s, hooks, d.Manager, d.Skills)
	prompts.attach(s, hooks)
	resources.RegisterLive(s, hooks, d.Manager, d.MCP, d.Logger)
	if o.botLog != nil {
		o.botLog.attach(s, hooks)
	}
	if fed != nil {
		fed.start(s)
	}
	if o.tasks != nil {
		o.tasks.attach(s, d)
	}
	return s
}

// middleware is what every tool call and resource read passes through,
// outermost first: the audit (so a refused or panicking call is recorded
// too), the per-caller limit, then the metrics (which count only the calls
// that ran) and the advice a failed read carries.
func (o options) middleware(d tools.Deps) []server.ServerOption {
	var opts []server.ServerOption
	if o.audit != nil {
		opts = append(opts, server.WithToolHandlerMiddleware(auditTools(o.audit)),
			server.WithResourceHandlerMiddleware(auditResources(o.audit)))
	}
	if o.maxCalls > 0 {
		l := newCallLimiter(o.maxCalls)
		opts = append(opts, server.WithToolHandlerMiddleware(l.tools()),
			server.WithResourceHandlerMiddleware(l.resources()))
	}
	if d.Metrics != nil {
		opts = append(opts, server.WithToolHandlerMiddleware(instrument(d.Metrics)))
	}
	return append(opts, server.WithResourceHandlerMiddleware(explainResources))
}

// explainResources gives a failed resource read the same advice a failed
// tool call gets (tools.Explain), keeping the error's class.
func explainResources(next server.ResourceHandlerFunc) server.ResourceHandlerFunc {
	return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		contents, err := next(ctx, req)
		if err != nil && remedy.Of(err) != remedy.None {
			err = &explained{err: err, text: tools.Explain(err)}
		}
		return contents, err
	}
}

type explained struct {
	err  error
	text string
}

func (e *explained) Error() string { return e.text }
func (e *explained) Unwrap() error { return e.err }
