package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// complete asks c to complete argument name of the resource template uri
// given value and the arguments already chosen.
func complete(t *testing.T, c mcpClient, uri, name, value string, chosen map[string]string) (values []string, hasMore bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch c := c.(type) {
	case *mcpgoClient:
		req := mcpgo.CompleteRequest{}
		req.Params.Ref = mcpgo.ResourceReference{Type: "ref/resource", URI: uri}
		req.Params.Argument = mcpgo.CompleteArgument{Name: name, Value: value}
		req.Params.Context = mcpgo.CompleteContext{Arguments: chosen}
		res, err := c.c.Complete(ctx, req)
		if err != nil {
			t.Fatalf("complete %s %s=%q: %v", uri, name, value, err)
		}
		return res.Completion.Values, res.Completion.HasMore
	case *sdkClient:
		res, err := c.cs.Complete(ctx, &sdk.CompleteParams{
			Ref:      &sdk.CompleteReference{Type: "ref/resource", URI: uri},
			Argument: sdk.CompleteParamsArgument{Name: name, Value: value},
			Context:  &sdk.CompleteContext{Arguments: chosen},
		})
		if err != nil {
			t.Fatalf("complete %s %s=%q: %v", uri, name, value, err)
		}
		return res.Completion.Values, res.Completion.HasMore
	}
	t.Fatalf("unknown client %T", c)
	return nil, false
}

// TestCompletionsScoped: completion/complete of the resource templates'
// arguments (bot ids, snapshot versions, skills, paths one directory at a
// time, capped with hasMore) with both clients, and a token limited to
// one bot never gets the other bot's id, versions or paths.
func TestCompletionsScoped(t *testing.T) {
	e := newEnv(t)
	const tokA, tokB = "comp-a-0123456789abcdef", "comp-b-0123456789abcdef"
	tokens := fmt.Sprintf("tokens:\n  - {name: a, token: %s, bots: [compa], scopes: [read]}\n  - {name: b, token: %s, bots: [compb], scopes: [read]}\n", tokA, tokB)
	e.useTokens(tokens)
	b := e.serveHTTP()
	admin := e.httpMcpgo(b)
	for _, bot := range []string{"compa", "compb"} {
		mustCall(t, admin, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	}
	e.execIn(t, "compa", "sh", "-c", "mkdir -p /data/notes/sub && touch /data/notes/one.txt /data/notes/two.txt /data/notes/other && for i in $(seq 1 150); do touch /data/notes/many$i; done")
	mustCall(t, admin, "snapshot_create", map[string]any{"bot_id": "compa"}).decode(t, &struct{}{})
	mustCall(t, admin, "skills_upsert", map[string]any{"bot_id": "compa", "skills": []string{skillMD("deploy", "ship it")}}).decode(t, &struct{}{})

	const files, snapshot, skill = "berth://bots/{bot_id}/files/{+path}", "berth://bots/{bot_id}/snapshots/{version}", "berth://bots/{bot_id}/skills/{name}"
	for _, kind := range []string{"mcpgo", "gosdk"} {
		t.Run(kind, func(t *testing.T) {
			a := e.netClient(kind, b.URL, tokA, nil)
			bc := e.netClient(kind, b.URL, tokB, nil)
			all := e.netClient(kind, b.URL, b.Token, nil)

			if got, _ := complete(t, all, files, "bot_id", "comp", nil); !slices.Equal(got, []string{"compa", "compb"}) {
				t.Errorf("admin's bot ids: %q", got)
			}
			if got, _ := complete(t, a, files, "bot_id", "", nil); !slices.Equal(got, []string{"compa"}) {
				t.Errorf("token a's bot ids: %q", got)
			}
			if got, _ := complete(t, bc, files, "bot_id", "comp", nil); !slices.Equal(got, []string{"compb"}) {
				t.Errorf("token b's bot ids: %q", got)
			}

			onA := map[string]string{"bot_id": "compa"}
			if got, _ := complete(t, a, snapshot, "version", "", onA); !slices.Equal(got, []string{"1"}) {
				t.Errorf("versions: %q", got)
			}
			if got, _ := complete(t, a, skill, "name", "de", onA); !slices.Equal(got, []string{"deploy"}) {
				t.Errorf("skills: %q", got)
			}
			if got, more := complete(t, a, files, "path", "data/notes/", onA); len(got) != 100 || !more {
				t.Errorf("a directory of 154 entries: %d values, hasMore %v", len(got), more)
			}
			if got, more := complete(t, a, files, "path", "data/notes/s", onA); !slices.Equal(got, []string{"data/notes/sub/"}) || more {
				t.Errorf("paths under data/notes/s: %q %v", got, more)
			}
			if got, _ := complete(t, a, files, "path", "data/notes/o", onA); !slices.Equal(got, []string{"data/notes/one.txt", "data/notes/other"}) {
				t.Errorf("paths under data/notes/o: %q", got)
			}

			// Token b asks about bot a: nothing, as for a bot that is not there.
			for _, q := range []struct{ uri, name, value string }{
				{files, "path", "data/notes/"}, {snapshot, "version", ""}, {skill, "name", ""},
			} {
				if got, more := complete(t, bc, q.uri, q.name, q.value, onA); len(got) != 0 || more {
					t.Errorf("token b completed %s of compa: %q", q.name, got)
				}
			}
		})
	}
}
