// Package auth owns who a caller is and what it may do: bearer tokens for
// the HTTP transport, the principal carried in a request's context, and
// scope checks. It does not know about tools or transports.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
)

// Scope is a class of operation a principal may perform.
type Scope string

const (
	ScopeRead   Scope = "read"   // look at workspaces
	ScopeWrite  Scope = "write"  // change files in workspaces
	ScopeExec   Scope = "exec"   // run commands in workspaces
	ScopeManage Scope = "manage" // create, start, stop, delete workspaces
	ScopeAdmin  Scope = "admin"  // act on the host: import images from host paths
)

// Principal is an authenticated caller.
type Principal struct {
	Name string
	// ID identifies the credential the caller presented, uniquely among
	// all of berth's credentials ("admin token", "token:<name>"). Sessions
	// belong to it; unlike Name it stays the same through Only.
	ID     string
	Scopes map[Scope]bool
	// Bots limits the principal to these bots; nil means every bot.
	Bots map[string]bool
}

// Local is the stdio user (and an admin token): everything is allowed.
func Local(name string) *Principal {
	return &Principal{Name: name, ID: name, Scopes: map[Scope]bool{
		ScopeRead: true, ScopeWrite: true, ScopeExec: true, ScopeManage: true, ScopeAdmin: true,
	}}
}

// ErrDenied is what every refusal of Allow matches (errors.Is): the
// caller lacks a scope, may not use the bot, or is not authenticated.
var ErrDenied = errors.New("permission denied")

// DeniedPrefix starts the message of every refusal, so that a refusal can
// be told apart from other failures after it became a tool result's text.
const DeniedPrefix = "permission denied: "

type deniedError struct{ msg string }

func (e *deniedError) Error() string        { return e.msg }
func (e *deniedError) Is(target error) bool { return target == ErrDenied }

// Unwrap is the errdefs class of every refusal, so that berth's edges
// (errhttp.ToHTTP) answer it as the denial it is.
func (e *deniedError) Unwrap() error { return errdefs.ErrPermissionDenied }

func denied(format string, args ...any) error {
	return &deniedError{msg: DeniedPrefix + fmt.Sprintf(format, args...)}
}

// IsDenied says whether err is an authorization refusal.
func IsDenied(err error) bool { return errors.Is(err, ErrDenied) }

// IsDeniedText says whether a tool result's text is an authorization refusal.
func IsDeniedText(text string) bool { return strings.HasPrefix(text, DeniedPrefix) }

// Allow says whether p may use scope on bot ("" for no particular bot).
func (p *Principal) Allow(scope Scope, bot string) error {
	if p == nil {
		return denied("unauthenticated request")
	}
	if !p.Scopes[scope] {
		return denied("%s lacks the %q scope this tool needs", p.Name, scope)
	}
	if bot != "" && p.Bots != nil && !p.Bots[bot] {
		return denied("%s may not use bot %q", p.Name, bot)
	}
	return nil
}

// Only returns a copy of p limited to bot (which p must be allowed). It
// keeps p's ID: it is the same credential.
func (p *Principal) Only(bot string) *Principal {
	return &Principal{Name: p.Name + " for bot " + bot, ID: p.ID, Scopes: p.Scopes, Bots: map[string]bool{bot: true}}
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal of ctx, or nil.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}

// Token is a secret that authenticates HTTP clients.
type Token string

// Matches compares in constant time.
func (t Token) Matches(presented string) bool {
	return t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(presented)) == 1
}

// LoadOrCreateToken reads the token in path, creating it (0600) with a
// fresh random secret when the file does not exist. created says which.
func LoadOrCreateToken(path string) (tok Token, created bool, err error) {
	data, err := os.ReadFile(path)
	if err == nil {
		t := strings.TrimSpace(string(data))
		if len(t) < 16 {
			return "", false, fmt.Errorf("token file %s holds a token shorter than 16 characters; delete it to get a new one", path)
		}
		return Token(t), false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("read token file: %w", err)
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", false, err
	}
	t := hex.EncodeToString(buf)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) { // another berth won the race
			return LoadOrCreateToken(path)
		}
		return "", false, err
	}
	if _, err := f.WriteString(t + "\n"); err != nil {
		f.Close()
		return "", false, err
	}
	return Token(t), true, f.Close()
}

// BearerToken extracts the token of an "Authorization: Bearer X" header.
func BearerToken(header string) (string, bool) {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
