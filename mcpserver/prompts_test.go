package mcpserver

import (
	"context"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestSkillsMayHaveChanged: which finished calls make berth read a bot's
// skills again, and when. A call refused or failed, or on a bot the caller
// may not read, makes it read nothing (another token's refused exec on a
// bot made berth read that bot's skills and tell its sessions).
func TestSkillsMayHaveChanged(t *testing.T) {
	onlyB := auth.WithPrincipal(context.Background(), &auth.Principal{Name: "b", ID: "token:b",
		Scopes: map[auth.Scope]bool{auth.ScopeRead: true, auth.ScopeExec: true, auth.ScopeWrite: true}, Bots: map[string]bool{"bravo": true}})
	call := func(tool, bot string) mcp.CallToolRequest {
		var req mcp.CallToolRequest
		req.Params.Name = tool
		req.Params.Arguments = map[string]any{"bot_id": bot}
		return req
	}
	ok, failed := mcp.NewToolResultText("done"), mcp.NewToolResultError("permission denied: not your bot")
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		req       mcp.CallToolRequest
		res       *mcp.CallToolResult
		wantBot   string
		wantLater bool
	}{
		{"own exec: later", onlyB, call("exec", "bravo"), ok, "bravo", true},
		{"own terminal_send: later", onlyB, call("terminal_send", "bravo"), ok, "bravo", true},
		{"own fs_write: now", onlyB, call("fs_write", "bravo"), ok, "bravo", false},
		{"a read changes nothing", onlyB, call("fs_read", "bravo"), ok, "", false},
		{"refused exec on another bot", onlyB, call("exec", "alpha"), failed, "", false},
		{"exec on another bot that somehow succeeded", onlyB, call("exec", "alpha"), ok, "", false},
		{"failed skills_upsert", onlyB, call("skills_upsert", "bravo"), failed, "", false},
		{"no principal", context.Background(), call("exec", "bravo"), ok, "", false},
		{"no bot", onlyB, call("exec", ""), ok, "", false},
		{"no result", onlyB, call("exec", "bravo"), nil, "", false},
	} {
		bot, later := skillsMayHaveChanged(tc.ctx, tc.req, tc.res)
		if bot != tc.wantBot || (bot != "" && later != tc.wantLater) {
			t.Errorf("%s: bot %q later %v; want %q %v", tc.name, bot, later, tc.wantBot, tc.wantLater)
		}
	}
}
