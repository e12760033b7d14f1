package transports

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// The audit log is hooked in three places, each covering every member of
// its kind: a tool middleware (every tool, federated ones included), a
// resource middleware, and an HTTP middleware around every route. No tool
// or handler logs for itself.

// auditTools records every tool call: who, which bot, the outcome. An
// authorization refusal is a result whose text starts with
// auth.DeniedPrefix (the tools turn refusals into results a model sees).
func auditTools(a *audit.Logger) server.ToolHandlerMiddleware {
	return func(next server.ToolHandlerFunc) server.ToolHandlerFunc {
		return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			start := time.Now()
			res, err := next(ctx, req)
			rec := audit.Record{Kind: audit.KindTool, Tool: req.Params.Name, Outcome: audit.Allowed}
			p := auth.FromContext(ctx)
			rec.Token = principalID(p)
			rec.Bot = botArgument(req)
			if rec.Bot == "" && strings.Contains(req.Params.Name, "__") {
				rec.Bot = sessionBot(p) // a federated tool acts on the session's bot
			}
			switch {
			case err != nil || res == nil:
				rec.Outcome = audit.Failed
			case res.IsError && auth.IsDeniedText(resultText(res)):
				rec.Outcome, rec.Reason = audit.Denied, "not authorized"
			case res.IsError:
				rec.Outcome = audit.Failed
			}
			rec.DurationMS = audit.Since(start)
			a.Log(rec)
			return res, err
		}
	}
}

// auditResources records every resource read. The URI is not recorded
// (a file's path is an argument value), only the resource's kind.
func auditResources(a *audit.Logger) server.ResourceHandlerMiddleware {
	return func(next server.ResourceHandlerFunc) server.ResourceHandlerFunc {
		return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			start := time.Now()
			contents, err := next(ctx, req)
			rec := audit.Record{Kind: audit.KindResource, Outcome: audit.Allowed, Token: principalID(auth.FromContext(ctx))}
			rec.Bot, rec.Resource = resourceBotKind(req.Params.URI)
			switch {
			case auth.IsDenied(err):
				rec.Outcome, rec.Reason = audit.Denied, "not authorized"
			case err != nil:
				rec.Outcome = audit.Failed
			}
			rec.DurationMS = audit.Since(start)
			a.Log(rec)
			return contents, err
		}
	}
}

func principalID(p *auth.Principal) string {
	if p == nil {
		return ""
	}
	return p.ID
}

// botArgument reads only the bot_id argument of a call, never the others.
func botArgument(req mcp.CallToolRequest) string {
	var args struct {
		BotID any `json:"bot_id"`
	}
	if raw := req.Params.RawArguments; len(raw) > 0 {
		if json.Unmarshal(raw, &args) != nil {
			return ""
		}
	} else if m, ok := req.Params.Arguments.(map[string]any); ok {
		args.BotID = m["bot_id"]
	}
	s, _ := args.BotID.(string)
	return s
}

// resourceBotKind splits berth://bots/{bot}/{kind}/... into bot and kind.
func resourceBotKind(uri string) (bot, kind string) {
	rest, ok := strings.CutPrefix(uri, "berth://bots/")
	if !ok {
		return "", ""
	}
	bot, rest, _ = strings.Cut(rest, "/")
	kind, _, _ = strings.Cut(rest, "/")
	return bot, kind
}

func resultText(res *mcp.CallToolResult) string {
	for _, c := range res.Content {
		if t, ok := c.(mcp.TextContent); ok {
			return t.Text
		}
	}
	return ""
}

// httpAudit is the audit state of one HTTP request, filled in by the
// handlers it passes through (authenticate sets the token, guards mark a
// refusal).
type httpAudit struct {
	token  string
	denied bool
	reason string
}

type httpAuditKey struct{}

// markDenied records that r was refused for reason (a few fixed words,
// never a value from the request).
func markDenied(r *http.Request, reason string) {
	if st, ok := r.Context().Value(httpAuditKey{}).(*httpAudit); ok {
		st.denied, st.reason = true, reason
	}
}

func setAuditToken(r *http.Request, id string) {
	if st, ok := r.Context().Value(httpAuditKey{}).(*httpAudit); ok {
		st.token = id
	}
}

// auditHTTP records each request to a route: every one when all is set
// (the per-bot endpoints, /metrics), else only refused ones (/mcp, whose
// tool calls and resource reads have lines of their own). 401 and 403 are
// refusals; other statuses of 400 and above are failures.
func auditHTTP(a *audit.Logger, all bool, next http.Handler) http.Handler {
	if a == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		st := &httpAudit{}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), httpAuditKey{}, st)))
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		rec := audit.Record{
			Kind: audit.KindHTTP, Token: st.token, Bot: r.PathValue("bot_id"),
			Endpoint: r.Method + " " + routeOf(r), Status: status, Outcome: audit.Allowed,
		}
		switch {
		case st.denied:
			rec.Outcome, rec.Reason = audit.Denied, st.reason
		case status == http.StatusUnauthorized:
			rec.Outcome, rec.Reason = audit.Denied, "bad or missing token"
		case status == http.StatusForbidden:
			rec.Outcome, rec.Reason = audit.Denied, "not authorized"
		case status >= 400:
			rec.Outcome = audit.Failed
		}
		if !all && rec.Outcome != audit.Denied {
			return
		}
		rec.DurationMS = audit.Since(start)
		a.Log(rec)
	})
}

// routeOf is the pattern r matched, without its method: the route, not
// the path (which may carry a file's name).
func routeOf(r *http.Request) string {
	p := r.Pattern
	if i := strings.IndexByte(p, ' '); i >= 0 {
		p = p[i+1:]
	}
	if p == "" {
		p = r.URL.Path
	}
	return p
}

// statusWriter remembers the status of a response. It passes Flush (SSE
// streams) and Hijack (WebSockets) through.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the response cannot be hijacked")
	}
	if w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return hj.Hijack()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
