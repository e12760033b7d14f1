package mcpserver

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Every tool call (federated ones included) and every resource read is
// audited here; the HTTP requests around them by the transports.

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
