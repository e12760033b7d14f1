package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// promptClient is a client that watches notifications/prompts/list_changed.
type promptClient struct {
	mcpClient
	changed chan struct{}
	heard   atomic.Int64
}

// promptsClient connects the kind of client to url with token.
func (e *env) promptsClient(kind, url, token string) *promptClient {
	e.t.Helper()
	hc := &http.Client{Transport: bearer{token: token}}
	if kind == "mcpgo" {
		// 2025-11-25: notifications come with the next request's response;
		// 2026-07-28: on the subscriptions/listen stream.
		tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPBasicClient(hc))
		if err != nil {
			e.t.Fatal(err)
		}
		return e.promptsOver(kind, tr, nil)
	}
	return e.promptsOver(kind, nil, &sdk.StreamableClientTransport{Endpoint: url, HTTPClient: hc})
}

// promptsStdio runs `berth serve --stdio --bot bot` under the kind of client.
func (e *env) promptsStdio(kind, bot string) *promptClient {
	e.t.Helper()
	args := append(append([]string{"serve", "--stdio"}, e.args()...), "--bot", bot)
	if kind == "mcpgo" {
		tr := transport.NewStdioWithOptions(berthBin, nil, args, transport.WithCommandStderrWriter(e.logWriter("berth-stdio")))
		if err := tr.Start(context.Background()); err != nil {
			e.t.Fatal(err)
		}
		return e.promptsOver(kind, tr, nil)
	}
	cmd := exec.Command(berthBin, args...)
	cmd.Stderr = e.logWriter("berth-stdio")
	return e.promptsOver(kind, nil, &sdk.CommandTransport{Command: cmd})
}

// promptsOver connects mcp-go over tr or the go-sdk over sdkTr, counting
// the prompts/list_changed it hears; on 2026-07-28 mcp-go opens its
// subscriptions/listen stream and waits until it is acknowledged.
func (e *env) promptsOver(kind string, tr transport.Interface, sdkTr sdk.Transport) *promptClient {
	e.t.Helper()
	pc := &promptClient{changed: make(chan struct{}, 64)}
	signal := func() {
		pc.heard.Add(1)
		select {
		case pc.changed <- struct{}{}:
		default:
		}
	}
	if kind != "mcpgo" {
		pc.mcpClient = e.connectSDK(sdkTr, func(o *sdk.ClientOptions) {
			o.PromptListChangedHandler = func(context.Context, *sdk.PromptListChangedRequest) { signal() }
		})
		return pc
	}
	c := mcpclient.NewClient(tr)
	acked := make(chan struct{}, 1)
	c.OnNotification(func(n mcpgo.JSONRPCNotification) {
		switch n.Method {
		case "notifications/prompts/list_changed":
			signal()
		case string(mcpgo.MethodNotificationSubscriptionsAcknowledged):
			select {
			case acked <- struct{}{}:
			default:
			}
		}
	})
	pc.mcpClient = newMcpgoClient(e.t, c)
	if _, ok := tr.(*transport.StreamableHTTP); !ok {
		return pc // stdio: notifications need no stream
	}
	if stop, err := c.ListenAsync(context.Background(), mcpgo.SubscriptionFilter{PromptsListChanged: true}, nil); err == nil {
		e.t.Cleanup(stop)
		select {
		case <-acked:
		case <-time.After(time.Minute):
			e.t.Fatal("no subscriptions/acknowledged on the listen stream")
		}
	}
	return pc
}

type promptInfo struct{ name, description string }

func (pc *promptClient) list(t *testing.T) []promptInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := []promptInfo{}
	switch c := pc.mcpClient.(type) {
	case *mcpgoClient:
		res, err := c.c.ListPrompts(ctx, mcpgo.ListPromptsRequest{})
		if err != nil {
			t.Fatalf("prompts/list: %v", err)
		}
		for _, p := range res.Prompts {
			out = append(out, promptInfo{p.Name, p.Description})
		}
	case *sdkClient:
		res, err := c.cs.ListPrompts(ctx, nil)
		if err != nil {
			t.Fatalf("prompts/list: %v", err)
		}
		for _, p := range res.Prompts {
			out = append(out, promptInfo{p.Name, p.Description})
		}
	}
	return out
}

func (pc *promptClient) get(t *testing.T, name string, args map[string]string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var b strings.Builder
	switch c := pc.mcpClient.(type) {
	case *mcpgoClient:
		req := mcpgo.GetPromptRequest{}
		req.Params.Name, req.Params.Arguments = name, args
		res, err := c.c.GetPrompt(ctx, req)
		if err != nil {
			return "", err
		}
		for _, m := range res.Messages {
			if tc, ok := m.Content.(mcpgo.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
	case *sdkClient:
		res, err := c.cs.GetPrompt(ctx, &sdk.GetPromptParams{Name: name, Arguments: args})
		if err != nil {
			return "", err
		}
		for _, m := range res.Messages {
			if tc, ok := m.Content.(*sdk.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
	}
	return b.String(), nil
}

// waitFor waits until a prompts/list_changed came after heard (the
// count before the change) and the list is want. It lists on each
// notification, and every 100 ms besides: a 2025 mcp-go client without a
// GET stream hears notifications only with a response.
func (pc *promptClient) waitFor(t *testing.T, heard int64, want []promptInfo) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := pc.list(t)
		if slices.Equal(got, want) && pc.heard.Load() > heard {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("want prompts %v after a list_changed (heard %d, %d before the change); the list is %v", want, pc.heard.Load(), heard, got)
		}
		select {
		case <-pc.changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestPromptsFromSkills: a session limited to one bot (by its token or by
// /mcp?bot=) gets that bot's effective skills as prompts, with both
// clients; another bot's session gets its own skill of the same name, a
// session for many bots none; adding and removing a skill sends
// prompts/list_changed and the new list.
func TestPromptsFromSkills(t *testing.T) {
	e := newEnv(t)
	const tokP, tokO = "prompt-p-0123456789abcdef", "prompt-o-0123456789abcdef"
	tokens := fmt.Sprintf("tokens:\n  - {name: p, token: %s, bots: [promptbot], scopes: [read, write]}\n  - {name: o, token: %s, bots: [otherbot], scopes: [read]}\n", tokP, tokO)
	e.useTokens(tokens)
	b := e.serveHTTP()
	admin := e.httpMcpgo(b)
	for bot, desc := range map[string]string{"promptbot": "ship it", "otherbot": "the other deploy"} {
		mustCall(t, admin, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
		mustCall(t, admin, "skills_upsert", map[string]any{"bot_id": bot, "skills": []string{skillMD("deploy", desc)}}).decode(t, &struct{}{})
	}
	mustCall(t, admin, "skills_upsert", map[string]any{"bot_id": "promptbot", "skills": []string{skillMD("off", "disabled")}}).decode(t, &struct{}{})
	mustCall(t, admin, "skills_action", map[string]any{"bot_id": "promptbot", "name": "off", "action": "disable"}).decode(t, &struct{}{})

	deploy := promptInfo{"deploy", "ship it"}
	for _, kind := range []string{"mcpgo", "gosdk"} {
		t.Run(kind, func(t *testing.T) {
			byToken := e.promptsClient(kind, b.URL, tokP)
			byQuery := e.promptsClient(kind, b.URL+"?bot=promptbot", b.Token)
			other := e.promptsClient(kind, b.URL, tokO)
			many := e.promptsClient(kind, b.URL, b.Token)

			for name, c := range map[string]*promptClient{"token": byToken, "?bot=": byQuery} {
				if got := c.list(t); !slices.Equal(got, []promptInfo{deploy}) {
					t.Fatalf("session limited by %s: prompts %v", name, got)
				}
			}
			text, err := byToken.get(t, "deploy", map[string]string{"task": "to staging"})
			if err != nil || !strings.Contains(text, "description: ship it") || !strings.Contains(text, "to staging") {
				t.Errorf("prompts/get deploy: %q %v", text, err)
			}
			if got := other.list(t); !slices.Equal(got, []promptInfo{{"deploy", "the other deploy"}}) {
				t.Errorf("other bot's prompts: %v", got)
			}
			if text, err := other.get(t, "deploy", nil); err != nil || !strings.Contains(text, "the other deploy") || strings.Contains(text, "ship it") {
				t.Errorf("other bot's deploy: %q %v", text, err)
			}
			if got := many.list(t); len(got) != 0 {
				t.Errorf("a session for many bots got prompts: %v", got)
			}
			if _, err := many.get(t, "deploy", nil); err == nil {
				t.Error("a session for many bots got a bot's prompt")
			}

			// A skill added and removed (the bot's own call): list_changed and the new list.
			review := promptInfo{"review", "read it " + kind}
			tokHeard, queryHeard := byToken.heard.Load(), byQuery.heard.Load()
			mustCall(t, byToken, "skills_upsert", map[string]any{"bot_id": "promptbot", "skills": []string{skillMD(review.name, review.description)}}).decode(t, &struct{}{})
			byToken.waitFor(t, tokHeard, []promptInfo{deploy, review})
			byQuery.waitFor(t, queryHeard, []promptInfo{deploy, review})
			tokHeard = byToken.heard.Load()
			mustCall(t, byToken, "skills_delete", map[string]any{"bot_id": "promptbot", "name": "review"})
			byToken.waitFor(t, tokHeard, []promptInfo{deploy})
			if got := other.list(t); !slices.Equal(got, []promptInfo{{"deploy", "the other deploy"}}) {
				t.Errorf("other bot's prompts after promptbot's changed: %v", got)
			}
		})
	}
}

// TestPromptsStdio: on stdio, --bot makes the session one bot's: its
// skills are prompts once its workspace runs, and a skill added is
// announced.
func TestPromptsStdio(t *testing.T) {
	e := newEnv(t)
	for _, kind := range []string{"mcpgo", "gosdk"} {
		t.Run(kind, func(t *testing.T) {
			bot := "sp-" + kind
			c := e.promptsStdio(kind, bot)
			defer c.close()
			if got := c.list(t); len(got) != 0 {
				t.Fatalf("prompts of a bot without a workspace: %v", got)
			}
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
			heard := c.heard.Load()
			mustCall(t, c, "skills_upsert", map[string]any{"bot_id": bot, "skills": []string{skillMD("lint", "check it")}}).decode(t, &struct{}{})
			c.waitFor(t, heard, []promptInfo{{"lint", "check it"}})
			if text, err := c.get(t, "lint", nil); err != nil || !strings.Contains(text, "description: check it") {
				t.Errorf("prompts/get lint: %q %v", text, err)
			}
		})
	}
}

// TestPromptsAfterCommands: a skill the bot makes with its own shell
// command is announced too, without the session listing again.
func TestPromptsAfterCommands(t *testing.T) {
	e := newEnv(t)
	for _, kind := range []string{"mcpgo", "gosdk"} {
		t.Run(kind, func(t *testing.T) {
			bot := "sc-" + kind
			c := e.promptsStdio(kind, bot)
			defer c.close()
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
			if got := c.list(t); len(got) != 0 {
				t.Fatalf("prompts of a new workspace: %v", got)
			}
			for len(c.changed) > 0 {
				<-c.changed // only what the command causes counts
			}
			heard := c.heard.Load()
			md := strings.ReplaceAll(skillMD("made", "by hand"), "\n", `\n`)
			execute(t, c, bot, map[string]any{"command": `mkdir -p /data/skills/made && printf '` + md + `' > /data/skills/made/SKILL.md`})
			select {
			case <-c.changed:
			case <-time.After(time.Minute):
				t.Fatalf("no prompts/list_changed within a minute of the command (heard %d, %d before)", c.heard.Load(), heard)
			}
			if got := c.list(t); !slices.Equal(got, []promptInfo{{"made", "by hand"}}) {
				t.Fatalf("prompts after the command: %v", got)
			}
		})
	}
}

// TestPromptsOtherBotsQuiet: one bot's skill changes reach the sessions of
// other bots at most as one prompts/list_changed for a name the server has
// not served before: a skill switched off and on again and again is not
// heard elsewhere, and a bot's own session hears a new name and a name
// another bot already has alike (once), so it cannot tell them apart.
func TestPromptsOtherBotsQuiet(t *testing.T) {
	e := newEnv(t)
	const tokA, tokB = "quiet-a-0123456789abcdef", "quiet-b-0123456789abcdef"
	tokens := fmt.Sprintf("tokens:\n  - {name: a, token: %s, bots: [alpha], scopes: [read, write]}\n  - {name: b, token: %s, bots: [bravo], scopes: [read, write]}\n", tokA, tokB)
	e.useTokens(tokens)
	b := e.serveHTTP()
	admin := e.httpMcpgo(b)
	for _, bot := range []string{"alpha", "bravo"} {
		mustCall(t, admin, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	}
	a, a2, bb := e.promptsClient("gosdk", b.URL, tokA), e.promptsClient("gosdk", b.URL, tokA), e.promptsClient("gosdk", b.URL, tokB)
	for _, c := range []*promptClient{a, a2, bb} {
		if got := c.list(t); len(got) != 0 {
			t.Fatalf("prompts of a new workspace: %v", got)
		}
	}
	upsert := func(c *promptClient, bot, name string) {
		t.Helper()
		mustCall(t, c, "skills_upsert", map[string]any{"bot_id": bot, "skills": []string{skillMD(name, "d")}}).decode(t, &struct{}{})
	}
	// A change of alpha's own that a2 hears, after all that came before it.
	var mine []promptInfo
	barrier := func(name string) {
		t.Helper()
		heard := a2.heard.Load()
		upsert(a, "alpha", name)
		mine = append(mine, promptInfo{name, "d"})
		slices.SortFunc(mine, func(x, y promptInfo) int { return strings.Compare(x.name, y.name) })
		a2.waitFor(t, heard, mine)
	}

	upsert(bb, "bravo", "flip")
	barrier("mine1")
	before := a2.heard.Load()
	for range 5 {
		for _, action := range []string{"disable", "enable"} {
			mustCall(t, bb, "skills_action", map[string]any{"bot_id": "bravo", "name": "flip", "action": action}).decode(t, &struct{}{})
		}
	}
	barrier("mine2")
	if got := a2.heard.Load() - before; got != 1 {
		t.Errorf("alpha's session heard %d prompts/list_changed while bravo switched a skill off and on 5 times, then alpha added one; want 1", got)
	}

	// A name bravo has, then a name nobody has: one notification each.
	before = a2.heard.Load()
	barrier("flip")
	barrier("fresh")
	barrier("mine3")
	if got := a2.heard.Load() - before; got != 3 {
		t.Errorf("alpha's second session heard %d prompts/list_changed for 3 new skills of alpha (one named like bravo's); want 3", got)
	}
}
