package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
)

// consoleSession is a browser's login to the console: its cookie jar, its
// Origin and the session's CSRF token.
type consoleSession struct {
	t      *testing.T
	base   string
	client *http.Client
	csrf   string
	me     map[string]any
}

// consoleLogin logs in at /ui/login with token, as the page does, and
// reads /ui/api/me.
func consoleLogin(t *testing.T, base, token string) *consoleSession {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	s := &consoleSession{t: t, base: base, client: &http.Client{Jar: jar, Timeout: time.Minute}}
	res := s.do("POST", "/ui/login", `{"token":"`+token+`"}`, map[string]string{"Content-Type": "application/json"})
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("login: %s", res.Status)
	}
	res = s.do("GET", "/ui/api/me", "", nil)
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&s.me); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("me: %s %v", res.Status, err)
	}
	s.csrf, _ = s.me["csrf"].(string)
	return s
}

// do sends a request as the page would: with the cookie and berth's own
// Origin.
func (s *consoleSession) do(method, path, body string, hdr map[string]string) *http.Response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Origin", s.base)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	return res
}

// RoundTrip carries an MCP client's requests as the page's: cookie, Origin
// and CSRF header, no Authorization.
func (s *consoleSession) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Origin", s.base)
	r.Header.Set("X-Berth-CSRF", s.csrf)
	for _, c := range s.client.Jar.Cookies(r.URL) {
		r.AddCookie(c)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// mcp is an MCP client on /mcp that authenticates with the session only.
func (s *consoleSession) mcp(e *env) mcpClient {
	tr, err := transport.NewStreamableHTTP(s.base+"/mcp", transport.WithHTTPBasicClient(&http.Client{Transport: s}))
	if err != nil {
		s.t.Fatal(err)
	}
	c := newMcpgoClient(e.t, mcpclient.NewClient(tr))
	s.t.Cleanup(c.close)
	return c
}

// TestConsoleAPI: the console's sessions on the real binary and
// containerd. A read-only token's session reads its bot (me, events with
// live figures, audit lines) and nothing else, and its mutating calls on
// /mcp are refused by scope; the admin's session may mutate; without the
// CSRF header /mcp refuses the cookie.
func TestConsoleAPI(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	const readToken = "console-api-read-0123456789"
	tokens := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("tokens:\n  - {name: peek, token: "+readToken+", bots: [seen], scopes: [read]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auditLog := filepath.Join(dir, "audit.log")
	e.extra = append(e.extra, "--tokens-file", tokens, "--audit-log", auditLog)
	b := e.serveHTTP()
	base := strings.TrimSuffix(b.URL, "/mcp")
	admin := e.httpMcpgo(b)
	for _, bot := range []string{"seen", "unseen"} {
		mustCall(t, admin, "workspace_create", map[string]any{"bot_id": bot})
	}

	reader := consoleLogin(t, base, readToken)
	if reader.me["identity"] != "peek" || reader.me["admin"] != false || reader.csrf == "" {
		t.Fatalf("me: %v", reader.me)
	}
	rc := reader.mcp(e)
	if res := mustCall(t, rc, "workspace_get", map[string]any{"bot_id": "seen"}); res.IsError {
		t.Fatalf("read with the session: %s", res.Text)
	}
	for _, call := range []struct {
		tool string
		args map[string]any
	}{
		{"fs_write", map[string]any{"bot_id": "seen", "path": "x", "content": "no"}},
		{"workspace_stop", map[string]any{"bot_id": "seen"}},
		{"workspace_get", map[string]any{"bot_id": "unseen"}},
	} {
		if res, err := rc.call(context.Background(), call.tool, call.args, nil); !isDenial(res, err) {
			t.Errorf("%s %v with the read-only session: %v %+v", call.tool, call.args, err, res)
		}
	}

	// The event stream: the reader's bot only, with its live figures.
	res := reader.do("GET", "/ui/api/events", "", nil)
	name, data := consoleEvent(t, res)
	res.Body.Close()
	var ev struct {
		Workspaces []struct {
			BotID       string `json:"bot_id"`
			Status      string `json:"status"`
			MemoryBytes uint64 `json:"memory_bytes"`
			LastActive  string `json:"last_activity"`
		} `json:"workspaces"`
	}
	if err := json.Unmarshal(data, &ev); err != nil || name != "workspaces" || len(ev.Workspaces) != 1 {
		t.Fatalf("reader's events: %s %s %v", name, data, err)
	}
	if w := ev.Workspaces[0]; w.BotID != "seen" || w.Status != "running" || w.MemoryBytes == 0 || w.LastActive == "" {
		t.Fatalf("reader's workspace: %s", data)
	}
	// The audit lines: the reader's bot only.
	res = reader.do("GET", "/ui/api/audit?bot=seen", "", nil)
	var lines struct {
		Lines []struct {
			Bot, Tool, Token string
		} `json:"lines"`
	}
	err := json.NewDecoder(res.Body).Decode(&lines)
	res.Body.Close()
	if err != nil || len(lines.Lines) == 0 || lines.Lines[0].Bot != "seen" || lines.Lines[0].Tool != "workspace_create" {
		t.Fatalf("audit of seen: %v %+v", err, lines)
	}
	if res := reader.do("GET", "/ui/api/audit?bot=unseen", "", nil); res.StatusCode != http.StatusForbidden {
		t.Fatalf("audit of another bot: %s", res.Status)
	}

	// The admin's session mutates.
	adm := consoleLogin(t, base, b.Token)
	if adm.me["admin"] != true {
		t.Fatalf("admin me: %v", adm.me)
	}
	if res := mustCall(t, adm.mcp(e), "fs_write", map[string]any{"bot_id": "unseen", "path": "x", "content": "yes"}); res.IsError {
		t.Fatalf("fs_write with the admin session: %s", res.Text)
	}
	// Without the CSRF header the cookie is refused, whoever it is.
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	res = adm.do("POST", "/mcp", init, map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "CSRF") {
		t.Fatalf("POST /mcp without CSRF: %s %s", res.Status, body)
	}
}

// consoleEvent reads the first event of a console event stream.
func consoleEvent(t *testing.T, res *http.Response) (name string, data []byte) {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("events: %s", res.Status)
	}
	r := bufio.NewReader(res.Body)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = []byte(strings.TrimPrefix(line, "data: "))
		case line == "" && name != "":
			return name, data
		}
	}
}
