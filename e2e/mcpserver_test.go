package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// newMCPEnv is an env whose default image holds the stdio MCP server
// fixture at testenv.MCPFixturePath.
func newMCPEnv(t testing.TB) *env {
	e := newEnv(t)
	e.image = testenv.ImportArchive(t, e.address, e.namespace, testenv.MCPArchive(t))
	return e
}

// botURL is b's /mcp for a session limited to bot.
func (b *berthHTTP) botURL(bot string) string { return b.URL + "?bot=" + bot }

// proxyURL is the proxy endpoint of a bot's server.
func (b *berthHTTP) proxyURL(bot, name string) string {
	return strings.TrimSuffix(b.URL, "/mcp") + "/bots/" + bot + "/mcp/" + name
}

// mcpgoAt connects mcp-go's streamable HTTP client to url; it answers
// elicitation and sampling requests with answer.
func (e *env) mcpgoAt(url, token, answer string) mcpClient {
	e.t.Helper()
	// The token goes in through the HTTP client: mcp-go v1.2.1 leaves
	// WithHTTPHeaders off the DELETE that ends a session.
	tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPBasicClient(&http.Client{Transport: bearer{token: token}}))
	if err != nil {
		e.t.Fatal(err)
	}
	c := mcpclient.NewClient(tr, mcpclient.WithElicitationHandler(answerer(answer)), mcpclient.WithSamplingHandler(answerer(answer)))
	return newMcpgoClient(e.t, c)
}

// answerer answers the server's elicitation with {"answer": a} and its
// sampling with the text "sampled <a>".
type answerer string

func (a answerer) Elicit(context.Context, mcpgo.ElicitationRequest) (*mcpgo.ElicitationResult, error) {
	return &mcpgo.ElicitationResult{ElicitationResponse: mcpgo.ElicitationResponse{
		Action: mcpgo.ElicitationResponseActionAccept, Content: map[string]any{"answer": string(a)},
	}}, nil
}

func (a answerer) CreateMessage(context.Context, mcpgo.CreateMessageRequest) (*mcpgo.CreateMessageResult, error) {
	return &mcpgo.CreateMessageResult{Model: "test", SamplingMessage: mcpgo.SamplingMessage{
		Role: mcpgo.RoleAssistant, Content: mcpgo.NewTextContent("sampled " + string(a)),
	}}, nil
}

// sdkAt connects the go-sdk's streamable HTTP client to url; it answers
// elicitation requests with {"answer": answer}.
func (e *env) sdkAt(url, token, answer string) mcpClient {
	e.t.Helper()
	return e.connectSDK(&sdk.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearer{token: token}}},
		func(o *sdk.ClientOptions) {
			o.ElicitationHandler = func(context.Context, *sdk.ElicitRequest) (*sdk.ElicitResult, error) {
				return &sdk.ElicitResult{Action: "accept", Content: map[string]any{"answer": answer}}, nil
			}
			//lint:ignore SA1019 bots' servers still sample; the proxy must carry it
			o.CreateMessageHandler = func(context.Context, *sdk.CreateMessageRequest) (*sdk.CreateMessageResult, error) {
				//lint:ignore SA1019 as above
				return &sdk.CreateMessageResult{Model: "test", Role: "assistant", Content: &sdk.TextContent{Text: "sampled " + answer}}, nil
			}
		})
}

// mcpServerInfo is the part of mcp_server_list's entries the tests read.
type mcpServerInfo struct {
	Name      string   `json:"name"`
	State     string   `json:"state"`
	Reason    string   `json:"reason"`
	PID       int      `json:"pid"`
	Restarts  int      `json:"restarts"`
	ToolCount int      `json:"tool_count"`
	Tools     []string `json:"tools"`
	Stderr    []string `json:"stderr_tail"`
}

func listServers(t *testing.T, c mcpClient, bot string) []mcpServerInfo {
	t.Helper()
	var out struct {
		Servers []mcpServerInfo `json:"servers"`
	}
	mustCall(t, c, "mcp_server_list", map[string]any{"bot_id": bot}).decode(t, &out)
	return out.Servers
}

// waitServer polls mcp_server_list until ok accepts the named server.
func waitServer(t *testing.T, c mcpClient, bot, name string, ok func(mcpServerInfo) bool) mcpServerInfo {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last mcpServerInfo
	for time.Now().Before(deadline) {
		for _, s := range listServers(t, c, bot) {
			if s.Name == name {
				last = s
				if ok(s) {
					return s
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("MCP server %s never reached the expected state; last: %+v", name, last)
	return last
}

// waitTools polls the tool list until ok accepts it.
func waitTools(t *testing.T, c mcpClient, ok func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var names []string
	for time.Now().Before(deadline) {
		var err error
		names, err = c.toolNames(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ok(names) {
			return names
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("tool list never reached the expected state: %v", names)
	return nil
}

// fixtureProcs counts the fixture processes running in the workspace.
func (e *env) fixtureProcs(t *testing.T, bot string) int {
	t.Helper()
	out := e.execIn(t, bot, "sh", "-c", "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | tr '/' '\\n' | grep -c '^mcp-fixture' || true")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("count fixture processes: %q", out)
	}
	return n
}

var clientToolName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// TestMCPServerFederation registers the fixture as a bot's MCP server and
// drives its federated tools through both clients: names, calls inside the
// workspace, progress, list_changed, a crash and its restart, a berth
// restart, and removal.
func TestMCPServerFederation(t *testing.T) {
	e := newMCPEnv(t)
	const bot = "fed"
	// A token limited to this bot: its sessions see the bot's servers'
	// tools without ?bot=.
	const botToken = "fed-only-token-0123456789"
	tokens := filepath.Join(e.stateDir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("tokens:\n  - name: fed\n    token: "+botToken+"\n    bots: [fed]\n    scopes: [read, exec]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.extra = append(e.extra, "--tokens-file", tokens)
	b := e.serveHTTP()
	admin := e.httpSDK(b)
	mustCall(t, admin, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	mustCall(t, admin, "fs_write", map[string]any{"bot_id": bot, "path": "/data/hello.txt", "content": "hello from the workspace"}).decode(t, &struct{}{})

	// Bad registrations change nothing.
	for _, bad := range []map[string]any{
		{"bot_id": bot, "name": "my_server", "command": testenv.MCPFixturePath},
		{"bot_id": bot, "name": "fx", "command": ""},
		{"bot_id": "no-such-bot", "name": "fx", "command": testenv.MCPFixturePath},
	} {
		if res := mustCall(t, admin, "mcp_server_add", bad); !res.IsError {
			t.Fatalf("mcp_server_add %v succeeded: %s", bad, res.Text)
		}
	}

	clients := map[string]mcpClient{
		"mcp-go": e.mcpgoAt(b.botURL(bot), b.Token, "fed mcp-go"),
		"go-sdk": e.sdkAt(b.botURL(bot), b.Token, "fed go-sdk"),
	}
	before := map[string]int64{}
	for name, c := range clients {
		before[name] = c.listChanges()
	}

	var added struct {
		Server mcpServerInfo `json:"server"`
	}
	mustCall(t, admin, "mcp_server_add", map[string]any{
		"bot_id": bot, "name": "fx", "command": testenv.MCPFixturePath,
		"env": map[string]string{"FIXTURE_TAG": "shared", "FIXTURE_LONG_TOOL": "1"},
	}).decode(t, &added)
	if added.Server.State != "ready" || added.Server.PID == 0 || added.Server.ToolCount < 9 {
		t.Fatalf("after mcp_server_add: %+v", added.Server)
	}
	// The admin session may use every bot, so it sees no federated tools.
	if names, _ := admin.toolNames(context.Background()); slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "fx__") }) {
		t.Fatalf("a session for every bot lists federated tools: %v", names)
	}

	var firstNames []string
	for name, c := range clients {
		t.Run(name, func(t *testing.T) {
			names := waitTools(t, c, func(n []string) bool { return slices.Contains(n, "fx__echo") })
			if c.listChanges() <= before[name] {
				t.Errorf("no tools/list_changed after mcp_server_add")
			}
			seen := map[string]bool{}
			for _, n := range names {
				if !clientToolName.MatchString(n) || seen[n] {
					t.Errorf("tool name %q is invalid for clients or listed twice", n)
				}
				seen[n] = true
			}
			for _, want := range []string{"workspace_create", "mcp_server_add", "fx__echo", "fx__readfile", "fx__progress", "fx__pid"} {
				if !seen[want] {
					t.Errorf("tool list lacks %s", want)
				}
			}
			var long []string
			for _, n := range names {
				if strings.HasPrefix(n, "fx__a_tool_with") {
					long = append(long, n)
				}
			}
			if len(long) != 1 || len(long[0]) > 64 {
				t.Errorf("the 60-character tool should appear once, shortened to 64: %v", long)
			}
			if firstNames == nil {
				firstNames = names
			} else if !slices.Equal(firstNames, names) {
				t.Errorf("clients see different names:\n%v\n%v", firstNames, names)
			}

			// The server runs inside the workspace: it reads the bot's files.
			if res := mustCall(t, c, "fx__readfile", map[string]any{"path": "/data/hello.txt"}); res.IsError || res.Text != "hello from the workspace" {
				t.Errorf("fx__readfile: %+v", res)
			}
			// Every session shares the one long-lived process.
			if res := mustCall(t, c, "fx__pid", map[string]any{}); res.Text != fmt.Sprintf("pid=%d tag=shared", added.Server.PID) {
				t.Errorf("fx__pid = %q, want the shared process %d", res.Text, added.Server.PID)
			}
			var events []progressEvent
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := c.call(ctx, "fx__progress", map[string]any{"steps": 3, "interval_ms": 10}, func(ev progressEvent) { events = append(events, ev) })
			if err != nil || res.IsError || res.Text != "done 3 steps" {
				t.Fatalf("fx__progress: %+v %v", res, err)
			}
			if len(events) != 3 || events[2].Progress != 3 || events[2].Total != 3 || events[2].Message != "step 3" {
				t.Errorf("progress through federation: %+v", events)
			}
			// The server's own request reaches the client of the call.
			if res := mustCall(t, c, "fx__ask", map[string]any{"question": "q"}); res.IsError || !strings.Contains(res.Text, `"answer":"fed `+name+`"`) {
				t.Errorf("elicitation through federation: %+v", res)
			}
			// berth's own HTTP server (mcp-go v1.2.1) sends sampling
			// requests only on a client's GET stream, which the go-sdk
			// client opens and mcp-go's does not by default.
			if name == "go-sdk" {
				if res := mustCall(t, c, "fx__sample", map[string]any{"prompt": "p"}); res.IsError || res.Text != "answer: sampled fed "+name {
					t.Errorf("sampling through federation: %+v", res)
				}
			}
		})
	}
	c := clients["mcp-go"]

	scoped := e.mcpgoAt(b.URL, botToken, "scoped")
	waitTools(t, scoped, func(n []string) bool { return slices.Contains(n, "fx__echo") })
	if res := mustCall(t, scoped, "fx__echo", map[string]any{"text": "scoped"}); res.IsError || res.Text != "scoped" {
		t.Errorf("fx__echo with the bot's own token: %+v", res)
	}
	for tool, args := range map[string]map[string]any{
		"workspace_stop": {"bot_id": bot},                        // lacks the manage scope
		"exec":           {"bot_id": "other", "command": "true"}, // another bot
		"image_delete":   {"image": e.image},                     // a shared image
	} {
		if res := mustCall(t, scoped, tool, args); !res.IsError || !strings.Contains(res.Text, "permission denied") {
			t.Errorf("%s with a token for %s, read and exec: %+v", tool, bot, res)
		}
	}
	if resp := proxyPost(t, b.proxyURL("other", "fx"), botToken, "", initializeBody); resp.StatusCode != http.StatusForbidden {
		t.Errorf("proxy endpoint of another bot with a bot's token: %d", resp.StatusCode)
	}
	// A proxy session belongs to the caller that opened it.
	adminSession := proxyPost(t, b.proxyURL(bot, "fx"), b.Token, "", initializeBody).Header.Get("Mcp-Session-Id")
	if resp := proxyPost(t, b.proxyURL(bot, "fx"), botToken, adminSession, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`); adminSession == "" || resp.StatusCode != http.StatusNotFound {
		t.Errorf("another caller's proxy session (%q): %d, want 404", adminSession, resp.StatusCode)
	}
	if resp := proxyPost(t, b.proxyURL(bot, "fx"), b.Token, adminSession, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); resp.StatusCode != http.StatusAccepted {
		t.Errorf("the opener's own proxy session: %d, want 202", resp.StatusCode)
	}

	// Tool-list changes reported by the server reach the sessions, and two
	// tool names that clean up to the same name both stay reachable.
	changes := c.listChanges()
	mustCall(t, c, "fx__add_tool", map[string]any{"name": "my.tool"})
	mustCall(t, c, "fx__add_tool", map[string]any{"name": "my_tool"})
	names := waitTools(t, c, func(n []string) bool {
		return slices.Contains(n, "fx__my_tool") && slices.ContainsFunc(n, func(s string) bool { return strings.HasPrefix(s, "fx__my_tool_") })
	})
	if c.listChanges() <= changes {
		t.Errorf("no tools/list_changed after the server's own list changed")
	}
	for _, n := range names {
		if strings.HasPrefix(n, "fx__my_tool") {
			if res := mustCall(t, c, n, map[string]any{"text": "hi"}); res.IsError || !strings.Contains(res.Text, "hi") {
				t.Errorf("%s: %+v", n, res)
			}
		}
	}

	// A crash: the call gets a clear error, the server comes back.
	res := mustCall(t, c, "fx__crash", map[string]any{"code": 3})
	if !res.IsError || !strings.Contains(res.Text, "exited with code 3") || !strings.Contains(res.Text, "crashing with 3") {
		t.Fatalf("crash result should say how it ended, with stderr: %+v", res)
	}
	// A call right after the crash is told of it, whether it comes during
	// the backoff or while the server starts again; on a busy machine it
	// may come once the server is back, and then it simply works.
	if res := mustCall(t, c, "fx__echo", map[string]any{"text": "in between"}); res.IsError && !strings.Contains(res.Text, "exited with code 3") ||
		!res.IsError && res.Text != "in between" {
		t.Errorf("a call right after the crash: %+v", res)
	}
	changes = c.listChanges()
	back := waitServer(t, c, bot, "fx", func(s mcpServerInfo) bool { return s.State == "ready" && s.Restarts == 1 })
	if back.PID == added.Server.PID {
		t.Errorf("restarted server kept pid %d", back.PID)
	}
	waitFor(t, "tools/list_changed after the restart", func() bool { return c.listChanges() > changes })
	if res := mustCall(t, c, "fx__echo", map[string]any{"text": "after"}); res.IsError || res.Text != "after" {
		t.Errorf("echo after restart: %+v", res)
	}
	var logs struct {
		Lines []string `json:"lines"`
	}
	mustCall(t, c, "mcp_server_logs", map[string]any{"bot_id": bot, "name": "fx"}).decode(t, &logs)
	joined := strings.Join(logs.Lines, "\n")
	for _, want := range []string{"crashing with 3", "exited with code 3", "started pid"} {
		if !strings.Contains(joined, want) {
			t.Errorf("mcp_server_logs lacks %q:\n%s", want, joined)
		}
	}

	// A berth restart (a crash, even) brings the server back from the
	// workspace's registration; the old process is gone with berth.
	b.kill()
	b = e.serveHTTP()
	c = e.mcpgoAt(b.botURL(bot), b.Token, "x")
	waitTools(t, c, func(n []string) bool { return slices.Contains(n, "fx__pid") })
	res = mustCall(t, c, "fx__pid", map[string]any{})
	if !strings.HasSuffix(res.Text, "tag=shared") || strings.Contains(res.Text, fmt.Sprintf("pid=%d ", back.PID)) {
		t.Errorf("after a berth restart fx__pid = %q (old pid %d)", res.Text, back.PID)
	}
	if n := e.fixtureProcs(t, bot); n != 1 {
		t.Errorf("%d fixture processes in the workspace after a berth restart, want 1", n)
	}

	// A workspace restart brings it back too.
	mustCall(t, c, "workspace_stop", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	mustCall(t, c, "workspace_start", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	waitServer(t, c, bot, "fx", func(s mcpServerInfo) bool { return s.State == "ready" })
	if res := mustCall(t, c, "fx__readfile", map[string]any{"path": "/data/hello.txt"}); res.IsError {
		t.Errorf("after a workspace restart: %+v", res)
	}

	// Removal takes the tools away.
	changes = c.listChanges()
	mustCall(t, c, "mcp_server_remove", map[string]any{"bot_id": bot, "name": "fx"}).decode(t, &struct{}{})
	waitTools(t, c, func(n []string) bool { return !slices.Contains(n, "fx__echo") })
	waitFor(t, "tools/list_changed after removal", func() bool { return c.listChanges() > changes })
	if got := listServers(t, c, bot); len(got) != 0 {
		t.Errorf("servers after removal: %+v", got)
	}
	waitFor(t, "the fixture process to end", func() bool { return e.fixtureProcs(t, bot) == 0 })
	if res := mustCall(t, c, "mcp_server_remove", map[string]any{"bot_id": bot, "name": "fx"}); !res.IsError {
		t.Errorf("removing twice succeeded")
	}
}

// TestMCPServerStdioFederation checks the stdio transport's --bot.
func TestMCPServerStdioFederation(t *testing.T) {
	e := newMCPEnv(t)
	const bot = "solo"
	e.extra = append(e.extra, "--bot", bot, "--mcp-result-max", "4096")
	for name, connect := range map[string]func() mcpClient{"mcp-go": e.stdioMcpgo, "go-sdk": e.stdioSDK} {
		t.Run(name, func(t *testing.T) {
			c := connect()
			// The next client starts a berth of its own on the same
			// namespace, which only one berth may serve: this one
			// must have exited by then (close waits for it).
			defer c.close()
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
			changes := c.listChanges()
			mustCall(t, c, "mcp_server_add", map[string]any{"bot_id": bot, "name": "fx", "command": testenv.MCPFixturePath}).decode(t, &struct{}{})
			waitTools(t, c, func(n []string) bool { return slices.Contains(n, "fx__echo") })
			waitFor(t, "tools/list_changed", func() bool { return c.listChanges() > changes })
			if res := mustCall(t, c, "fx__echo", map[string]any{"text": "over stdio"}); res.IsError || res.Text != "over stdio" {
				t.Errorf("fx__echo: %+v", res)
			}
			// Results over --mcp-result-max are cut, with a marker.
			res := mustCall(t, c, "fx__echo", map[string]any{"text": strings.Repeat("x", 10000)})
			if res.IsError || len(res.Text) > 4096+300 || !strings.HasPrefix(res.Text, "xxxx") || !strings.Contains(res.Text, "over the cap of 4096") {
				t.Errorf("oversized result: %d bytes: …%s", len(res.Text), res.Text[max(0, len(res.Text)-200):])
			}
			mustCall(t, c, "mcp_server_remove", map[string]any{"bot_id": bot, "name": "fx"}).decode(t, &struct{}{})
			waitTools(t, c, func(n []string) bool { return !slices.Contains(n, "fx__echo") })
		})
	}
}

// TestMCPServerProxyEndpoint speaks to the fixture through
// /bots/{bot}/mcp/{name} with both clients: each session gets its own
// process, and progress, cancellation, elicitation and a crash pass through.
func TestMCPServerProxyEndpoint(t *testing.T) {
	e := newMCPEnv(t)
	b := e.serveHTTP()
	const bot = "px"
	admin := e.httpMcpgo(b)
	mustCall(t, admin, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	var added struct {
		Server mcpServerInfo `json:"server"`
	}
	mustCall(t, admin, "mcp_server_add", map[string]any{
		"bot_id": bot, "name": "fx", "command": testenv.MCPFixturePath, "env": map[string]string{"FIXTURE_TAG": "proxy"},
	}).decode(t, &added)

	// Unknown servers and missing tokens are refused.
	if resp, err := http.Post(b.proxyURL(bot, "fx"), "application/json", strings.NewReader(`{}`)); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("proxy without a token: %v %v", resp, err)
	}
	req, _ := http.NewRequest(http.MethodPost, b.proxyURL(bot, "nope"), strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`))
	req.Header.Set("Authorization", "Bearer "+b.Token)
	req.Header.Set("Accept", "application/json, text/event-stream")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("proxy to an unknown server: %v %v", resp, err)
	}

	pids := map[string]bool{strconv.Itoa(added.Server.PID): true}
	for name, connect := range map[string]func() mcpClient{
		"mcp-go": func() mcpClient { return e.mcpgoAt(b.proxyURL(bot, "fx"), b.Token, "42 via mcp-go") },
		"go-sdk": func() mcpClient { return e.sdkAt(b.proxyURL(bot, "fx"), b.Token, "42 via go-sdk") },
	} {
		t.Run(name, func(t *testing.T) {
			c := connect()
			names, err := c.toolNames(context.Background())
			if err != nil || !slices.Contains(names, "echo") || !slices.Contains(names, "ask") {
				t.Fatalf("tools through the proxy: %v %v", names, err)
			}
			// Its own process, in the workspace.
			res := mustCall(t, c, "pid", map[string]any{})
			pid := strings.TrimSuffix(strings.TrimPrefix(res.Text, "pid="), " tag=proxy")
			if pids[pid] || !strings.HasSuffix(res.Text, "tag=proxy") {
				t.Errorf("session process %q is not a process of its own (seen %v)", res.Text, pids)
			}
			pids[pid] = true

			var events []progressEvent
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err = c.call(ctx, "progress", map[string]any{"steps": 4, "interval_ms": 10}, func(ev progressEvent) { events = append(events, ev) })
			if err != nil || res.Text != "done 4 steps" || len(events) != 4 {
				t.Errorf("progress through the proxy: %+v %v %+v", res, err, events)
			}

			// A server-to-client request is answered by this client.
			res = mustCall(t, c, "ask", map[string]any{"question": "the answer?"})
			if res.IsError || !strings.Contains(res.Text, `"answer":"42 via `+name+`"`) {
				t.Errorf("elicitation through the proxy: %+v", res)
			}
			if res := mustCall(t, c, "sample", map[string]any{"prompt": "p"}); res.IsError || res.Text != "answer: sampled 42 via "+name {
				t.Errorf("sampling through the proxy: %+v", res)
			}

			// Cancellation reaches the server: cancelled once the server is
			// running the call (its first progress), however slow the way there.
			cctx, ccancel := context.WithCancel(context.Background())
			defer ccancel()
			if _, err := c.call(cctx, "progress", map[string]any{"steps": 1000, "interval_ms": 20}, func(progressEvent) { ccancel() }); err == nil {
				t.Errorf("a cancelled call succeeded")
			}
			waitFor(t, "the server to record the cancellation", func() bool {
				out, _ := e.tryExec(t, bot, "cat", "/tmp/mcp-fixture-cancelled")
				return strings.Contains(out, "cancelled "+pid)
			})

			// The server's notifications reach the client.
			changes := c.listChanges()
			mustCall(t, c, "add_tool", map[string]any{"name": "late"})
			waitFor(t, "tools/list_changed through the proxy", func() bool { return c.listChanges() > changes })
			if names, err := c.toolNames(context.Background()); err != nil || !slices.Contains(names, "late") {
				t.Errorf("tools after add_tool: %v %v", names, err)
			}

			// A crash ends the session's process with a clear error.
			res, err = c.call(context.Background(), "crash", map[string]any{"code": 5}, nil)
			text := fmt.Sprint(err)
			if res != nil {
				text += res.Text
			}
			if !strings.Contains(text, "exited with code 5") || !strings.Contains(text, "crashing with 5") {
				t.Errorf("crash through the proxy: %q", text)
			}
			res, err = c.call(context.Background(), "echo", map[string]any{"text": "after"}, nil)
			if err == nil && !res.IsError {
				t.Errorf("a call after the session's server crashed succeeded: %+v", res)
			}
		})
	}
	// The shared process was not disturbed by the sessions.
	if s := waitServer(t, admin, bot, "fx", func(s mcpServerInfo) bool { return s.State == "ready" }); s.PID != added.Server.PID || s.Restarts != 0 {
		t.Errorf("shared server after proxy sessions: %+v", s)
	}
	// Crashed sessions leave only the shared process; a session that ends
	// (the client's DELETE) takes its process with it.
	waitFor(t, "crashed session processes to end", func() bool { return e.fixtureProcs(t, bot) == 1 })
	c := e.mcpgoAt(b.proxyURL(bot, "fx"), b.Token, "")
	mustCall(t, c, "pid", map[string]any{})
	if n := e.fixtureProcs(t, bot); n != 2 {
		t.Errorf("%d fixture processes with one proxy session open, want 2", n)
	}
	c.close()
	waitFor(t, "the closed session's process to end", func() bool { return e.fixtureProcs(t, bot) == 1 })
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMCPServerGivesUp registers a server that dies at once: mcp_server_add
// says why, berth restarts it with backoff and then leaves it failed, and
// adding it again (fixed) brings it back.
func TestMCPServerGivesUp(t *testing.T) {
	e := newMCPEnv(t)
	const bot = "broken"
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	var added struct {
		Server mcpServerInfo `json:"server"`
	}
	mustCall(t, c, "mcp_server_add", map[string]any{
		"bot_id": bot, "name": "bad", "command": "sh", "args": []string{"-c", "echo missing dependency >&2; exit 4"},
	}).decode(t, &added)
	if added.Server.State != "restarting" || !strings.Contains(added.Server.Reason, "exited with code 4") ||
		!strings.Contains(added.Server.Reason, "missing dependency") {
		t.Errorf("mcp_server_add of a server that dies: %+v", added.Server)
	}
	failed := waitServer(t, c, bot, "bad", func(s mcpServerInfo) bool { return s.State == "failed" })
	// Each crash is explained by the exit, whichever berth noticed first:
	// the exit or a write (the handshake) into the dead process.
	if failed.Restarts != 6 || !strings.Contains(failed.Reason, "gave up after 5 crashes in a row") ||
		!strings.Contains(failed.Reason, "exited with code 4") {
		t.Errorf("failed server: %+v", failed)
	}
	var fixed struct {
		Server   mcpServerInfo `json:"server"`
		Replaced bool          `json:"replaced"`
	}
	mustCall(t, c, "mcp_server_add", map[string]any{"bot_id": bot, "name": "bad", "command": testenv.MCPFixturePath}).decode(t, &fixed)
	if !fixed.Replaced || fixed.Server.State != "ready" || fixed.Server.Restarts != 0 {
		t.Errorf("adding the server again: %+v", fixed)
	}
}

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// proxyPost sends one raw JSON-RPC message to a proxy endpoint, in session
// if it is not empty, and reads the whole answer.
func proxyPost(t *testing.T, url, token, session, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json, text/event-stream")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestMCPServerProxySessionIdles leaves a proxy session idle past
// --session-idle-ttl: its process is stopped and the session forgotten.
func TestMCPServerProxySessionIdles(t *testing.T) {
	e := newMCPEnv(t)
	// Long enough that counting the processes (a runc exec, seconds on a
	// busy machine) surely ends before the session idles out.
	e.extra = append(e.extra, "--session-idle-ttl", "15s")
	b := e.serveHTTP()
	const bot = "idle"
	admin := e.httpMcpgo(b)
	mustCall(t, admin, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	mustCall(t, admin, "mcp_server_add", map[string]any{"bot_id": bot, "name": "fx", "command": testenv.MCPFixturePath}).decode(t, &struct{}{})

	resp := proxyPost(t, b.proxyURL(bot, "fx"), b.Token, "", initializeBody)
	session := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || session == "" {
		t.Fatalf("initialize: %d, session %q", resp.StatusCode, session)
	}
	if n := e.fixtureProcs(t, bot); n != 2 {
		t.Fatalf("%d fixture processes with a proxy session open, want 2", n)
	}
	waitFor(t, "the idle session's process to stop", func() bool { return e.fixtureProcs(t, bot) == 1 })
	if resp := proxyPost(t, b.proxyURL(bot, "fx"), b.Token, session, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a request of the idled-out session: %d, want 404", resp.StatusCode)
	}
}
