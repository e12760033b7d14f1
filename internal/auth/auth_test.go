package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "token")
	tok, created, err := LoadOrCreateToken(path)
	if err != nil || !created || len(tok) != 64 {
		t.Fatalf("create: %q %v %v", tok, created, err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	again, created, err := LoadOrCreateToken(path)
	if err != nil || created || again != tok {
		t.Fatalf("reload: %q %v %v", again, created, err)
	}
	os.WriteFile(path, []byte("short\n"), 0o600)
	if _, _, err := LoadOrCreateToken(path); err == nil {
		t.Fatal("short token accepted")
	}
}

func TestBearerAndMatch(t *testing.T) {
	tok := Token("secret-secret-secret")
	for header, ok := range map[string]bool{
		"Bearer secret-secret-secret": true,
		"bearer secret-secret-secret": true,
		"Bearer wrong":                false,
		"Basic secret-secret-secret":  false,
		"Bearer ":                     false,
		"":                            false,
	} {
		got, found := BearerToken(header)
		if (found && tok.Matches(got)) != ok {
			t.Errorf("%q: want %v", header, ok)
		}
	}
	if Token("").Matches("") {
		t.Fatal("empty token matched")
	}
}

func TestPrincipalScopes(t *testing.T) {
	p := &Principal{Name: "bot token", Scopes: map[Scope]bool{ScopeRead: true}, Bots: map[string]bool{"a": true}}
	if err := p.Allow(ScopeRead, "a"); err != nil {
		t.Fatal(err)
	}
	if err := p.Allow(ScopeManage, "a"); err == nil || !strings.Contains(err.Error(), "manage") {
		t.Fatalf("missing scope: %v", err)
	}
	if err := p.Allow(ScopeRead, "b"); err == nil {
		t.Fatal("other bot allowed")
	}
	var none *Principal
	if err := none.Allow(ScopeRead, ""); err == nil {
		t.Fatal("nil principal allowed")
	}
	if err := Local("stdio").Allow(ScopeAdmin, "anything"); err != nil {
		t.Fatal(err)
	}
}

// TestRefusalsAreRecognisable: every refusal matches ErrDenied and reads
// as one after it became a tool result's text; other errors do not.
func TestRefusalsAreRecognisable(t *testing.T) {
	p := &Principal{Name: "bot token", ID: "token:bot", Scopes: map[Scope]bool{ScopeRead: true}, Bots: map[string]bool{"a": true}}
	var nobody *Principal
	for _, err := range []error{p.Allow(ScopeExec, "a"), p.Allow(ScopeRead, "b"), nobody.Allow(ScopeRead, "")} {
		if !IsDenied(err) || !IsDeniedText(err.Error()) {
			t.Errorf("%v is not recognised as a refusal", err)
		}
	}
	if err := p.Allow(ScopeRead, "a"); err != nil {
		t.Fatal(err)
	}
	if IsDeniedText("open /data/x: permission denied") || IsDenied(errors.New("permission denied")) {
		t.Error("a file system error reads as a refusal")
	}
}
