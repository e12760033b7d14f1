package workspace

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParsePreviewHost(t *testing.T) {
	p := PortPolicy{PreviewDomain: "Preview.Example.com."}.WithDefaults()
	for host, want := range map[string]struct {
		bot  string
		port int
		ok   bool
	}{
		"8080-web.preview.example.com":        {"web", 8080, true},
		"8080-web.preview.example.com:443":    {"web", 8080, true},
		"3000-my-bot.2.PREVIEW.example.com.":  {"my-bot.2", 3000, true},
		"1-a.preview.example.com":             {"a", 1, true},
		"0-web.preview.example.com":           {},
		"70000-web.preview.example.com":       {},
		"08080-web.preview.example.com":       {},
		"web.preview.example.com":             {},
		"8080-.preview.example.com":           {},
		"8080-Web_.preview.example.com":       {},
		"8080-web.preview.example.com.evil":   {},
		"8080-web.evilpreview.example.com":    {},
		"preview.example.com":                 {},
		"8080-web.other.example.com":          {},
		"x8080-web.preview.example.com":       {},
		"8080-web--x.preview.example.com":     {},
		"[::1]:8080":                          {},
		"127.0.0.1:8080":                      {},
		"99999999999-web.preview.example.com": {},
	} {
		bot, port, ok := p.ParsePreviewHost(host)
		if bot != want.bot || port != want.port || ok != want.ok {
			t.Errorf("%q: %q %d %v, want %+v", host, bot, port, ok, want)
		}
	}
	if _, _, ok := (PortPolicy{}).ParsePreviewHost("8080-web.localhost"); ok {
		t.Error("host routing without a preview domain")
	}
}

func TestPortURLs(t *testing.T) {
	u, host, preview := PortPolicy{}.PortURLs("web", 8080)
	if u != "/bots/web/ports/8080/" || host != "" || preview != "" {
		t.Errorf("no domain, no public URL: %q %q %q", u, host, preview)
	}
	u, host, preview = PortPolicy{PreviewDomain: "localhost"}.PortURLs("web", 8080)
	if u != "/bots/web/ports/8080/" || host != "8080-web.localhost" || preview != "" {
		t.Errorf("domain only: %q %q %q", u, host, preview)
	}
	u, host, preview = PortPolicy{PreviewDomain: "p.example.com", PublicURL: "https://berth.example.com:8443/"}.PortURLs("web", 8080)
	if u != "https://berth.example.com:8443/bots/web/ports/8080/" || host != "8080-web.p.example.com" || preview != "https://8080-web.p.example.com:8443/" {
		t.Errorf("domain and public URL: %q %q %q", u, host, preview)
	}
}

func TestPortPolicyValidate(t *testing.T) {
	for _, p := range []PortPolicy{
		{}, {PreviewDomain: "localhost"}, {PreviewDomain: "preview.example.com"},
		{PublicURL: "http://127.0.0.1:8080"}, {PublicURL: "https://berth.example.com/"},
		{LinkTTL: time.Hour, MaxLinkTTL: 2 * time.Hour},
	} {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	for _, c := range []struct {
		p    PortPolicy
		flag string
	}{
		{PortPolicy{PreviewDomain: "127.0.0.1"}, "--preview-domain"},
		{PortPolicy{PreviewDomain: "a_b.example.com"}, "--preview-domain"},
		{PortPolicy{PreviewDomain: "*.example.com"}, "--preview-domain"},
		{PortPolicy{PublicURL: "berth.example.com"}, "--public-url"},
		{PortPolicy{PublicURL: "ftp://berth.example.com"}, "--public-url"},
		{PortPolicy{PublicURL: "https://berth.example.com/sub"}, "--public-url"},
		{PortPolicy{LinkTTL: 3 * time.Hour, MaxLinkTTL: 2 * time.Hour}, "--port-link-ttl"},
		{PortPolicy{LinkTTL: time.Second}, "--port-link-ttl"},
	} {
		if err := c.p.Validate(); err == nil || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%+v: %v, want an error naming %s", c.p, err, c.flag)
		}
	}
}

// TestPortLinks exposes ports on the fake runtime: links open their own
// port only, stop at expiry and at unexpose, and only hashes are stored.
func TestPortLinks(t *testing.T) {
	e := newFakeEnv(t)
	m := e.m
	m.opts.Ports = PortPolicy{MaxPorts: 2}
	ctx := context.Background()
	if _, _, _, err := m.ExposePort(ctx, "web", ExposeRequest{Port: 8080}); err == nil || !strings.Contains(err.Error(), "no workspace") {
		t.Fatalf("expose without a workspace: %v", err)
	}
	e.create(t, "web")
	p, link, token, err := m.ExposePort(ctx, "web", ExposeRequest{Port: 8080, Name: "app", CreatedBy: "admin token"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Port != 8080 || p.Name != "app" || p.Protocol != "http" || len(p.Links) != 1 || link.CreatedBy != "admin token" || len(token) < 40 {
		t.Fatalf("exposed %+v, link %+v, token %q", p, link, token)
	}
	if d := time.Until(link.ExpiresAt); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("default lifetime %s", d)
	}
	if got, ok := m.CheckPortLink("web", 8080, token); !ok || got.ID != link.ID {
		t.Errorf("the link does not open its port: %+v %v", got, ok)
	}
	for _, c := range []struct {
		bot   string
		port  int
		token string
	}{{"web", 8081, token}, {"other", 8080, token}, {"web", 8080, token + "x"}, {"web", 8080, ""}, {"web", 8080, strings.Repeat("a", 1000)}} {
		if _, ok := m.CheckPortLink(c.bot, c.port, c.token); ok {
			t.Errorf("%+v opens the port", c)
		}
	}
	data, err := os.ReadFile(m.portsPath("web"))
	if err != nil {
		t.Fatal(err)
	}
	raw := string(data)
	if strings.Contains(raw, token) || !strings.Contains(raw, link.SHA256) {
		t.Errorf("the ports file holds the token or lacks its hash:\n%s", raw)
	}

	// A short link expires; the long one stays.
	_, short, shortTok, err := m.ExposePort(ctx, "web", ExposeRequest{Port: 8080, LinkTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.CheckPortLink("web", 8080, shortTok); !ok {
		t.Fatal("the short link does not open the port")
	}
	ports, _ := m.Ports("web")
	for i := range ports[0].Links {
		if ports[0].Links[i].ID == short.ID {
			ports[0].Links[i].ExpiresAt = time.Now().Add(-time.Second)
		}
	}
	if err := m.writePorts("web", ports); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.CheckPortLink("web", 8080, shortTok); ok {
		t.Error("an expired link opens the port")
	}
	if _, ok := m.CheckPortLink("web", 8080, token); !ok {
		t.Error("the other link stopped working")
	}

	for _, bad := range []ExposeRequest{{Port: 0}, {Port: 70000}, {Port: 80, Protocol: "tcp"}, {Port: 80, LinkTTL: time.Second},
		{Port: 80, LinkTTL: 31 * 24 * time.Hour}, {Port: 80, Name: "a\nb"}} {
		if _, _, _, err := m.ExposePort(ctx, "web", bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, _, _, err := m.ExposePort(ctx, "web", ExposeRequest{Port: 8081}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := m.ExposePort(ctx, "web", ExposeRequest{Port: 8082}); err == nil || !strings.Contains(err.Error(), "already exposes 2 ports") {
		t.Errorf("a third port with MaxPorts 2: %v", err)
	}
	// Links per port are capped; the oldest go first.
	var last string
	for range maxLinksPerPort + 2 {
		_, _, last, err = m.ExposePort(ctx, "web", ExposeRequest{Port: 8081})
		if err != nil {
			t.Fatal(err)
		}
	}
	if p, _, _ := m.ExposedPort("web", 8081); len(p.Links) != maxLinksPerPort {
		t.Errorf("%d links kept, want %d", len(p.Links), maxLinksPerPort)
	}
	if _, ok := m.CheckPortLink("web", 8081, last); !ok {
		t.Error("the newest link was dropped")
	}

	if removed, err := m.UnexposePort(ctx, "web", 8080); err != nil || !removed {
		t.Fatalf("unexpose: %v %v", removed, err)
	}
	if _, ok := m.CheckPortLink("web", 8080, token); ok {
		t.Error("a link outlived unexpose")
	}
	if removed, err := m.UnexposePort(ctx, "web", 8080); err != nil || removed {
		t.Errorf("unexposing twice: %v %v", removed, err)
	}
	if err := e.delete(t, "web", DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.portsPath("web")); !os.IsNotExist(err) {
		t.Errorf("the ports file outlived the workspace: %v", err)
	}
	if ports, err := m.Ports("web"); err != nil || len(ports) != 0 {
		t.Errorf("ports after delete: %+v %v", ports, err)
	}
}
