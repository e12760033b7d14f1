package mcpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/mark3labs/mcp-go/mcp"
)

const tokenA = "token-a-0123456789abcdef"

// TestAuditRecordsDeniedToolCalls: a refusal by the tool's own
// authorization is recorded as denied, with the bot named, and no
// argument values are written.
func TestAuditRecordsDeniedToolCalls(t *testing.T) {
	var log bytes.Buffer
	a := audit.New(&log)
	h := auditTools(a)(func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if err := auth.FromContext(ctx).Allow(auth.ScopeExec, "bot-b"); err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		return mcp.NewToolResultError("exit 1: secret-output"), nil
	})
	p := (&auth.ScopedToken{Name: "a", Token: tokenA, Bots: []string{"bot-a"}}).Principal()
	req := mcp.CallToolRequest{}
	req.Params.Name = "exec"
	req.Params.Arguments = map[string]any{"bot_id": "bot-b", "command": "cat /secret-path"}
	h(auth.WithPrincipal(context.Background(), p), req)
	req.Params.Arguments = map[string]any{"bot_id": "bot-a", "command": "cat /secret-path"}
	h(auth.WithPrincipal(context.Background(), auth.Local("admin token")), req)
	var recs []audit.Record
	for dec := json.NewDecoder(bytes.NewReader(log.Bytes())); dec.More(); {
		var r audit.Record
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 2 || recs[0].Outcome != audit.Denied || recs[0].Bot != "bot-b" || recs[0].Token != "token:a" ||
		recs[1].Outcome != audit.Failed || recs[1].Bot != "bot-a" || recs[1].Token != "admin token" {
		t.Fatalf("records: %+v", recs)
	}
	if s := log.String(); strings.Contains(s, "secret") {
		t.Fatalf("the audit log holds argument values or output: %s", s)
	}
}
