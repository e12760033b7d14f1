package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/coder/websocket"
)

// The bots' ports: an app in the workspace (the port server, and busybox
// httpd) reached through /bots/{bot}/ports/{port}/ with a token, through a
// link's cookie, and on a preview host; refused without the right
// credentials, for ports not exposed, and after unexpose.

const (
	portBot        = "web"
	portOtherBot   = "elsewhere"
	portExecToken  = "ports-exec-0123456789abcdef"  // exec on portBot
	portReadToken  = "ports-read-0123456789abcdef"  // read on portBot
	portOtherToken = "ports-other-0123456789abcdef" // every scope, another bot
)

// portEnv is berth over HTTP with --preview-domain localhost, the port
// server's image as the default, and scoped tokens for the refusals.
type portEnv struct {
	*env
	b    *berthHTTP
	c    mcpClient
	base string // http://127.0.0.1:PORT
}

func newPortEnv(t *testing.T, extra ...string) *portEnv {
	t.Helper()
	e := newEnv(t)
	e.image = testenv.ImportArchive(t, e.address, e.namespace, testenv.PortServerArchive(t))
	tokens := filepath.Join(e.stateDir, "tokens.yaml")
	err := os.WriteFile(tokens, []byte(fmt.Sprintf(`tokens:
  - {name: p-exec, token: %s, bots: [%s], scopes: [exec]}
  - {name: p-read, token: %s, bots: [%s], scopes: [read]}
  - {name: p-other, token: %s, bots: [%s], scopes: [read, write, exec, manage]}
`, portExecToken, portBot, portReadToken, portBot, portOtherToken, portOtherBot)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	e.extra = append(e.extra, "--tokens-file", tokens, "--preview-domain", "localhost")
	e.extra = append(e.extra, extra...)
	b := e.serveHTTP()
	return &portEnv{env: e, b: b, c: e.httpMcpgo(b), base: strings.TrimSuffix(b.URL, "/mcp")}
}

// startApps runs the port server on 8080 and busybox httpd on 8081 in the
// workspace, and waits until both answer inside it.
func (pe *portEnv) startApps(t *testing.T) {
	t.Helper()
	mustCall(t, pe.c, "exec", map[string]any{"bot_id": portBot, "argv": []string{"sh", "-c",
		"mkdir -p /data/www && echo 'busybox httpd here' > /data/www/index.html"}}).decode(t, &struct{}{})
	for _, argv := range [][]string{
		{testenv.PortServerPath, "127.0.0.1:8080"},
		{"httpd", "-f", "-p", "127.0.0.1:8081", "-h", "/data/www"},
	} {
		mustCall(t, pe.c, "exec", map[string]any{"bot_id": portBot, "argv": argv, "background": true}).decode(t, &struct{}{})
	}
	waitFor(t, "the apps to listen in the workspace", func() bool {
		var out struct {
			ExitCode int `json:"exit_code"`
		}
		mustCall(t, pe.c, "exec", map[string]any{"bot_id": portBot, "argv": []string{"sh", "-c",
			"wget -q -O - http://127.0.0.1:8080/hello && wget -q -O - http://127.0.0.1:8081/"}}).decode(t, &out)
		return out.ExitCode == 0
	})
}

type exposeOut struct {
	Port struct {
		Port        int    `json:"port"`
		URL         string `json:"url"`
		PreviewHost string `json:"preview_host"`
		Links       []struct {
			ID string `json:"id"`
		} `json:"links"`
	} `json:"port"`
	Link          string    `json:"link"`
	LinkID        string    `json:"link_id"`
	LinkExpiresAt time.Time `json:"link_expires_at"`
}

func (pe *portEnv) expose(t *testing.T, port int, args ...any) exposeOut {
	t.Helper()
	a := map[string]any{"bot_id": portBot, "port": port}
	for i := 0; i+1 < len(args); i += 2 {
		a[args[i].(string)] = args[i+1]
	}
	var out exposeOut
	mustCall(t, pe.c, "port_expose", a).decode(t, &out)
	return out
}

// portReq is one request to berth; host, if set, is the Host header.
type portReq struct {
	method, path, host, token string
	header                    map[string]string
	jar                       http.CookieJar
	follow                    bool
}

type portResp struct {
	status int
	header http.Header
	body   string
}

func (pe *portEnv) do(t *testing.T, r portReq) portResp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, cmpOr(r.method, http.MethodGet), pe.base+r.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.host != "" {
		req.Host = r.host
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	hc := &http.Client{Jar: r.jar}
	if !r.follow {
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	} else if r.host != "" {
		// Redirects on a preview host stay on it.
		hc.CheckRedirect = func(next *http.Request, _ []*http.Request) error { next.Host = r.host; return nil }
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return portResp{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func wantStatus(t *testing.T, what string, r portResp, status int, bodyHas string) {
	t.Helper()
	if r.status != status || !strings.Contains(r.body, bodyHas) {
		t.Errorf("%s: %d %q, want %d with %q", what, r.status, r.body, status, bodyHas)
	}
}

// echo is what the port server's /echo saw.
type echo struct {
	Path     string              `json:"path"`
	RawQuery string              `json:"raw_query"`
	Host     string              `json:"host"`
	Header   map[string][]string `json:"header"`
}

func decodeEcho(t *testing.T, r portResp) echo {
	t.Helper()
	var e echo
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &e) != nil {
		t.Fatalf("/echo: %d %q", r.status, r.body)
	}
	return e
}

// wsEcho opens a WebSocket to path on berth and checks one message comes
// back.
func (pe *portEnv) wsEcho(t *testing.T, path, host string, header http.Header) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(pe.base, "http")+path, &websocket.DialOptions{HTTPHeader: header, Host: host})
	if err != nil {
		if resp != nil {
			return fmt.Errorf("dial: %w (HTTP %d)", err, resp.StatusCode)
		}
		return fmt.Errorf("dial: %w", err)
	}
	defer c.CloseNow()
	msg := "ping through the agent " + path
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return err
	}
	_, data, err := c.Read(ctx)
	if err != nil {
		return err
	}
	if string(data) != msg {
		return fmt.Errorf("echo %q, want %q", data, msg)
	}
	return c.Close(websocket.StatusNormalClosure, "")
}

func TestPorts(t *testing.T) {
	pe := newPortEnv(t)
	var ws struct {
		Workspace struct {
			Network string `json:"network"`
		} `json:"workspace"`
	}
	mustCall(t, pe.c, "workspace_create", map[string]any{"bot_id": portBot, "network": "none"}).decode(t, &ws)
	// The workspace has no network but its loopback (network none): the
	// ports are reached through the agent, not through a route.
	if ws.Workspace.Network != "none" {
		t.Fatalf("workspace network %q, want none", ws.Workspace.Network)
	}
	var netdev struct {
		Stdout string `json:"stdout"`
	}
	mustCall(t, pe.c, "exec", map[string]any{"bot_id": portBot, "argv": []string{"cat", "/proc/net/dev"}}).decode(t, &netdev)
	for _, line := range strings.Split(netdev.Stdout, "\n")[2:] {
		if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && name != "lo" {
			t.Fatalf("the workspace has interface %s besides lo: this test wants network none\n%s", name, netdev.Stdout)
		}
	}
	pe.startApps(t)
	admin := pe.b.Token
	p8080 := "/bots/" + portBot + "/ports/8080/"

	t.Run("not exposed yet", func(t *testing.T) {
		wantStatus(t, "admin on an unexposed port", pe.do(t, portReq{path: p8080 + "hello", token: admin}), 404, "is not exposed")
	})

	t.Run("bad input", func(t *testing.T) {
		for _, port := range []int{0, 70000, -1} {
			res, err := pe.c.call(context.Background(), "port_expose", map[string]any{"bot_id": portBot, "port": port}, nil)
			if err != nil || !res.IsError || !strings.Contains(res.Text, "1-65535") {
				t.Errorf("port_expose port %d: %v %+v", port, err, res)
			}
		}
		res, err := pe.c.call(context.Background(), "port_expose", map[string]any{"bot_id": portBot, "port": 8080, "protocol": "udp"}, nil)
		if err != nil || !res.IsError || !strings.Contains(res.Text, "protocol") {
			t.Errorf("port_expose protocol udp: %v %+v", err, res)
		}
		res, err = pe.c.call(context.Background(), "port_expose", map[string]any{"bot_id": portBot, "port": 8080, "link_ttl_hours": 100000}, nil)
		if err != nil || !res.IsError || !strings.Contains(res.Text, "link_ttl") {
			t.Errorf("port_expose with a 100000 h link: %v %+v", err, res)
		}
		for _, p := range []string{"0", "70000", "08080", "x"} {
			wantStatus(t, "port "+p+" in the path", pe.do(t, portReq{path: "/bots/" + portBot + "/ports/" + p + "/", token: admin}), 400, "1-65535")
		}
	})

	exp := pe.expose(t, 8080, "name", "port server")
	if exp.Port.URL != p8080 || exp.Port.PreviewHost != "8080-web.localhost" || !strings.HasPrefix(exp.Link, p8080+"?berth_link=") || len(exp.Port.Links) != 1 {
		t.Fatalf("port_expose: %+v", exp)
	}
	if d := time.Until(exp.LinkExpiresAt); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("the default link lives %s, want 24h", d)
	}
	token := strings.TrimPrefix(exp.Link, p8080+"?berth_link=")

	t.Run("token", func(t *testing.T) {
		wantStatus(t, "admin", pe.do(t, portReq{path: p8080 + "hello", token: admin}), 200, "hello from portserver")
		wantStatus(t, "exec token of the bot", pe.do(t, portReq{path: p8080 + "hello", token: portExecToken}), 200, "hello from portserver")
		wantStatus(t, "no credentials", pe.do(t, portReq{path: p8080 + "hello"}), 401, "bearer token")
		wantStatus(t, "bad token", pe.do(t, portReq{path: p8080 + "hello", token: "nope-0123456789abcdef"}), 401, "invalid")
		wantStatus(t, "read token of the bot", pe.do(t, portReq{path: p8080 + "hello", token: portReadToken}), 403, "")
		wantStatus(t, "another bot's token", pe.do(t, portReq{path: p8080 + "hello", token: portOtherToken}), 403, "")

		ec := decodeEcho(t, pe.do(t, portReq{path: p8080 + "echo?a=1", token: admin,
			header: map[string]string{"Cookie": "app=1; berth_link=forged", "X-Forwarded-For": "6.6.6.6"}}))
		if ec.Path != "/echo" || ec.RawQuery != "a=1" || ec.Host != "localhost:8080" {
			t.Errorf("the app saw path %q query %q host %q", ec.Path, ec.RawQuery, ec.Host)
		}
		h := http.Header(ec.Header)
		if h.Get("Authorization") != "" || h.Get("Cookie") != "app=1" {
			t.Errorf("berth's credentials reached the app: Authorization %q, Cookie %q", h.Get("Authorization"), h.Get("Cookie"))
		}
		if h.Get("X-Forwarded-Prefix") != "/bots/web/ports/8080" || h.Get("X-Forwarded-Host") != strings.TrimPrefix(pe.base, "http://") ||
			h.Get("X-Forwarded-Proto") != "http" || h.Get("X-Forwarded-For") != "127.0.0.1" {
			t.Errorf("forwarding headers: %v", h)
		}
		r := pe.do(t, portReq{path: p8080 + "redirect", token: admin})
		if r.status != http.StatusFound || r.header.Get("Location") != p8080+"hello" {
			t.Errorf("the app's redirect to /hello: %d %q", r.status, r.header.Get("Location"))
		}
		if err := pe.wsEcho(t, p8080+"ws", "", http.Header{"Authorization": {"Bearer " + portExecToken}}); err != nil {
			t.Errorf("WebSocket with the token: %v", err)
		}
		if err := pe.wsEcho(t, p8080+"ws", "", nil); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("WebSocket without credentials: %v", err)
		}
	})

	t.Run("link", func(t *testing.T) {
		r := pe.do(t, portReq{path: exp.Link})
		if r.status != http.StatusSeeOther || r.header.Get("Location") != p8080 {
			t.Fatalf("opening the link: %d %q %q", r.status, r.header.Get("Location"), r.body)
		}
		sc := r.header.Get("Set-Cookie")
		for _, attr := range []string{"berth_link=" + token, "Path=" + p8080, "HttpOnly", "SameSite=Lax", "Expires="} {
			if !strings.Contains(sc, attr) {
				t.Errorf("the link's cookie %q lacks %s", sc, attr)
			}
		}
		jar, _ := cookiejar.New(nil)
		wantStatus(t, "link followed by a browser", pe.do(t, portReq{path: exp.Link, jar: jar, follow: true}), 200, "hello from portserver")
		ec := decodeEcho(t, pe.do(t, portReq{path: p8080 + "echo", jar: jar}))
		if h := http.Header(ec.Header); h.Get("Cookie") != "" || h.Get("Authorization") != "" {
			t.Errorf("the link's cookie reached the app: %v", ec.Header)
		}
		if err := pe.wsEcho(t, p8080+"ws", "", http.Header{"Cookie": {"berth_link=" + token}}); err != nil {
			t.Errorf("WebSocket with the link's cookie: %v", err)
		}
		wantStatus(t, "a forged link", pe.do(t, portReq{path: p8080 + "?berth_link=" + strings.Repeat("A", len(token))}), 403, "invalid, expired or revoked")
		wantStatus(t, "a forged cookie", pe.do(t, portReq{path: p8080 + "hello", header: map[string]string{"Cookie": "berth_link=forged"}}), 403, "invalid, expired or revoked")
	})

	exp81 := pe.expose(t, 8081)
	t.Run("busybox httpd", func(t *testing.T) {
		wantStatus(t, "httpd with the token", pe.do(t, portReq{path: "/bots/web/ports/8081/", token: admin}), 200, "busybox httpd here")
		jar, _ := cookiejar.New(nil)
		wantStatus(t, "httpd through its link", pe.do(t, portReq{path: exp81.Link, jar: jar, follow: true}), 200, "busybox httpd here")
		// A link opens its own port only.
		wantStatus(t, "8080's link on 8081", pe.do(t, portReq{path: "/bots/web/ports/8081/", header: map[string]string{"Cookie": "berth_link=" + token}}), 403, "")
		wantStatus(t, "8080's link on 8081", pe.do(t, portReq{path: "/bots/web/ports/8081/?berth_link=" + token}), 403, "")
	})

	t.Run("host routing", func(t *testing.T) {
		host := "8080-web.localhost:" + strings.Split(pe.base, ":")[2]
		wantStatus(t, "preview host with the token", pe.do(t, portReq{path: "/hello", host: host, token: portExecToken}), 200, "hello from portserver")
		wantStatus(t, "preview host without credentials", pe.do(t, portReq{path: "/hello", host: host}), 401, "")
		wantStatus(t, "preview host with another bot's token", pe.do(t, portReq{path: "/hello", host: host, token: portOtherToken}), 403, "")
		// berth's own routes are the app's on a preview host.
		wantStatus(t, "/mcp on the preview host", pe.do(t, portReq{path: "/mcp", host: host, token: admin}), 404, "")
		r := pe.do(t, portReq{path: "/?berth_link=" + token, host: host})
		sc := r.header.Get("Set-Cookie")
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/" || !strings.Contains(sc, "Path=/;") || strings.Contains(sc, "Domain") {
			t.Errorf("the link on the preview host: %d %q, cookie %q", r.status, r.header.Get("Location"), sc)
		}
		ec := decodeEcho(t, pe.do(t, portReq{path: "/echo", host: host, header: map[string]string{"Cookie": "berth_link=" + token}}))
		if ec.Path != "/echo" || http.Header(ec.Header).Get("X-Forwarded-Prefix") != "" || http.Header(ec.Header).Get("X-Forwarded-Host") != host {
			t.Errorf("the app on the preview host saw %+v", ec)
		}
		if err := pe.wsEcho(t, "/ws", host, http.Header{"Cookie": {"berth_link=" + token}}); err != nil {
			t.Errorf("WebSocket on the preview host: %v", err)
		}
		wantStatus(t, "a port not exposed on its preview host", pe.do(t, portReq{path: "/", host: "9999-web.localhost", token: admin}), 404, "not exposed")
	})

	t.Run("nothing listening", func(t *testing.T) {
		pe.expose(t, 8082)
		wantStatus(t, "exposed port without a server", pe.do(t, portReq{path: "/bots/web/ports/8082/", token: admin}), 502, "nothing in the workspace accepts connections on port 8082")
	})

	t.Run("list", func(t *testing.T) {
		var out struct {
			Ports []struct {
				Port  int `json:"port"`
				Links []struct {
					ID string `json:"id"`
				} `json:"links"`
			} `json:"ports"`
		}
		res := mustCall(t, pe.env.httpSDK(pe.b), "port_list", map[string]any{"bot_id": portBot})
		res.decode(t, &out)
		if len(out.Ports) != 3 || out.Ports[0].Port != 8080 || len(out.Ports[0].Links) != 1 || out.Ports[0].Links[0].ID != exp.LinkID {
			t.Errorf("port_list: %s", res.Structured)
		}
		if strings.Contains(string(res.Structured)+res.Text, token) {
			t.Error("port_list shows a link's token")
		}
	})

	t.Run("unexpose", func(t *testing.T) {
		var out struct {
			Removed      bool `json:"removed"`
			LinksRevoked int  `json:"links_revoked"`
		}
		// A WebSocket opened with the link before: unexposing ends it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(pe.base, "http")+p8080+"ws",
			&websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"berth_link=" + token}}})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		if err := ws.Write(ctx, websocket.MessageText, []byte("before")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ws.Read(ctx); err != nil {
			t.Fatal(err)
		}
		mustCall(t, pe.c, "port_unexpose", map[string]any{"bot_id": portBot, "port": 8080}).decode(t, &out)
		if _, _, err := ws.Read(ctx); err == nil || ctx.Err() != nil {
			t.Errorf("a WebSocket through the link outlived port_unexpose: %v", err)
		}
		if !out.Removed || out.LinksRevoked != 1 {
			t.Errorf("port_unexpose: %+v", out)
		}
		wantStatus(t, "token after unexpose", pe.do(t, portReq{path: p8080 + "hello", token: admin}), 404, "not exposed")
		wantStatus(t, "cookie after unexpose", pe.do(t, portReq{path: p8080 + "hello", header: map[string]string{"Cookie": "berth_link=" + token}}), 403, "revoked")
		wantStatus(t, "link after unexpose", pe.do(t, portReq{path: exp.Link}), 403, "revoked")
		mustCall(t, pe.c, "port_unexpose", map[string]any{"bot_id": portBot, "port": 8080}).decode(t, &out)
		if out.Removed {
			t.Errorf("unexposing twice: %+v", out)
		}
		// Exposing again gives a new link; the old one stays dead.
		again := pe.expose(t, 8080)
		wantStatus(t, "the old link on the port exposed again", pe.do(t, portReq{path: exp.Link}), 403, "revoked")
		jar, _ := cookiejar.New(nil)
		wantStatus(t, "the new link", pe.do(t, portReq{path: again.Link, jar: jar, follow: true}), 200, "hello from portserver")
	})

	t.Run("berth restart", func(t *testing.T) {
		pe.b.kill()
		pe.b = pe.env.serveHTTP()
		pe.base = strings.TrimSuffix(pe.b.URL, "/mcp")
		pe.c = pe.env.httpMcpgo(pe.b)
		jar, _ := cookiejar.New(nil)
		wantStatus(t, "8081's link after a berth restart", pe.do(t, portReq{path: exp81.Link, jar: jar, follow: true}), 200, "busybox httpd here")
	})

	t.Run("delete", func(t *testing.T) {
		file := filepath.Join(pe.stateDir, "ports", portBot+".json")
		if _, err := os.Stat(file); err != nil {
			t.Fatalf("the exposed ports are not kept in %s: %v", file, err)
		}
		mustCall(t, pe.c, "workspace_delete", map[string]any{"bot_id": portBot}).decode(t, &struct{}{})
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Errorf("the exposed ports outlived the workspace: %v", err)
		}
		wantStatus(t, "8081's link after delete", pe.do(t, portReq{path: exp81.Link}), 403, "")
		res, err := pe.c.call(context.Background(), "port_expose", map[string]any{"bot_id": portBot, "port": 8080}, nil)
		if err != nil || !res.IsError || !strings.Contains(res.Text, "no workspace") {
			t.Errorf("port_expose without a workspace: %v %+v", err, res)
		}
	})
}

// TestPortCaps checks the bounds on what reaches a bot's ports: how many
// ports it may expose, how many connections may be open to them, the
// request body, and idle connections; berth keeps serving throughout.
func TestPortCaps(t *testing.T) {
	pe := newPortEnv(t, "--max-exposed-ports", "2", "--max-port-conns", "3", "--port-max-body", "1024",
		"--port-idle-timeout", "2s", "--port-link-max-ttl", "48h")
	mustCall(t, pe.c, "workspace_create", map[string]any{"bot_id": portBot, "network": "none"}).decode(t, &struct{}{})
	pe.startApps(t)
	admin := pe.b.Token
	pe.expose(t, 8080)
	pe.expose(t, 8081)
	res, err := pe.c.call(context.Background(), "port_expose", map[string]any{"bot_id": portBot, "port": 8082}, nil)
	if err != nil || !res.IsError || !strings.Contains(res.Text, "already exposes 2 ports") {
		t.Errorf("a third port with --max-exposed-ports 2: %v %+v", err, res)
	}
	res, err = pe.c.call(context.Background(), "port_expose", map[string]any{"bot_id": portBot, "port": 8080, "link_ttl_hours": 49}, nil)
	if err != nil || !res.IsError || !strings.Contains(res.Text, "48h") {
		t.Errorf("a 49 h link with --port-link-max-ttl 48h: %v %+v", err, res)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	post := func(n int) portResp {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, pe.base+"/bots/web/ports/8080/echo", strings.NewReader(strings.Repeat("x", n)))
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return portResp{status: resp.StatusCode, body: string(body)}
	}
	wantStatus(t, "a body within --port-max-body", post(1024), 200, `"body_len":1024`)
	wantStatus(t, "a body over --port-max-body", post(4096), 413, "larger than 1024 bytes")

	// Three WebSockets fill the bot's connections (the kept-alive ones
	// close as the idle timeout passes); a fourth connection is refused
	// while they are open, and berth serves everything else meanwhile.
	url := "ws" + strings.TrimPrefix(pe.base, "http") + "/bots/web/ports/8080/ws"
	hdr := http.Header{"Authorization": {"Bearer " + admin}}
	var open []*websocket.Conn
	waitFor(t, "three WebSockets to be open at once", func() bool {
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr})
		if err == nil {
			open = append(open, c)
		}
		return len(open) == 3
	})
	for _, c := range open {
		// Keep them busy, so that idleness does not close them.
		if err := c.Write(ctx, websocket.MessageText, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r := pe.do(t, portReq{path: "/bots/web/ports/8081/", token: admin})
	wantStatus(t, "a fourth connection", r, 503, "connections to its ports open, the most it may")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	mustCall(t, pe.c, "port_list", map[string]any{"bot_id": portBot}).decode(t, &struct{}{})

	// Silent, the WebSockets reach the idle timeout and berth closes them;
	// then the bot's connections are free again.
	for _, c := range open {
		if _, _, err := c.Read(ctx); err == nil {
			t.Error("a silent WebSocket was not closed")
		}
		c.CloseNow()
	}
	waitFor(t, "the port to answer again once idle connections closed", func() bool {
		return pe.do(t, portReq{path: "/bots/web/ports/8081/", token: admin}).status == 200
	})
}

// benchPorts starts berth with the port server running and exposed in a
// workspace, and the same server on the host's loopback for the baseline.
// It returns berth's URL of the port and the direct one.
func benchPorts(b *testing.B) (viaBerth, direct, token string) {
	e := newEnv(b)
	e.image = testenv.ImportArchive(b, e.address, e.namespace, testenv.PortServerArchive(b))
	e.extra = append(e.extra, "--audit-log", "off")
	srv := e.serveHTTP()
	c := e.httpMcpgo(srv)
	mustCall(b, c, "workspace_create", map[string]any{"bot_id": "bench", "network": "none"}).decode(b, &struct{}{})
	mustCall(b, c, "exec", map[string]any{"bot_id": "bench", "argv": []string{testenv.PortServerPath, "127.0.0.1:8080"}, "background": true}).decode(b, &struct{}{})
	mustCall(b, c, "port_expose", map[string]any{"bot_id": "bench", "port": 8080}).decode(b, &struct{}{})
	viaBerth = strings.TrimSuffix(srv.URL, "/mcp") + "/bots/bench/ports/8080"

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(testenv.PortServerBinary(b), addr)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	direct = "http://" + addr
	for _, u := range []string{viaBerth, direct} {
		deadline := time.Now().Add(time.Minute)
		for {
			req, _ := http.NewRequest(http.MethodGet, u+"/hello", nil)
			req.Header.Set("Authorization", "Bearer "+srv.Token)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s/hello does not answer: %v", u, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return viaBerth, direct, srv.Token
}

// BenchmarkPortRequest compares an HTTP request to an app through
// /bots/{bot}/ports/{port}/ (berth, then a tunnel through the agent) with
// the same request straight to the same server on the host's loopback.
// Both use kept-alive connections, as browsers do.
func BenchmarkPortRequest(b *testing.B) {
	viaBerth, direct, token := benchPorts(b)
	for _, v := range []struct{ name, url string }{{"berth", viaBerth}, {"direct", direct}} {
		b.Run(v.name, func(b *testing.B) {
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			defer hc.CloseIdleConnections()
			var lat []time.Duration
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodGet, v.url+"/hello", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				start := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(start))
				if resp.StatusCode != http.StatusOK || string(body) != "hello from portserver" {
					b.Fatalf("%d %q", resp.StatusCode, body)
				}
			}
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkPortWebSocket compares a message's round trip on an open
// WebSocket through berth with the same round trip straight to the server.
func BenchmarkPortWebSocket(b *testing.B) {
	viaBerth, direct, token := benchPorts(b)
	for _, v := range []struct{ name, url string }{{"berth", viaBerth}, {"direct", direct}} {
		b.Run(v.name, func(b *testing.B) {
			ctx := context.Background()
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(v.url, "http")+"/ws",
				&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
			if err != nil {
				b.Fatal(err)
			}
			defer c.CloseNow()
			msg := []byte("ping")
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
					b.Fatal(err)
				}
				if _, _, err := c.Read(ctx); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			reportPercentiles(b, lat)
		})
	}
}
