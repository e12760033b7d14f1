package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// tenantTokens are the scoped tokens of TestTenantBoundaries.
const (
	alphaToken = "alpha-token-0123456789abcdef"  // alpha, alpha2, alpha-x: every scope but admin
	bravoToken = "bravo-token-0123456789abcdef"  // bravo2, bravo3: every scope but admin
	soloToken  = "solo-token-0123456789abcdef"   // alpha2, read only
	roToken    = "alpha-ro-token-0123456789abcd" // alpha, read only
)

// tenantEnv is berth over HTTP with the tokens above, a registry it allows
// (and two allowed hosts that are no registry), and a small export quota.
type tenantEnv struct {
	*env
	b               *berthHTTP
	reg             *testenv.Registry
	closed, web     string // allowed hosts: a closed port, a web server
	notAllowed      string // a host not allowed, that counts connections
	notAllowedConns *atomic.Int64
	quota           int64
}

func newTenantEnv(t *testing.T) *tenantEnv {
	te := &tenantEnv{env: newEnv(t), quota: 250_000}
	te.reg = testenv.StartRegistry(t, testenv.RegistryOptions{})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	te.closed = l.Addr().String()
	l.Close()
	web := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(web.Close)
	te.web = strings.TrimPrefix(web.URL, "http://")

	counting, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { counting.Close() })
	te.notAllowed = counting.Addr().String()
	te.notAllowedConns = new(atomic.Int64)
	go func() {
		for {
			c, err := counting.Accept()
			if err != nil {
				return
			}
			te.notAllowedConns.Add(1)
			c.Close()
		}
	}()

	tokens := filepath.Join(te.stateDir, "tokens.yaml")
	doc := fmt.Sprintf(`tokens:
  - {name: alpha, token: %s, bots: [alpha, alpha2, alpha-x]}
  - {name: bravo, token: %s, bots: [bravo2, bravo3]}
  - {name: solo, token: %s, bots: [alpha2], scopes: [read]}
  - {name: alpha-ro, token: %s, bots: [alpha], scopes: [read]}
`, alphaToken, bravoToken, soloToken, roToken)
	if err := os.WriteFile(tokens, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	te.b = te.serveHTTP("--tokens-file", tokens,
		"--allowed-registries", strings.Join([]string{te.reg.Host, te.closed, te.web}, ","),
		"--export-quota", fmt.Sprint(te.quota))
	return te
}

// as connects with token.
func (te *tenantEnv) as(token string) mcpClient {
	return te.httpSDK(&berthHTTP{URL: te.b.URL, Token: token})
}

func imageNames(t *testing.T, c mcpClient) []string {
	t.Helper()
	var out struct {
		Images []struct {
			Name string `json:"name"`
		} `json:"images"`
	}
	mustCall(t, c, "image_list", map[string]any{}).decode(t, &out)
	var names []string
	for _, i := range out.Images {
		names = append(names, i.Name)
	}
	return names
}

func wantRefused(t *testing.T, what string, res *toolResult, says ...string) {
	t.Helper()
	if !res.IsError {
		t.Fatalf("%s succeeded: %s", what, res.Text)
	}
	for _, s := range says {
		if !strings.Contains(res.Text, s) {
			t.Fatalf("%s: %q does not say %q", what, res.Text, s)
		}
	}
}

// TestTenantBoundaries: a bot's snapshot exports are its own, non-admin
// pulls reach only allowed registries and learn nothing of the network,
// workspace_list pages what the caller may see, and data_export stays in
// /data within a quota.
func TestTenantBoundaries(t *testing.T) {
	te := newTenantEnv(t)
	admin := te.httpSDK(te.b)
	alpha := te.as(alphaToken)
	bravo := te.as(bravoToken)

	// A non-admin pull from an allowed registry works.
	ref := te.reg.PushRandomImage(t, "tenant/base:1", 1, 64<<10)
	var created createOut
	mustCall(t, alpha, "workspace_create", map[string]any{"bot_id": "alpha", "image": ref}).decode(t, &created)
	if !created.Pulled {
		t.Fatalf("alpha was not pulled: %+v", created)
	}
	te.execIn(t, "alpha", "sh", "-c", "echo alpha-secret > /data/secret")
	var snap snapOut
	mustCall(t, alpha, "snapshot_create", map[string]any{"bot_id": "alpha"}).decode(t, &snap)
	var img struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	}
	mustCall(t, alpha, "snapshot_export", map[string]any{"bot_id": "alpha", "version": snap.Version}).decode(t, &img)
	export := img.Name
	if img.Labels["berth.dev/owner-bot"] != "alpha" {
		t.Fatalf("export %s is not labelled as alpha's: %+v", export, img)
	}

	t.Run("exports belong to their bot", func(t *testing.T) {
		if names := imageNames(t, bravo); slices.Contains(names, export) {
			t.Errorf("bravo's image_list shows alpha's export: %v", names)
		} else if !slices.Contains(names, te.image) {
			t.Errorf("bravo's image_list lacks the shared image %s: %v", te.image, names)
		}
		for _, c := range []mcpClient{alpha, admin} {
			if names := imageNames(t, c); !slices.Contains(names, export) {
				t.Errorf("image_list lacks %s: %v", export, names)
			}
		}
		refused := mustCall(t, bravo, "workspace_create", map[string]any{"bot_id": "bravo2", "image": export})
		wantRefused(t, "bravo creating from alpha's export", refused, "permission denied", `bot "alpha"`)
		// A version alpha never exported reads the same: nothing is learnt.
		missing := mustCall(t, bravo, "workspace_create", map[string]any{"bot_id": "bravo2", "image": "berth.local/snapshots/alpha:v99"})
		if missing.Text != strings.ReplaceAll(refused.Text, export, "berth.local/snapshots/alpha:v99") {
			t.Errorf("an absent export reads %q, unlike %q", missing.Text, refused.Text)
		}

		// The admin may give alpha's export to a bravo workspace; bravo
		// still may not fork it.
		mustCall(t, admin, "workspace_create", map[string]any{"bot_id": "bravo2", "image": export}).decode(t, &struct{}{})
		var bsnap snapOut
		mustCall(t, bravo, "snapshot_create", map[string]any{"bot_id": "bravo2"}).decode(t, &bsnap)
		wantRefused(t, "bravo forking a workspace of alpha's export",
			mustCall(t, bravo, "workspace_fork", map[string]any{"bot_id": "bravo2", "version": bsnap.Version, "new_bot_id": "bravo3"}),
			"permission denied", `bot "alpha"`)
		if res := mustCall(t, bravo, "workspace_get", map[string]any{"bot_id": "bravo3"}); !res.IsError {
			t.Errorf("a refused fork left a workspace: %s", res.Text)
		}

		// alpha's own token uses it.
		mustCall(t, alpha, "workspace_create", map[string]any{"bot_id": "alpha2", "image": export}).decode(t, &struct{}{})
		if got := te.execIn(t, "alpha2", "cat", "/data/secret"); got != "alpha-secret\n" {
			t.Errorf("alpha2 from the export holds %q", got)
		}
	})

	t.Run("pulls", func(t *testing.T) {
		res := mustCall(t, alpha, "workspace_create", map[string]any{"bot_id": "alpha-x", "image": te.notAllowed + "/x/y:1"})
		wantRefused(t, "pull from a registry not allowed", res, "may not pull from", "--allowed-registries")
		if n := te.notAllowedConns.Load(); n != 0 {
			t.Errorf("the refused pull made %d connection(s) to %s", n, te.notAllowed)
		}
		// Allowed hosts that are no registry: a closed port and a web
		// server read alike.
		var texts []string
		for _, host := range []string{te.closed, te.web} {
			res := mustCall(t, alpha, "workspace_create", map[string]any{"bot_id": "alpha-x", "image": host + "/x/y:1"})
			wantRefused(t, "pull from "+host, res, "unreachable or not a registry")
			texts = append(texts, strings.ReplaceAll(res.Text, host, "HOST"))
		}
		if texts[0] != texts[1] {
			t.Errorf("a closed port reads %q, a web server %q", texts[0], texts[1])
		}
		for _, leak := range []string{"refused", "not found", "TLS", "tls", "dial", "404"} {
			if strings.Contains(texts[0], leak) || strings.Contains(texts[1], leak) {
				t.Errorf("pull failures tell %q: %v", leak, texts)
			}
		}
		// A real registry's missing image is told as such.
		res = mustCall(t, alpha, "workspace_create", map[string]any{"bot_id": "alpha-x", "image": te.reg.Ref("tenant/none:1")})
		wantRefused(t, "pull of a missing image", res, "not found in registry "+te.reg.Host)
		// The operator is neither limited nor kept from the detail.
		res = mustCall(t, admin, "workspace_create", map[string]any{"bot_id": "admin-x", "image": te.closed + "/x/y:1"})
		wantRefused(t, "admin pull from a closed port", res, "connection refused")
		res = mustCall(t, admin, "workspace_create", map[string]any{"bot_id": "admin-x", "image": te.notAllowed + "/x/y:1"})
		if !res.IsError || strings.Contains(res.Text, "may not pull") {
			t.Errorf("admin pull from a host not listed: %s", res.Text)
		}
	})

	t.Run("workspace_list filters before paging", func(t *testing.T) {
		type page struct {
			Workspaces []struct {
				BotID string `json:"bot_id"`
			} `json:"workspaces"`
			NextCursor string `json:"next_cursor"`
		}
		list := func(c mcpClient, args map[string]any) (page, string) {
			res := mustCall(t, c, "workspace_list", args)
			var p page
			res.decode(t, &p)
			return p, res.Text
		}
		// alpha < alpha2 < bravo2: solo's only bot sorts after another's.
		p, text := list(te.as(soloToken), map[string]any{"limit": 1})
		if len(p.Workspaces) != 1 || p.Workspaces[0].BotID != "alpha2" || p.NextCursor != "" || strings.Contains(text, "more") {
			t.Errorf("solo, limit 1: %+v %q", p, text)
		}
		raw, _ := json.Marshal(p)
		for _, other := range []string{`"alpha"`, "bravo"} {
			if strings.Contains(string(raw)+text, other) {
				t.Errorf("solo's list names %s: %s %q", other, raw, text)
			}
		}
		// alpha pages through its own two, one at a time.
		var seen []string
		args := map[string]any{"limit": 1}
		for range 3 {
			p, _ := list(alpha, args)
			for _, w := range p.Workspaces {
				seen = append(seen, w.BotID)
			}
			if p.NextCursor == "" {
				break
			}
			args["cursor"] = p.NextCursor
		}
		if !slices.Equal(seen, []string{"alpha", "alpha2"}) {
			t.Errorf("alpha paged through %v", seen)
		}
	})

	t.Run("data_export stays in /data", func(t *testing.T) {
		ro := te.as(roToken)
		for _, path := range []string{"/", "/etc", "/data/../etc", "..", "/proc/1/root"} {
			wantRefused(t, "export of "+path, mustCall(t, ro, "data_export", map[string]any{"bot_id": "alpha", "path": path}), "outside /data")
		}
		mustCall(t, ro, "data_export", map[string]any{"bot_id": "alpha"}).decode(t, &struct{}{})
		req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(te.b.URL, "/mcp")+"/bots/alpha/data/export?path=/data/../etc", nil)
		req.Header.Set("Authorization", "Bearer "+roToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("HTTP export of /data/../etc: status %d", resp.StatusCode)
		}
	})

	t.Run("export quota", func(t *testing.T) {
		ro := te.as(roToken)
		rw := te.as(alphaToken)
		exportDir := filepath.Join(te.stateDir, "exports", "alpha")
		for _, id := range keptExports(t, exportDir) {
			mustCall(t, rw, "data_export_delete", map[string]any{"bot_id": "alpha", "export_id": id}).decode(t, &struct{}{})
		}
		// 200 kB of random bytes: one archive fits the 250 kB quota, two do not.
		te.execIn(t, "alpha", "sh", "-c", "mkdir -p /data/big && head -c 200000 /dev/urandom > /data/big/blob")
		var first struct {
			ExportID string `json:"export_id"`
		}
		mustCall(t, ro, "data_export", map[string]any{"bot_id": "alpha", "path": "/data/big"}).decode(t, &first)
		res := mustCall(t, ro, "data_export", map[string]any{"bot_id": "alpha", "path": "/data/big"})
		wantRefused(t, "export past the quota", res, "export quota of 244.1 KiB", "data_export_delete", first.ExportID)
		if kept := keptExports(t, exportDir); !slices.Equal(kept, []string{first.ExportID}) {
			t.Errorf("after the refusal the exports are %v, want only %s", kept, first.ExportID)
		}
		if entries, _ := os.ReadDir(exportDir); len(entries) != 1 {
			t.Errorf("the stopped export left files: %v", entries)
		}
		// A read-only token destroys nothing, not even a host-side copy;
		// a token with write scope deletes the old export and makes room.
		wantRefused(t, "a read-only token deleting an export",
			mustCall(t, ro, "data_export_delete", map[string]any{"bot_id": "alpha", "export_id": first.ExportID}), "permission denied")
		mustCall(t, rw, "data_export_delete", map[string]any{"bot_id": "alpha", "export_id": first.ExportID}).decode(t, &struct{}{})
		mustCall(t, ro, "data_export", map[string]any{"bot_id": "alpha", "path": "/data/big"}).decode(t, &struct{}{})
		// bravo may not delete alpha's exports.
		wantRefused(t, "bravo deleting alpha's export",
			mustCall(t, bravo, "data_export_delete", map[string]any{"bot_id": "alpha", "export_id": first.ExportID}), "permission denied")
	})
}

// keptExports lists the export ids in dir.
func keptExports(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".tar.gz"); ok {
			ids = append(ids, id)
		}
	}
	return ids
}
