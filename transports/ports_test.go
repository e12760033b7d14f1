package transports

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestStripCookie(t *testing.T) {
	for in, want := range map[string]string{
		"berth_link=abc":                      "",
		"app=1; berth_link=abc; other=2":      "app=1; other=2",
		"berth_link=abc;app=1":                "app=1",
		"xberth_link=1; berth_linky=2":        "xberth_link=1; berth_linky=2",
		" berth_link = abc ; session=s3cr3t ": "session=s3cr3t",
	} {
		h := http.Header{"Cookie": {in}}
		stripCookie(h, portLinkCookie)
		if got := h.Get("Cookie"); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
	h := http.Header{"Cookie": {"a=1", "berth_link=x"}}
	stripCookie(h, portLinkCookie)
	if got := h.Values("Cookie"); len(got) != 1 || got[0] != "a=1" {
		t.Errorf("two Cookie headers: %q", got)
	}
}

func TestTunnelHost(t *testing.T) {
	for _, c := range []struct {
		bot  string
		port int
	}{{"web", 8080}, {"a.b_c-d", 1}, {"x", 65535}} {
		bot, port, ok := parseTunnelHost(tunnelHost(c.bot, c.port))
		if !ok || bot != c.bot || port != c.port {
			t.Errorf("%+v: %q %d %v", c, bot, port, ok)
		}
	}
}

func TestPortRedirectsStayUnderThePrefix(t *testing.T) {
	pp := &portProxy{}
	t8080 := portTarget{bot: "web", port: 8080, prefix: "/bots/web/ports/8080"}
	for _, c := range []struct {
		t        portTarget
		loc, out string
	}{
		{t8080, "/login?next=%2F", "/bots/web/ports/8080/login?next=%2F"},
		{t8080, "http://localhost:8080/a#b", "/bots/web/ports/8080/a#b"},
		{t8080, "http://127.0.0.1:8080/a", "/bots/web/ports/8080/a"},
		{t8080, "https://example.com/x", "https://example.com/x"},
		{t8080, "//example.com/x", "//example.com/x"},
		{t8080, "relative/path", "relative/path"},
		{t8080, "http://localhost:9090/a", "http://localhost:9090/a"},
		{portTarget{bot: "web", port: 8080}, "/login", "/login"},
	} {
		req, _ := http.NewRequestWithContext(context.WithValue(context.Background(), portTargetKey{}, c.t), "GET", "http://x/", nil)
		res := &http.Response{Header: http.Header{"Location": {c.loc}}, Request: req}
		if err := pp.modifyResponse(res); err != nil {
			t.Fatal(err)
		}
		if got := res.Header.Get("Location"); got != c.out {
			t.Errorf("%q (prefix %q): %q, want %q", c.loc, c.t.prefix, got, c.out)
		}
	}
}

// A bot's page on the path route (berth's own origin) is sandboxed into an
// opaque origin, beside its own policy, and may not widen its service
// worker's scope; on its preview host (an origin of its own) it is left as
// the app sent it.
func TestPortPathRouteIsSandboxed(t *testing.T) {
	pp := &portProxy{}
	for _, c := range []struct {
		t       portTarget
		sandbox bool
	}{
		{portTarget{bot: "web", port: 8080, prefix: "/bots/web/ports/8080"}, true},
		{portTarget{bot: "web", port: 8080}, false},
	} {
		req, _ := http.NewRequestWithContext(context.WithValue(context.Background(), portTargetKey{}, c.t), "GET", "http://x/", nil)
		res := &http.Response{Header: http.Header{
			"Content-Security-Policy": {"script-src 'self'"},
			"Service-Worker-Allowed":  {"/"},
		}, Request: req}
		if err := pp.modifyResponse(res); err != nil {
			t.Fatal(err)
		}
		csp := res.Header.Values("Content-Security-Policy")
		if c.sandbox {
			if len(csp) != 2 || csp[0] != "script-src 'self'" || csp[1] != portPathSandbox {
				t.Errorf("path route: CSP %q, want the app's and the sandbox", csp)
			}
			if strings.Contains(portPathSandbox, "allow-same-origin") {
				t.Error("the sandbox gives the page berth's origin")
			}
			if res.Header.Get("Service-Worker-Allowed") != "" {
				t.Error("path route: Service-Worker-Allowed kept")
			}
		} else if len(csp) != 1 || res.Header.Get("Service-Worker-Allowed") != "/" {
			t.Errorf("preview host: headers changed: %v", res.Header)
		}
	}
}

// A bot's response keeps only the cookies that are the app's own: none
// named like berth's, none for a wider Domain, on the path route none for a
// Path outside the port's prefix; and it cannot clear berth's origin.
func TestPortResponseKeepsOwnCookies(t *testing.T) {
	pp := &portProxy{}
	set := []string{
		"app=1; Path=/bots/web/ports/8080/; HttpOnly",
		"plain=2",
		"deep=3; Path=/bots/web/ports/8080/api",
		"berth_ui=stolen; Path=/ui",
		"Berth_Link=x; Path=/bots/web/ports/8080/",
		"wide=4; Domain=example.com",
		"outside=5; Path=/ui",
		"sibling=6; Path=/bots/web/ports/80801",
		"root=7; Path=/",
	}
	for _, c := range []struct {
		t    portTarget
		want []string
	}{
		{portTarget{bot: "web", port: 8080, prefix: "/bots/web/ports/8080"}, []string{set[0], set[1], set[2]}},
		{portTarget{bot: "web", port: 8080}, []string{set[0], set[1], set[2], set[6], set[7], set[8]}},
	} {
		req, _ := http.NewRequestWithContext(context.WithValue(context.Background(), portTargetKey{}, c.t), "GET", "http://x/", nil)
		res := &http.Response{Header: http.Header{"Set-Cookie": set, "Clear-Site-Data": {`"*"`}}, Request: req}
		if err := pp.modifyResponse(res); err != nil {
			t.Fatal(err)
		}
		if got := res.Header.Values("Set-Cookie"); !slices.Equal(got, c.want) {
			t.Errorf("prefix %q: cookies kept %q, want %q", c.t.prefix, got, c.want)
		}
		if cleared := res.Header.Get("Clear-Site-Data") != ""; cleared != (c.t.prefix == "") {
			t.Errorf("prefix %q: Clear-Site-Data kept: %v", c.t.prefix, cleared)
		}
	}
}
