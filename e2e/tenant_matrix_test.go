package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
)

// The cross-tenant matrix: every tool, resource and per-bot HTTP route,
// called with a token for one bot and one scope, on that bot and on
// another, must be refused exactly when the scope or the bot is wrong.
// Tools come from tools/list, resources from resources/templates/list and
// routes from the transports' source, so a new one that the tables below
// do not know fails the test instead of going unchecked.

// matrixScopes are the scopes a token may hold; the matrix gives each
// token exactly one.
var matrixScopes = []string{"read", "write", "exec", "manage", "admin"}

// toolRule is what a tool needs: a scope, and (unless botless) the bot it
// acts on.
type toolRule struct {
	scope   string
	botless bool
}

// toolScopes is the scope each of berth's tools needs. A tool missing here
// fails TestTenantMatrix: decide what it needs and add it.
var toolScopes = map[string]toolRule{
	"workspace_create": {scope: "manage"}, "workspace_get": {scope: "read"},
	"workspace_list": {scope: "read", botless: true}, "workspace_start": {scope: "manage"},
	"workspace_stop": {scope: "manage"}, "workspace_delete": {scope: "manage"},
	"workspace_metrics": {scope: "read"}, "workspace_fork": {scope: "manage"},

	"image_list": {scope: "read", botless: true}, "image_import": {scope: "admin", botless: true},
	// The image named is a bot's own export (see matrixArgs); other images need admin too.
	"image_delete": {scope: "manage"},

	"exec": {scope: "exec"}, "process_list": {scope: "exec"}, "process_output": {scope: "exec"},
	"process_signal": {scope: "exec"}, "process_kill": {scope: "exec"},

	"terminal_open": {scope: "exec"}, "terminal_send": {scope: "exec"}, "terminal_read": {scope: "exec"},
	"terminal_resize": {scope: "exec"}, "terminal_close": {scope: "exec"}, "terminal_list": {scope: "exec"},

	"fs_stat": {scope: "read"}, "fs_list": {scope: "read"}, "fs_read": {scope: "read"},
	"fs_find": {scope: "read"}, "fs_grep": {scope: "read"},
	"fs_write": {scope: "write"}, "fs_edit": {scope: "write"}, "fs_mkdir": {scope: "write"},
	"fs_delete": {scope: "write"}, "fs_move": {scope: "write"}, "fs_copy": {scope: "write"},

	"data_export": {scope: "read"}, "data_export_delete": {scope: "write"},
	"data_import": {scope: "write"}, "data_restore": {scope: "write"}, "data_preserved_delete": {scope: "manage"},

	"skills_list": {scope: "read"}, "skills_upsert": {scope: "write"},
	"skills_delete": {scope: "write"}, "skills_action": {scope: "write"},

	"snapshot_create": {scope: "manage"}, "snapshot_list": {scope: "read"},
	"snapshot_rollback": {scope: "manage"}, "snapshot_diff": {scope: "read"},
	"snapshot_delete": {scope: "manage"}, "snapshot_export": {scope: "manage"},

	"mcp_server_add": {scope: "exec"}, "mcp_server_list": {scope: "read"},
	"mcp_server_remove": {scope: "exec"}, "mcp_server_logs": {scope: "read"},

	"port_expose": {scope: "exec"}, "port_list": {scope: "read"}, "port_unexpose": {scope: "exec"},

	"network_get": {scope: "read"}, "network_policy_set": {scope: "manage"},
	// host mode needs admin besides; checked in e2e/network_more_test.go.
	"network_mode_set": {scope: "manage"},
	// The bot itself asks; an operator (manage) lists and decides.
	"network_access_request": {scope: "exec"}, "network_requests_list": {scope: "manage"},
	"network_request_decide": {scope: "manage"},
}

// httpRoute is a per-bot HTTP route: the scope it needs and how to try it.
type httpRoute struct {
	scope   string
	methods []string
	path    string // with {bot} for the bot
}

// botRoutes are the /bots/{bot_id}/... routes. A route registered in
// transports/ and missing here fails the test.
var botRoutes = map[string]httpRoute{
	"GET /bots/{bot_id}/files":       {"read", []string{"GET"}, "/bots/{bot}/files?path=/data/audit-marker-7f3"},
	"PUT /bots/{bot_id}/files":       {"write", []string{"PUT"}, "/bots/{bot}/files?path=/data/audit-marker-7f3"},
	"GET /bots/{bot_id}/terminal/ws": {"exec", []string{"GET"}, "/bots/{bot}/terminal/ws?terminal_id=t1"},
	"GET /bots/{bot_id}/data/export": {"read", []string{"GET"}, "/bots/{bot}/data/export?path=/data"},
	"PUT /bots/{bot_id}/data/import": {"write", []string{"PUT"}, "/bots/{bot}/data/import?path=/data"},
	"/bots/{bot_id}/mcp/{name}":      {"exec", []string{"POST", "GET", "DELETE"}, "/bots/{bot}/mcp/fx"},
	// Bearer tokens need exec (links are checked in e2e/ports_test.go).
	"/bots/{bot_id}/ports/{port}/": {"exec", []string{"GET", "POST"}, "/bots/{bot}/ports/8080/"},
}

// marker is every free string argument; the audit log must never hold it.
const marker = "audit-marker-7f3"

const (
	ownBot   = "alpha" // the matrix tokens' bot; it has no workspace, so allowed calls fail fast and change nothing
	otherBot = "bravo" // another tenant, with a live workspace
)

// matrixToken is the secret of the token for ownBot with one scope.
func matrixToken(scope string) string { return "matrix-" + scope + "-0123456789abcdef" }

const (
	hijackerToken = "hijack-a-0123456789abcdef" // every scope, ownBot only
	victimToken   = "hijack-b-0123456789abcdef" // every scope, otherBot only
)

func writeMatrixTokens(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("tokens:\n")
	for _, s := range matrixScopes {
		fmt.Fprintf(&b, "  - {name: m-%s, token: %s, bots: [%s], scopes: [%s]}\n", s, matrixToken(s), ownBot, s)
	}
	all := strings.Join(matrixScopes, ", ")
	fmt.Fprintf(&b, "  - {name: hj-a, token: %s, bots: [%s], scopes: [%s]}\n", hijackerToken, ownBot, all)
	fmt.Fprintf(&b, "  - {name: hj-b, token: %s, bots: [%s], scopes: [%s]}\n", victimToken, otherBot, all)
	path := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rawClient is an mcp-go client kept at hand for lists and session ids.
type rawClient struct {
	c  *mcpclient.Client
	tr *transport.StreamableHTTP
	mcpClient
}

func (e *env) rawClient(url, token string) *rawClient {
	e.t.Helper()
	tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPBasicClient(&http.Client{Transport: bearer{token: token}}))
	if err != nil {
		e.t.Fatal(err)
	}
	// 2025-11-25: the matrix includes session hijacks, and only that era
	// has sessions (TestModernFederationAndTenants covers 2026-07-28).
	c := mcpclient.NewClient(tr, mcpclient.WithProtocolVersion("2025-11-25"))
	return &rawClient{c: c, tr: tr, mcpClient: newMcpgoClient(e.t, c)}
}

// isDenial says whether a tool result is an authorization refusal.
func isDenial(res *toolResult, err error) bool {
	return err == nil && res.IsError && strings.HasPrefix(res.Text, "permission denied: ")
}

// matrixArgs are cheap arguments for tool on bot, built from its input
// schema: every required property gets a harmless value; a few tools get
// values that keep an allowed call from doing anything.
func matrixArgs(tool mcpgo.Tool, bot string) map[string]any {
	var s struct {
		InputSchema struct {
			Required   []string `json:"required"`
			Properties map[string]struct {
				Type any `json:"type"`
			} `json:"properties"`
		} `json:"inputSchema"`
	}
	data, _ := json.Marshal(tool)
	_ = json.Unmarshal(data, &s)
	schema := s.InputSchema
	args := map[string]any{}
	for _, name := range schema.Required {
		switch fmt.Sprint(schema.Properties[name].Type) {
		case "integer", "number":
			args[name] = 1
		case "boolean":
			args[name] = false
		case "array":
			args[name] = []any{}
		case "object":
			args[name] = map[string]any{}
		default:
			args[name] = marker
		}
	}
	if _, ok := schema.Properties["bot_id"]; ok {
		args["bot_id"] = bot
	}
	switch tool.Name {
	case "workspace_create":
		// Never pulled, never made: the call fails after authorization.
		args["image"], args["pull_policy"] = "berth.local/absent-"+marker+":none", "never"
	case "workspace_fork":
		args["new_bot_id"] = bot
	case "image_delete":
		args["image"] = "berth.local/snapshots/" + bot + ":v999"
	case "image_import":
		args["path"] = marker
	case "network_mode_set":
		args["mode"] = "none"
	}
	return args
}

// TestTenantMatrix checks every tool, resource and per-bot route against
// tokens of each scope, on their own bot and on another, and that the
// audit log records each refusal without argument values.
func TestTenantMatrix(t *testing.T) {
	e := newEnv(t)
	auditPath := filepath.Join(e.stateDir, "audit.log")
	e.extra = append(e.extra, "--tokens-file", writeMatrixTokens(t, e.stateDir), "--audit-log", auditPath)
	b := e.serveHTTP()
	admin := e.rawClient(b.URL, b.Token)
	mustCall(t, admin, "workspace_create", map[string]any{"bot_id": otherBot}).decode(t, &struct{}{})

	scoped := map[string]*rawClient{}
	for _, s := range matrixScopes {
		scoped[s] = e.rawClient(b.URL, matrixToken(s))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var denials struct{ tools, resources, routes int }

	t.Run("tools", func(t *testing.T) {
		var tools []mcpgo.Tool
		req := mcpgo.ListToolsRequest{}
		for {
			page, err := admin.c.ListTools(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			tools = append(tools, page.Tools...)
			if page.NextCursor == "" {
				break
			}
			req.Params.Cursor = page.NextCursor
		}
		listed := map[string]bool{}
		for _, tool := range tools {
			listed[tool.Name] = true
			rule, ok := toolScopes[tool.Name]
			if !ok {
				t.Errorf("tool %s is not in the tenant matrix: add the scope it needs to toolScopes", tool.Name)
				continue
			}
			bots := []string{ownBot, otherBot}
			if rule.botless {
				bots = []string{""}
			}
			for _, bot := range bots {
				args := matrixArgs(tool, bot)
				for _, s := range matrixScopes {
					res, err := scoped[s].call(ctx, tool.Name, args, nil)
					want := s == rule.scope && bot != otherBot
					switch {
					case want && (err != nil || isDenial(res, err)):
						t.Errorf("%s on %q with a %s token: refused or broken: %v %+v", tool.Name, bot, s, err, res)
					case !want && !isDenial(res, err):
						t.Errorf("%s on %q with a %s token for %s: not refused: %v %+v", tool.Name, bot, s, ownBot, err, res)
					case !want:
						denials.tools++
					}
				}
				if bot != otherBot {
					if res, err := admin.call(ctx, tool.Name, args, nil); err != nil || isDenial(res, err) {
						t.Errorf("%s with the admin token: %v %+v", tool.Name, err, res)
					}
				}
			}
		}
		for name := range toolScopes {
			if !listed[name] {
				t.Errorf("toolScopes names %s, which tools/list lacks: remove it", name)
			}
		}
		// Checks inside a tool, past its first: the second bot of a fork,
		// and images that are no bot's own.
		for _, c := range []struct {
			tool string
			args map[string]any
		}{
			{"workspace_fork", map[string]any{"bot_id": ownBot, "version": 1, "new_bot_id": otherBot}},
			{"image_delete", map[string]any{"image": "docker.io/library/busybox:" + marker}},
		} {
			if res, err := scoped["manage"].call(ctx, c.tool, c.args, nil); !isDenial(res, err) {
				t.Errorf("%s %v with a manage token for %s: not refused: %v %+v", c.tool, c.args, ownBot, err, res)
			} else {
				denials.tools++
			}
		}
	})

	t.Run("resources", func(t *testing.T) {
		templates, err := admin.c.ListResourceTemplates(ctx, mcpgo.ListResourceTemplatesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		vars := regexp.MustCompile(`\{\+?([a-z_]+)\}`)
		// Query expansions ({?offset,limit}) are optional: left out.
		queries := regexp.MustCompile(`\{\?[a-z_,]+\}`)
		if len(templates.ResourceTemplates) == 0 {
			t.Fatal("no resource templates listed")
		}
		for _, tmpl := range templates.ResourceTemplates {
			pattern := tmpl.URITemplate.Raw()
			if !strings.Contains(pattern, "{bot_id}") {
				t.Errorf("resource %s names no bot: decide who may read it and add it to the matrix", pattern)
				continue
			}
			// Output is read with exec, as the tools that read it; the
			// rest with read.
			scope := "read"
			if strings.Contains(pattern, "/processes/") || strings.Contains(pattern, "/terminals/") {
				scope = "exec"
			}
			for _, bot := range []string{ownBot, otherBot} {
				uri := vars.ReplaceAllStringFunc(queries.ReplaceAllString(pattern, ""), func(v string) string {
					switch strings.Trim(v, "{+}") {
					case "bot_id":
						return bot
					case "path":
						return "data/" + marker
					case "version":
						return "1"
					}
					return marker
				})
				for _, s := range matrixScopes {
					_, err := scoped[s].readResource(ctx, uri)
					denied := err != nil && strings.Contains(err.Error(), "permission denied")
					want := s == scope && bot == ownBot
					switch {
					case want && denied:
						t.Errorf("resources/read %s with a %s token: refused: %v", uri, scope, err)
					case !want && !denied:
						t.Errorf("resources/read %s with a %s token for %s: not refused: %v", uri, s, ownBot, err)
					case !want:
						denials.resources++
					}
				}
				if _, err := admin.readResource(ctx, uri); bot == ownBot && err != nil && strings.Contains(err.Error(), "permission denied") {
					t.Errorf("resources/read %s with the admin token: %v", uri, err)
				}
			}
		}
	})

	t.Run("routes", func(t *testing.T) {
		base := strings.TrimSuffix(b.URL, "/mcp")
		registered := registeredBotRoutes(t)
		for _, pattern := range registered {
			if _, ok := botRoutes[pattern]; !ok {
				t.Errorf("route %q is not in the tenant matrix: add it to botRoutes", pattern)
			}
		}
		for pattern, route := range botRoutes {
			if !slices.Contains(registered, pattern) {
				t.Errorf("botRoutes names %q, which transports/ does not register: remove it", pattern)
			}
			for _, bot := range []string{ownBot, otherBot} {
				url := base + strings.ReplaceAll(route.path, "{bot}", bot)
				for _, method := range route.methods {
					for _, s := range matrixScopes {
						status := routeStatus(t, method, url, matrixToken(s))
						denied := status == http.StatusForbidden || status == http.StatusUnauthorized
						want := s == route.scope && bot == ownBot
						switch {
						case want && denied:
							t.Errorf("%s %s with a %s token: %d", method, url, s, status)
						case !want && !denied:
							t.Errorf("%s %s with a %s token for %s: not refused (%d)", method, url, s, ownBot, status)
						case !want:
							denials.routes++
						}
					}
					if bot == ownBot {
						if status := routeStatus(t, method, url, b.Token); status == http.StatusForbidden || status == http.StatusUnauthorized {
							t.Errorf("%s %s with the admin token: %d", method, url, status)
						}
					}
				}
			}
		}
		// Browsers pass the terminal's token in the query: the bot check
		// holds there too.
		wsURL := base + "/bots/" + otherBot + "/terminal/ws?terminal_id=t1&access_token=" + matrixToken("exec")
		if status := routeStatus(t, http.MethodGet, wsURL, ""); status != http.StatusForbidden {
			t.Errorf("terminal WebSocket of %s with %s's exec token in the query: %d", otherBot, ownBot, status)
		} else {
			denials.routes++
		}
	})

	t.Run("session hijack", func(t *testing.T) {
		testSessionHijack(t, e, b, admin)
	})

	t.Run("audit log", func(t *testing.T) {
		count := func() (tools, resources, routes, hijacks int, raw []byte) {
			raw, _ = os.ReadFile(auditPath)
			sc := bufio.NewScanner(bytes.NewReader(raw))
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				var r struct {
					Token, Kind, Outcome, Reason string
				}
				if json.Unmarshal(sc.Bytes(), &r) != nil || r.Outcome != "denied" {
					continue
				}
				switch {
				case r.Reason == "session of another token" && r.Token == "token:hj-a":
					hijacks++
				case !strings.HasPrefix(r.Token, "token:m-"):
				case r.Kind == "tool":
					tools++
				case r.Kind == "resource":
					resources++
				case r.Kind == "http":
					routes++
				}
			}
			return
		}
		waitFor(t, "the audit log to record every refusal", func() bool {
			tools, resources, routes, hijacks, _ := count()
			return tools >= denials.tools && resources >= denials.resources && routes >= denials.routes && hijacks >= 4
		})
		tools, resources, routes, hijacks, raw := count()
		if tools != denials.tools || resources != denials.resources || routes != denials.routes || hijacks != 4 {
			t.Errorf("denied lines: %d tools (want %d), %d resources (want %d), %d routes (want %d), %d hijacks (want 4)",
				tools, denials.tools, resources, denials.resources, routes, denials.routes, hijacks)
		}
		t.Logf("refused and audited: %d tool calls, %d resource reads, %d route requests, 4 session hijacks", tools, resources, routes)
		if bytes.Contains(raw, []byte(marker)) {
			t.Errorf("the audit log holds argument values (%s)", marker)
		}
	})
}

// registeredBotRoutes reads the /bots/{bot_id}/... patterns that
// transports/ registers from its source, so a new route is seen.
func registeredBotRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../transports/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("transports source: %v", err)
	}
	re := regexp.MustCompile(`"((?:GET|PUT|POST|DELETE|PATCH) )?(/bots/\{bot_id\}/[^"]*)"`)
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			out = append(out, m[1]+m[2])
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// routeStatus makes one request with token (none if empty) and returns
// the status, without waiting for a stream to end.
func routeStatus(t *testing.T, method, url, token string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var body io.Reader
	if method != http.MethodGet && method != http.MethodDelete {
		body = strings.NewReader(initializeBody)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// mcpRaw sends one request to /mcp in session and returns the status; a
// response that streams is cut after its headers.
func mcpRaw(t *testing.T, method, url, token, session, body string, header map[string]string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	req.Header.Set("Mcp-Session-Id", session)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s /mcp: %v", method, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// testSessionHijack: token A holding token B's session id gets 404 for
// POST, GET (also resuming) and DELETE, while B's call in flight keeps
// receiving its progress and B's session goes on working.
func testSessionHijack(t *testing.T, e *env, b *berthHTTP, admin mcpClient) {
	victim := e.rawClient(b.URL, victimToken)
	session := victim.tr.GetSessionId()
	if session == "" {
		t.Fatal("the victim's client has no session id")
	}
	var mu sync.Mutex
	var seen strings.Builder
	sawOne := make(chan struct{})
	var once sync.Once
	type outcome struct {
		res *toolResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := victim.call(context.Background(), "exec", map[string]any{
			"bot_id": otherBot, "timeout_seconds": 120,
			"command": "echo one; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo two",
		}, func(ev progressEvent) {
			mu.Lock()
			seen.WriteString(ev.Message)
			mu.Unlock()
			if strings.Contains(ev.Message, "one") {
				once.Do(func() { close(sawOne) })
			}
		})
		done <- outcome{res, err}
	}()
	select {
	case <-sawOne:
	case o := <-done:
		t.Fatalf("the victim's exec ended before its first output: %v %+v", o.err, o.res)
	case <-time.After(time.Minute):
		t.Fatal("no progress reached the victim")
	}

	list := `{"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"workspace_list","arguments":{}}}`
	for _, try := range []struct {
		method, body string
		header       map[string]string
	}{
		{http.MethodPost, list, nil},
		{http.MethodGet, "", nil},
		{http.MethodGet, "", map[string]string{"Last-Event-ID": "1"}},
		{http.MethodDelete, "", nil},
	} {
		if status := mcpRaw(t, try.method, b.URL, hijackerToken, session, try.body, try.header); status != http.StatusNotFound {
			t.Errorf("%s /mcp %v with another token's session: %d, want 404", try.method, try.header, status)
		}
	}

	// The victim's command goes on and its output reaches the victim.
	mustCall(t, admin, "exec", map[string]any{"bot_id": otherBot, "command": "touch /tmp/go"})
	var o outcome
	select {
	case o = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the victim's exec did not finish")
	}
	if o.err != nil || o.res.IsError || !strings.Contains(o.res.Text, "two") {
		t.Fatalf("the victim's exec: %v %+v", o.err, o.res)
	}
	mu.Lock()
	got := seen.String()
	mu.Unlock()
	if !strings.Contains(got, "two") {
		t.Errorf("the victim's progress lacks its second line: %q", got)
	}
	if res := mustCall(t, victim, "workspace_get", map[string]any{"bot_id": otherBot}); res.IsError {
		t.Errorf("the victim's session after the attempts: %s", res.Text)
	}
}
