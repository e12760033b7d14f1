package auth

import (
	"crypto/subtle"
	"fmt"
	"os"
	"slices"

	"go.yaml.in/yaml/v3"
)

// ScopedToken is an HTTP token limited to some bots and scopes, for
// platforms that give each bot (or each of their services) its own
// credential.
type ScopedToken struct {
	Name  string `yaml:"name"`
	Token string `yaml:"token"`
	// Bots limits the token to these bots; empty means every bot.
	Bots []string `yaml:"bots"`
	// Scopes are what the token may do; empty means read, write, exec
	// and manage (never admin unless listed).
	Scopes []Scope `yaml:"scopes"`

	// line is where the token starts in its file, for error messages.
	line int
}

// UnmarshalYAML decodes a token and remembers its line.
func (t *ScopedToken) UnmarshalYAML(n *yaml.Node) error {
	type plain ScopedToken
	if err := n.Decode((*plain)(t)); err != nil {
		return err
	}
	t.line = n.Line
	return nil
}

// where names a token in error messages: by name and, when it came from
// a file, by line.
func (t ScopedToken) where(i int) string {
	s := fmt.Sprintf("token %d", i+1)
	if t.Name != "" {
		s = fmt.Sprintf("token %q", t.Name)
	}
	if t.line > 0 {
		s += fmt.Sprintf(" (line %d)", t.line)
	}
	return s
}

// defaultScopes are a scoped token's scopes when it lists none.
var defaultScopes = []Scope{ScopeRead, ScopeWrite, ScopeExec, ScopeManage}

// MaxScopedTokens bounds a tokens file.
const MaxScopedTokens = 10000

// LoadTokensFile reads a YAML file of scoped tokens:
//
//	tokens:
//	  - name: support-bot
//	    token: 9f1c...            # at least 16 characters
//	    bots: [support-bot]       # omit for every bot
//	    scopes: [read, exec]      # omit for read, write, exec, manage
//
// The file holds secrets, so it must not be readable by group or others.
func LoadTokensFile(path string) ([]ScopedToken, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("tokens file %s is readable by others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	var doc struct {
		Tokens []ScopedToken `yaml:"tokens"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	if err := checkScopedTokens(doc.Tokens); err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	return doc.Tokens, nil
}

func checkScopedTokens(tokens []ScopedToken) error {
	if len(tokens) > MaxScopedTokens {
		return fmt.Errorf("%d tokens; at most %d", len(tokens), MaxScopedTokens)
	}
	seen := map[string]bool{}
	// A name is the caller's identity in logs, the audit log and sessions,
	// so two tokens must never share one.
	names := map[string]int{}
	for i, t := range tokens {
		if t.Name == "" {
			return fmt.Errorf("%s has no name (it names the caller in logs and errors)", t.where(i))
		}
		if first, ok := names[t.Name]; ok {
			return fmt.Errorf("%s repeats the name of %s: token names must be unique", t.where(i), tokens[first].where(first))
		}
		names[t.Name] = i
		if len(t.Token) < 16 {
			return fmt.Errorf("%s is shorter than 16 characters", t.where(i))
		}
		if seen[t.Token] {
			return fmt.Errorf("%s repeats another token's secret", t.where(i))
		}
		seen[t.Token] = true
		for _, s := range t.Scopes {
			if !slices.Contains([]Scope{ScopeRead, ScopeWrite, ScopeExec, ScopeManage, ScopeAdmin}, s) {
				return fmt.Errorf("%s: unknown scope %q (read, write, exec, manage, admin)", t.where(i), s)
			}
		}
		for _, b := range t.Bots {
			if b == "" {
				return fmt.Errorf("%s lists an empty bot id", t.where(i))
			}
		}
	}
	return nil
}

// Principal is who a holder of the token is.
func (t ScopedToken) Principal() *Principal {
	// Names are unique among scoped tokens and the prefix keeps them
	// apart from the admin token's ID.
	p := &Principal{Name: "token " + t.Name, ID: "token:" + t.Name, Scopes: map[Scope]bool{}}
	scopes := t.Scopes
	if len(scopes) == 0 {
		scopes = defaultScopes
	}
	for _, s := range scopes {
		p.Scopes[s] = true
	}
	if len(t.Bots) > 0 {
		p.Bots = map[string]bool{}
		for _, b := range t.Bots {
			p.Bots[b] = true
		}
	}
	return p
}

// MatchScoped returns the principal of the scoped token presented, or nil.
// Every token is compared (in constant time), so the answer's timing does
// not say which one nearly matched.
func MatchScoped(tokens []ScopedToken, presented string) *Principal {
	var found *ScopedToken
	for i := range tokens {
		if subtle.ConstantTimeCompare([]byte(tokens[i].Token), []byte(presented)) == 1 {
			found = &tokens[i]
		}
	}
	if found == nil {
		return nil
	}
	return found.Principal()
}
