package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/console"
	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/berth-dev/berth/transports"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

const (
	adminToken = "admin-admin-admin-admin"
	alphaToken = "alpha-alpha-alpha-alpha"
)

// fixture is berth's real HTTP handler (console mounted as in serve) with
// a real MCP server holding one tool that counts its calls and says who
// called, and two workspaces for the event stream.
type fixture struct {
	srv   *httptest.Server
	calls atomic.Int32
	audit string
}

// twoBots is the workspace source of the event stream: a fixed list, which
// lets the stream's scope be checked without a runtime (the e2e test runs
// it on containerd).
type twoBots struct{}

func (twoBots) ListVisible(_ context.Context, after string, limit int, visible func(string) bool) ([]workspace.Workspace, bool, error) {
	out := []workspace.Workspace{}
	for _, b := range []string{"alpha", "beta"} {
		if b > after && (visible == nil || visible(b)) && len(out) < limit {
			out = append(out, workspace.Workspace{BotID: b, Status: workspace.StatusStopped, Image: "busybox", Network: "none"})
		}
	}
	return out, false, nil
}
func (twoBots) Metrics(context.Context, string) (workspace.Metrics, error) {
	return workspace.Metrics{}, nil
}
func (twoBots) NetworkRequests(string) ([]workspace.NetworkRequest, error) { return nil, nil }

func newFixture(t *testing.T, tls bool) *fixture {
	t.Helper()
	f := &fixture{audit: filepath.Join(t.TempDir(), "audit.log")}
	s := server.NewMCPServer("test", "1")
	s.AddTool(mcp.NewTool("whoami"), func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		f.calls.Add(1)
		return mcp.NewToolResultText(auth.FromContext(ctx).ID), nil
	})
	h, shutdown := transports.NewHTTPHandler(s, transports.HTTPOptions{
		Addr: "127.0.0.1:0", Token: adminToken,
		ScopedTokens: []auth.ScopedToken{{Name: "alpha-reader", Token: alphaToken, Bots: []string{"alpha"}, Scopes: []auth.Scope{auth.ScopeRead}}},
		Console:      console.Options{Workspaces: twoBots{}, AuditFile: f.audit},
	})
	if tls {
		f.srv = httptest.NewTLSServer(h)
	} else {
		f.srv = httptest.NewServer(h)
	}
	t.Cleanup(func() {
		shutdown(context.Background())
		f.srv.Close()
	})
	return f
}

// browser is a client with a cookie jar, sending the Origin a page of
// origin would.
type browser struct {
	t      *testing.T
	c      *http.Client
	base   string
	origin string
	csrf   string
}

func (f *fixture) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	c := *f.srv.Client() // a copy: each browser has its own jar
	c.Jar = jar
	return &browser{t: t, c: &c, base: f.srv.URL, origin: f.srv.URL}
}

func (b *browser) do(method, path, ctype, body string, hdr map[string]string) *http.Response {
	b.t.Helper()
	req, err := http.NewRequest(method, b.base+path, strings.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { res.Body.Close() })
	return res
}

func (b *browser) login(token string) *http.Response {
	b.t.Helper()
	return b.do("POST", "/ui/login", "application/json", `{"token":"`+token+`"}`, nil)
}

// me logs in with token and reads /ui/api/me, keeping the CSRF token.
func (b *browser) loginMe(token string) map[string]any {
	b.t.Helper()
	if res := b.login(token); res.StatusCode != http.StatusNoContent {
		b.t.Fatalf("login: %s", res.Status)
	}
	res := b.do("GET", "/ui/api/me", "", "", nil)
	if res.StatusCode != http.StatusOK {
		b.t.Fatalf("me: %s", res.Status)
	}
	var me map[string]any
	if err := json.NewDecoder(res.Body).Decode(&me); err != nil {
		b.t.Fatal(err)
	}
	b.csrf, _ = me["csrf"].(string)
	if b.csrf == "" {
		b.t.Fatalf("me without csrf: %v", me)
	}
	return me
}

const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

// callWhoami calls the tool in a session of its own (initialize, then
// tools/call) with the given extra headers on both, and returns the last
// response.
func (b *browser) callWhoami(hdr map[string]string) *http.Response {
	b.t.Helper()
	res := b.do("POST", "/mcp", "application/json", initialize, withAccept(hdr))
	if res.StatusCode != http.StatusOK {
		return res
	}
	h := withAccept(hdr)
	h["Mcp-Session-Id"] = res.Header.Get("Mcp-Session-Id")
	return b.do("POST", "/mcp", "application/json", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}`, h)
}

func withAccept(hdr map[string]string) map[string]string {
	out := map[string]string{"Accept": "application/json, text/event-stream"}
	for k, v := range hdr {
		out[k] = v
	}
	return out
}

func TestLogin(t *testing.T) {
	f := newFixture(t, false)
	b := f.browser(t)
	if res := b.do("GET", "/ui/api/me", "", "", nil); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("me before login: %s", res.Status)
	}
	res := b.login("not-a-token-at-all-xx")
	if res.StatusCode != http.StatusUnauthorized || len(res.Cookies()) != 0 {
		t.Fatalf("bad token: %s %v", res.Status, res.Cookies())
	}
	res = b.login(adminToken)
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("login: %s", res.Status)
	}
	ck := res.Cookies()
	if len(ck) != 1 || ck[0].Name != console.CookieName || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode ||
		ck[0].Secure || ck[0].Path != "/" || ck[0].MaxAge != int(console.DefaultSessionTTL.Seconds()) && ck[0].MaxAge != int(console.DefaultSessionTTL.Seconds())-1 {
		t.Fatalf("cookie: %+v", ck)
	}
	if strings.Contains(ck[0].Value, adminToken) || len(ck[0].Value) != 43 {
		t.Fatalf("cookie value %q is not a 32-byte random id", ck[0].Value)
	}
	me := b.loginMe(adminToken)
	if me["identity"] != "admin token" || me["admin"] != true || me["bots"] != nil || len(me["scopes"].([]any)) != 5 {
		t.Fatalf("me: %v", me)
	}
	scoped := f.browser(t).loginMe(alphaToken)
	if scoped["identity"] != "alpha-reader" || scoped["admin"] != false ||
		!jsonEq(scoped["bots"], []string{"alpha"}) || !jsonEq(scoped["scopes"], []string{"read"}) {
		t.Fatalf("scoped me: %v", scoped)
	}
	// Every console response keeps the page to itself.
	res = b.do("GET", "/ui/", "", "", nil)
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
		res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("headers: %v", res.Header)
	}
	// Logout needs the CSRF token, then forgets the session.
	if res := b.do("POST", "/ui/logout", "", "", nil); res.StatusCode != http.StatusForbidden {
		t.Fatalf("logout without csrf: %s", res.Status)
	}
	if res := b.do("POST", "/ui/logout", "", "", map[string]string{console.CSRFHeader: b.csrf}); res.StatusCode != http.StatusNoContent {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("logout: %s %s", res.Status, body)
	}
	if res := b.do("GET", "/ui/api/me", "", "", nil); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("me after logout: %s", res.Status)
	}
}

func TestLoginRateLimit(t *testing.T) {
	f := newFixture(t, false)
	b := f.browser(t)
	for i := range 10 {
		if res := b.login("wrong-wrong-wrong-wrong"); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %s", i, res.Status)
		}
	}
	// Past the limit even the right token waits: guessing must not go on.
	res := b.login(adminToken)
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" || len(res.Cookies()) != 0 {
		t.Fatalf("11th login: %s %v", res.Status, res.Header)
	}
}

func TestSecureCookieOverTLS(t *testing.T) {
	f := newFixture(t, true)
	b := f.browser(t)
	res := b.login(adminToken)
	if res.StatusCode != http.StatusNoContent || len(res.Cookies()) != 1 || !res.Cookies()[0].Secure {
		t.Fatalf("login over TLS: %s %+v", res.Status, res.Cookies())
	}
	b.loginMe(adminToken)
}

func TestCSRF(t *testing.T) {
	f := newFixture(t, false)
	b := f.browser(t)
	b.loginMe(adminToken)
	for name, hdr := range map[string]map[string]string{
		"no header":    nil,
		"wrong header": {console.CSRFHeader: "x" + b.csrf[1:]},
		"empty header": {console.CSRFHeader: ""},
	} {
		if res := b.callWhoami(hdr); res.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %s", name, res.Status)
		} else if body, _ := io.ReadAll(res.Body); !strings.Contains(string(body), "CSRF") {
			t.Errorf("%s: %s", name, body)
		}
	}
	// The /mcp stream is a GET that needs the header too.
	if res := b.do("GET", "/mcp", "", "", map[string]string{"Accept": "text/event-stream"}); res.StatusCode != http.StatusForbidden {
		t.Errorf("GET /mcp without csrf: %s", res.Status)
	}
	if n := f.calls.Load(); n != 0 {
		t.Fatalf("refused calls ran the tool %d times", n)
	}
	res := b.callWhoami(map[string]string{console.CSRFHeader: b.csrf})
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "admin token") || f.calls.Load() != 1 {
		t.Fatalf("call with csrf: %s %s", res.Status, body)
	}
	// A bearer token goes on without CSRF: the cookie is not what it uses.
	bearer := &browser{t: t, c: f.srv.Client(), base: f.srv.URL}
	if res := bearer.callWhoami(map[string]string{"Authorization": "Bearer " + alphaToken}); res.StatusCode != http.StatusOK {
		t.Fatalf("bearer: %s", res.Status)
	}
	// An unknown session is a 401 that says to log in again.
	stale := f.browser(t)
	u, _ := url.Parse(f.srv.URL)
	stale.c.Jar.SetCookies(u, []*http.Cookie{{Name: console.CookieName, Value: "made-up"}})
	if res := stale.callWhoami(map[string]string{console.CSRFHeader: "made-up"}); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown session: %s", res.Status)
	}
}

// TestCrossSiteFormPost: a page elsewhere posting a form through the
// user's browser (which sends the cookie where SameSite allows) changes
// nothing.
func TestCrossSiteFormPost(t *testing.T) {
	f := newFixture(t, false)
	b := f.browser(t)
	b.loginMe(adminToken)
	evil := *b
	evil.origin = "https://evil.example"
	form := "application/x-www-form-urlencoded"
	for _, path := range []string{"/mcp", "/ui/logout", "/ui/login"} {
		if res := evil.do("POST", path, form, "token="+adminToken, nil); res.StatusCode != http.StatusForbidden {
			t.Errorf("cross-site form post to %s: %s", path, res.Status)
		}
	}
	// Even from berth's own origin a form cannot log in (not JSON).
	if res := b.do("POST", "/ui/login", form, "token="+adminToken, nil); res.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("form login: %s", res.Status)
	}
	// The session is still there and nothing ran.
	if res := b.do("GET", "/ui/api/me", "", "", nil); res.StatusCode != http.StatusOK {
		t.Fatalf("session after the posts: %s", res.Status)
	}
	if f.calls.Load() != 0 {
		t.Fatal("a cross-site post ran a tool")
	}
}

// TestScopedSession: a session of a token for alpha sees alpha only, in
// the event stream and in the audit lines.
func TestScopedSession(t *testing.T) {
	f := newFixture(t, false)
	a, err := audit.Open(f.audit, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, bot := range []string{"alpha", "beta", "alpha", "beta"} {
		a.Log(audit.Record{Token: "admin token", Bot: bot, Kind: audit.KindTool, Tool: "fs_read", Outcome: audit.Allowed})
	}
	a.Close()

	b := f.browser(t)
	b.loginMe(alphaToken)
	ev := b.openEvents()
	name, data := ev.next()
	var got struct {
		Workspaces []struct {
			BotID        string     `json:"bot_id"`
			Limits       *struct{}  `json:"limits"`
			MCPServers   []struct{} `json:"mcp_servers"`
			LastActivity string     `json:"last_activity"`
		} `json:"workspaces"`
	}
	if err := json.Unmarshal(data, &got); err != nil || name != "workspaces" {
		t.Fatalf("event %q %s: %v", name, data, err)
	}
	if len(got.Workspaces) != 1 || got.Workspaces[0].BotID != "alpha" || got.Workspaces[0].Limits == nil ||
		got.Workspaces[0].MCPServers == nil || got.Workspaces[0].LastActivity == "" {
		t.Fatalf("alpha's session got %s", data)
	}

	var lines struct {
		Lines     []audit.Record `json:"lines"`
		Truncated bool           `json:"truncated"`
	}
	res := b.do("GET", "/ui/api/audit?bot=alpha&limit=1", "", "", nil)
	if err := json.NewDecoder(res.Body).Decode(&lines); err != nil || len(lines.Lines) != 1 || lines.Lines[0].Bot != "alpha" || !lines.Truncated {
		t.Fatalf("alpha's audit: %s %+v %v", res.Status, lines, err)
	}
	res = b.do("GET", "/ui/api/audit?bot=alpha", "", "", nil)
	if err := json.NewDecoder(res.Body).Decode(&lines); err != nil || len(lines.Lines) != 2 || lines.Truncated {
		t.Fatalf("alpha's whole audit: %+v %v", lines, err)
	}
	for _, q := range []string{"?bot=beta", "", "?bot=alpha&limit=501", "?bot=../x"} {
		if res := b.do("GET", "/ui/api/audit"+q, "", "", nil); res.StatusCode == http.StatusOK {
			t.Errorf("audit%s answered for alpha's session", q)
		}
	}
	admin := f.browser(t)
	admin.loginMe(adminToken)
	res = admin.do("GET", "/ui/api/audit", "", "", nil)
	if err := json.NewDecoder(res.Body).Decode(&lines); err != nil || len(lines.Lines) != 4 {
		t.Fatalf("admin's audit: %+v %v", lines, err)
	}
	_, data = admin.openEvents().next()
	if !strings.Contains(string(data), `"beta"`) {
		t.Fatalf("admin's events lack beta: %s", data)
	}
}

func TestEventStreamCap(t *testing.T) {
	f := newFixture(t, false)
	b := f.browser(t)
	b.loginMe(adminToken)
	for i := range 4 {
		if name, _ := b.openEvents().next(); name != "workspaces" {
			t.Fatalf("stream %d began with %q", i, name)
		}
	}
	if res := b.do("GET", "/ui/api/events", "", "", nil); res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("5th stream: %s", res.Status)
	}
	// Another session has streams of its own.
	other := f.browser(t)
	other.loginMe(adminToken)
	if name, _ := other.openEvents().next(); name != "workspaces" {
		t.Fatal("another session's stream refused")
	}
}

// TestPage: /ui serves the bundle's index.html, or without a bundle a
// page that says how to build it.
func TestPage(t *testing.T) {
	f := newFixture(t, false)
	res := f.browser(t).do("GET", "/ui", "", "", nil)
	body, _ := io.ReadAll(res.Body)
	index, err := os.ReadFile("dist/index.html")
	if err == nil {
		if res.StatusCode != http.StatusOK || string(body) != string(index) {
			t.Fatalf("%s: not the bundle's index.html", res.Status)
		}
	} else if !strings.Contains(string(body), "console not built: run <code>make build</code>") {
		t.Fatalf("%s %s", res.Status, body)
	}
	if res := f.browser(t).do("GET", "/ui/.keep", "", "", nil); res.StatusCode != http.StatusNotFound {
		t.Fatalf("/ui/.keep: %s", res.Status)
	}
}

type events struct {
	t *testing.T
	r *bufio.Reader
}

func (b *browser) openEvents() *events {
	b.t.Helper()
	res := b.do("GET", "/ui/api/events", "", "", nil)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		b.t.Fatalf("events: %s", res.Status)
	}
	return &events{t: b.t, r: bufio.NewReader(res.Body)}
}

// next reads one event.
func (e *events) next() (name string, data []byte) {
	e.t.Helper()
	for {
		line, err := e.r.ReadString('\n')
		if err != nil {
			e.t.Fatalf("event stream: %v", err)
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

func jsonEq(got any, want any) bool {
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(want)
	return string(a) == string(b)
}

// TestWebSocketCSRF: a terminal handshake with the cookie must carry the
// CSRF token in its query and come from berth's own origin (a browser sets
// no headers on it, and --allowed-origins do not know the token).
func TestWebSocketCSRF(t *testing.T) {
	admin := auth.Local("admin token")
	c := console.New(console.Options{Login: func(tok string) *auth.Principal {
		if tok == adminToken {
			return admin
		}
		return nil
	}})
	defer c.Close()
	rec := httptest.NewRecorder()
	login := httptest.NewRequest("POST", "/ui/login", strings.NewReader(`{"token":"`+adminToken+`"}`))
	login.Header.Set("Content-Type", "application/json")
	c.Handler().ServeHTTP(rec, login)
	cookies := rec.Result().Cookies()
	rec = httptest.NewRecorder()
	me := httptest.NewRequest("GET", "/ui/api/me", nil)
	me.AddCookie(cookies[0])
	c.Handler().ServeHTTP(rec, me)
	var who struct{ CSRF string }
	if err := json.NewDecoder(rec.Body).Decode(&who); err != nil || who.CSRF == "" {
		t.Fatalf("me: %v %s", err, rec.Body)
	}
	upgrade := "websocket"
	handshake := func(query, origin string) (*auth.Principal, error) {
		r := httptest.NewRequest("GET", "http://berth.test/bots/a/terminal/ws?terminal_id=t1"+query, nil)
		r.Header.Set("Upgrade", upgrade)
		r.Header.Set("Connection", "Upgrade")
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		r.AddCookie(cookies[0])
		return c.Principal(r)
	}
	if p, err := handshake("&csrf="+who.CSRF, "http://berth.test"); err != nil || p != admin {
		t.Fatalf("handshake with csrf: %v %v", p, err)
	}
	for name, args := range map[string][2]string{
		"no csrf":       {"", "http://berth.test"},
		"wrong csrf":    {"&csrf=x" + who.CSRF, "http://berth.test"},
		"no origin":     {"&csrf=" + who.CSRF, ""},
		"other origin":  {"&csrf=" + who.CSRF, "http://evil.example"},
		"origin prefix": {"&csrf=" + who.CSRF, "http://berth.test.evil.example"},
	} {
		if _, err := handshake(args[0], args[1]); !errors.Is(err, console.ErrCSRF) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Worded otherwise, it is still a handshake (the WebSocket library
	// accepts "websocket" anywhere in the list).
	for _, upgrade = range []string{"websocket, foo", "foo, WebSocket", "h2c"} {
		if _, err := handshake("", "http://berth.test"); !errors.Is(err, console.ErrCSRF) {
			t.Errorf("Upgrade: %s without csrf: %v", upgrade, err)
		}
	}
	// A plain read needs no CSRF token; an unknown cookie is no session.
	r := httptest.NewRequest("GET", "http://berth.test/bots/a/files?path=x", nil)
	r.AddCookie(cookies[0])
	if p, err := c.Principal(r); err != nil || p != admin {
		t.Fatalf("GET with the cookie: %v %v", p, err)
	}
	r.Header.Del("Cookie")
	r.AddCookie(&http.Cookie{Name: console.CookieName, Value: "guess"})
	if _, err := c.Principal(r); !errors.Is(err, console.ErrNoSession) {
		t.Fatalf("unknown cookie: %v", err)
	}
}
