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
		"same name":      {0o600, "tokens:\n  - {name: a, token: 0123456789abcdef}\n  - {name: b, token: 0123456789abcdeg}\n  - {name: a, token: 0123456789abcdeh}\n", `token "a" (line 4) repeats the name of token "a" (line 2)`},
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

// TestScopedIdentity: a token's ID is unique, survives Only, and cannot
// be forged by a name that looks like another principal.
func TestScopedIdentity(t *testing.T) {
	tokens := []ScopedToken{
		{Name: "a", Token: "secret-a-0123456789"},
		{Name: "a for bot x", Token: "secret-b-0123456789"},
		{Name: "admin token", Token: "secret-c-0123456789"},
	}
	if err := checkScopedTokens(tokens); err != nil {
		t.Fatal(err)
	}
	pinned := MatchScoped(tokens, "secret-a-0123456789").Only("x")
	lookalike := MatchScoped(tokens, "secret-b-0123456789")
	if pinned.Name != lookalike.Name {
		t.Fatalf("names %q and %q: the test needs them equal", pinned.Name, lookalike.Name)
	}
	if pinned.ID == lookalike.ID || pinned.ID != MatchScoped(tokens, "secret-a-0123456789").ID {
		t.Errorf("IDs: pinned %q, look-alike %q", pinned.ID, lookalike.ID)
	}
	if id := MatchScoped(tokens, "secret-c-0123456789").ID; id == Local("admin token").ID {
		t.Errorf("a scoped token named like the admin token shares its ID %q", id)
	}
}
