package mcpserver

import (
	"context"
	"slices"
	"sync"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// federation keeps the tools of bots' own MCP servers in the tool lists of
// berth's sessions, and tells each session when its list changed.
//
// Which bot's tools a session sees: on stdio the --bot flag's; over HTTP
// the one bot the session's principal is limited to (a token for one bot,
// or /mcp?bot=ID); on 2026-07-28, which has no sessions, the one bot of
// each request's principal. A session that may use many bots sees none,
// because the same federated name can belong to different bots.
type federation struct {
	s *server.MCPServer
	d tools.Deps

	mu sync.Mutex
	// stdioBot is the bot of the stdio session, whose tools are global
	// (the stdio session cannot hold tools of its own).
	stdioBot   string
	stdioNames []string
	sessions   map[string]fedSession // HTTP session id → its bot
	// listeners are the subscriptions/listen streams of 2026-07-28
	// requests limited to one bot, which have no session: → their bot.
	listeners map[server.ClientSession]string
}

type fedSession struct {
	bot     string
	session server.SessionWithTools
}

func newFederation(d tools.Deps, stdioBot string) *federation {
	return &federation{d: d, stdioBot: stdioBot, sessions: map[string]fedSession{}, listeners: map[server.ClientSession]string{}}
}

// hooks wires the federation into s's session life.
func (f *federation) hooks() *server.Hooks {
	h := &server.Hooks{}
	h.AddOnRegisterSession(func(ctx context.Context, cs server.ClientSession) {
		st, ok := cs.(server.SessionWithTools)
		bot := sessionBot(auth.FromContext(ctx))
		if !ok || bot == "" {
			return
		}
		f.mu.Lock()
		f.sessions[cs.SessionID()] = fedSession{bot: bot, session: st}
		f.mu.Unlock()
		f.apply(bot)
	})
	h.AddOnUnregisterSession(func(_ context.Context, cs server.ClientSession) {
		f.mu.Lock()
		delete(f.sessions, cs.SessionID())
		f.mu.Unlock()
	})
	h.AddBeforeAny(func(ctx context.Context, _ any, method mcp.MCPMethod, _ any) {
		if server.IsModernRequest(ctx) {
			f.modern(ctx, method)
		}
	})
	return h
}

// modern gives a 2026-07-28 request limited to one bot what a session of
// that bot has: the bot's tools, on the request's own session (the
// transport gives every modern request one of its own), and list_changed
// on its subscriptions/listen stream for as long as the stream is open.
func (f *federation) modern(ctx context.Context, method mcp.MCPMethod) {
	bot := sessionBot(auth.FromContext(ctx))
	cs := server.ClientSessionFromContext(ctx)
	if bot == "" || cs == nil {
		return
	}
	switch method {
	case mcp.MethodToolsList, mcp.MethodToolsCall:
		if st, ok := cs.(server.SessionWithTools); ok {
			st.SetSessionTools(toolSet(tools.FederatedTools(f.d, bot)))
		}
	case mcp.MethodSubscriptionsListen:
		f.mu.Lock()
		f.listeners[cs] = bot
		f.mu.Unlock()
		go func() {
			<-ctx.Done() // the stream's end
			f.mu.Lock()
			delete(f.listeners, cs)
			f.mu.Unlock()
		}()
	}
}

func toolSet(fed []server.ServerTool) map[string]server.ServerTool {
	set := make(map[string]server.ServerTool, len(fed))
	for _, t := range fed {
		set[t.Tool.Name] = t
	}
	return set
}

// notifyListener sends list_changed on a subscriptions/listen stream that
// asked for it; a stream too far behind misses it, as a session would.
func notifyListener(cs server.ClientSession) {
	fs, ok := cs.(server.SessionWithSubscriptionFilter)
	if !ok {
		return
	}
	if filter, active := fs.SubscriptionFilter(); !active || !filter.ToolsListChanged {
		return
	}
	n := mcp.JSONRPCNotification{JSONRPC: mcp.JSONRPC_VERSION,
		Notification: mcp.Notification{Method: string(mcp.MethodNotificationToolsListChanged)}}
	select {
	case cs.NotificationChannel() <- n:
	default:
	}
}

// sessionBot is the one bot p is limited to, or "".
func sessionBot(p *auth.Principal) string {
	if p == nil || len(p.Bots) != 1 {
		return ""
	}
	for bot := range p.Bots {
		return bot
	}
	return ""
}

// start binds the federation to s and follows the supervisor's changes.
func (f *federation) start(s *server.MCPServer) {
	f.s = s
	f.d.MCP.OnToolsChanged(f.apply)
	if f.stdioBot != "" {
		f.apply(f.stdioBot)
	}
}

// apply puts bot's current federated tools into every session that sees
// that bot, and tells them.
func (f *federation) apply(bot string) {
	if f.s == nil {
		return
	}
	fed := tools.FederatedTools(f.d, bot)
	names := make([]string, 0, len(fed))
	for _, t := range fed {
		names = append(names, t.Tool.Name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if bot == f.stdioBot {
		var gone []string
		for _, n := range f.stdioNames {
			if !slices.Contains(names, n) {
				gone = append(gone, n)
			}
		}
		f.stdioNames = names
		if len(gone) > 0 {
			f.s.DeleteTools(gone...)
		}
		// AddTools replaces tools of the same name and sends list_changed.
		if len(fed) > 0 {
			f.s.AddTools(fed...)
		}
	}
	for id, fs := range f.sessions {
		if fs.bot != bot {
			continue
		}
		fs.session.SetSessionTools(toolSet(fed))
		if fs.session.Initialized() {
			_ = f.s.SendNotificationToSpecificClient(id, "notifications/tools/list_changed", nil)
		}
	}
	for cs, b := range f.listeners {
		if b == bot {
			notifyListener(cs)
		}
	}
}
