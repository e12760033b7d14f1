package mcpserver

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// BotLog passes berth's warnings about a bot's work (an MCP server of the
// bot that crashed and is restarted, a preserved /data that could not be
// restored) to the MCP sessions that may use that bot, as
// notifications/message at the level each session asked for with
// logging/setLevel. Warnings are found in berth's own log: a record at
// warning level or above that names a bot ("bot" attribute, or "server" as
// bot/name) is one. Everything else stays in berth's log only.
type BotLog struct {
	mu       sync.Mutex
	s        *server.MCPServer
	sessions map[string]botLogSession
}

type botLogSession struct {
	// p is the principal that opened the session; nil for the stdio
	// client, whose session is registered before its context is made and
	// which is the local user (every bot).
	p  *auth.Principal
	cs server.ClientSession
}

// NewBotLog makes a BotLog; WithBotLog connects it to the MCP server.
func NewBotLog() *BotLog {
	return &BotLog{sessions: map[string]botLogSession{}}
}

// Handler wraps h so that warnings about a bot also reach that bot's
// sessions.
func (b *BotLog) Handler(h slog.Handler) slog.Handler {
	return &botLogHandler{inner: h, log: b}
}

func (b *BotLog) attach(s *server.MCPServer, hooks *server.Hooks) {
	b.mu.Lock()
	b.s = s
	b.mu.Unlock()
	hooks.AddOnRegisterSession(func(ctx context.Context, cs server.ClientSession) {
		b.mu.Lock()
		b.sessions[cs.SessionID()] = botLogSession{p: auth.FromContext(ctx), cs: cs}
		b.mu.Unlock()
	})
	hooks.AddOnUnregisterSession(func(_ context.Context, cs server.ClientSession) {
		b.mu.Lock()
		delete(b.sessions, cs.SessionID())
		b.mu.Unlock()
	})
}

// send gives one warning about bot to the sessions that may use it and
// asked for its level.
func (b *BotLog) send(bot string, level mcp.LoggingLevel, data map[string]any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.s == nil {
		return
	}
	params := map[string]any{"level": level, "logger": "berth", "data": data}
	for id, sess := range b.sessions {
		if sess.p != nil && sess.p.Allow(auth.ScopeRead, bot) != nil {
			continue
		}
		logging, ok := sess.cs.(server.SessionWithLogging)
		if !ok || !sess.cs.Initialized() || !level.ShouldSendTo(logging.GetLogLevel()) {
			continue
		}
		// Non-blocking: a session that does not read its notifications
		// loses them, and berth's logging never waits for a client.
		_ = b.s.SendNotificationToSpecificClient(id, "notifications/message", params)
	}
}

type botLogHandler struct {
	inner slog.Handler
	log   *BotLog
	attrs []slog.Attr // from WithAttrs, outside any group
	group bool        // attributes from here on are in a group
}

func (h *botLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l) || l >= slog.LevelWarn
}

func (h *botLogHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if h.inner.Enabled(ctx, r.Level) {
		err = h.inner.Handle(ctx, r)
	}
	if r.Level < slog.LevelWarn {
		return err
	}
	data := map[string]any{"message": r.Message}
	bot := ""
	note := func(a slog.Attr) {
		v := a.Value.Resolve()
		data[a.Key] = v.String()
		switch a.Key {
		case "bot":
			bot = v.String()
		case "server":
			if b, _, ok := strings.Cut(v.String(), "/"); ok && bot == "" {
				bot = b
			}
		}
	}
	for _, a := range h.attrs {
		note(a)
	}
	if !h.group {
		r.Attrs(func(a slog.Attr) bool { note(a); return true })
	}
	if bot != "" {
		data["bot"] = bot
		level := mcp.LoggingLevelWarning
		if r.Level >= slog.LevelError {
			level = mcp.LoggingLevelError
		}
		h.log.send(bot, level, data)
	}
	return err
}

func (h *botLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(attrs)
	if !h.group {
		c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	}
	return &c
}

func (h *botLogHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	c.group = true
	return &c
}
