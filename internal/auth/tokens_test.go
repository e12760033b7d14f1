package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeTokens(t *testing.T, mode os.FileMode, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadTokensFile(t *testing.T) {
	path := writeTokens(t, 0o600, `
tokens:
  - name: support
    token: support-secret-0123456789
    bots: [support-bot]
    scopes: [read, exec]
  - name: platform
    token: platform-secret-0123456789
`)
	tokens, err := LoadTokensFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := MatchScoped(tokens, "support-secret-0123456789")
	if p == nil {
		t.Fatal("support token not matched")
	}
	if err := p.Allow(ScopeExec, "support-bot"); err != nil {
		t.Errorf("support token on its bot: %v", err)
	}
	if err := p.Allow(ScopeExec, "other-bot"); err == nil || !strings.Contains(err.Error(), "may not use bot") {
		t.Errorf("support token on another bot: %v", err)
	}
	if err := p.Allow(ScopeManage, "support-bot"); err == nil || !strings.Contains(err.Error(), `"manage"`) {
		t.Errorf("support token without manage: %v", err)
	}
	q := MatchScoped(tokens, "platform-secret-0123456789")
	if q == nil || q.Bots != nil || !q.Scopes[ScopeManage] || q.Scopes[ScopeAdmin] {
		t.Errorf("platform token: every bot, default scopes without admin; got %+v", q)
	}
	for _, wrong := range []string{"", "support-secret-012345678", "support-secret-0123456789x", "platform"} {
		if MatchScoped(tokens, wrong) != nil {
			t.Errorf("%q matched", wrong)
		}
	}
}

func TestLoadTokensFileRefusals(t *testing.T) {
	for name, tc := range map[string]struct {
		mode os.FileMode
		body string
		want string
	}{
		"world readable": {0o644, "tokens: []\n", "chmod 600"},
		"short":          {0o600, "tokens: [{name: a, token: short}]\n", "shorter than 16"},
		"no name":        {0o600, "tokens: [{token: 0123456789abcdef}]\n", "no name"},
		"duplicate":      {0o600, "tokens: [{name: a, token: 0123456789abcdef}, {name: b, token: 0123456789abcdef}]\n", "repeats"},
		"bad scope":      {0o600, "tokens: [{name: a, token: 0123456789abcdef, scopes: [root]}]\n", "unknown scope"},
		"not yaml":       {0o600, "tokens: [\n", "tokens file"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadTokensFile(writeTokens(t, tc.mode, tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
