// Package console is the server side of berth's web console at /ui: login
// with a berth token into a server-side session, the session's CSRF token,
// one live event stream per page, the audit lines of a bot, and the page
// itself, embedded from console/dist. It owns no operation on workspaces:
// the page drives berth through the endpoints every client uses (/mcp, the
// per-bot files and terminal endpoints), which the transports authenticate
// with the session (Console.Principal), so the server's scope checks apply
// to the page exactly as to any client. It does not listen: the HTTP
// transport mounts Handler and asks Principal.
//
// # The contract with the page (web/)
//
//   - GET /ui and /ui/...: the single-page app from the embedded bundle
//     (console/dist, built by `make build` from web/; the repository commits
//     only console/dist/.keep). Without a bundle, a short page says
//     "console not built: run make build". Every /ui response carries
//     Content-Security-Policy "default-src 'self'; connect-src 'self';
//     img-src 'self' data: blob:; style-src 'self' 'unsafe-inline';
//     frame-ancestors 'none'", X-Content-Type-Options nosniff and
//     Referrer-Policy no-referrer. The page makes no external requests.
//   - POST /ui/login, body {"token":"<berth token>"} with Content-Type
//     application/json only (an HTML form cannot send it): 204 and
//     Set-Cookie berth_ui=<random 32 bytes, base64url>; Path=/; HttpOnly;
//     SameSite=Strict; Secure over TLS; Max-Age the session lifetime. 401
//     {"error":"..."} for a bad token; 429 after 10 failures in a minute
//     from one client address. The Origin must be berth's host or one of
//     --allowed-origins (the transport's origin check).
//   - POST /ui/logout (CSRF header required): 204, cookie cleared, session
//     forgotten.
//   - GET /ui/api/me: {"identity":"admin token"|"<scoped token name>",
//     "admin":bool, "bots":[...] or null (every bot), "scopes":[...],
//     "csrf":"<the session's CSRF token>"}; 401 without a session.
//   - A request with the berth_ui cookie and no Authorization header acts
//     as the session's token. Every method but GET and HEAD (POST, PUT,
//     DELETE on /mcp, /bots/..., /ui/logout), and GET /mcp (the SSE
//     stream), needs the header X-Berth-CSRF equal to the session's CSRF
//     token, else 403 "missing or wrong CSRF token". A WebSocket handshake
//     (the terminal) carries ?csrf=<csrf> and an Origin of berth's host.
//   - GET /ui/api/events: text/event-stream, one per page, at most 4 open
//     per session (the 5th gets 429). Events are `event: NAME\ndata:
//     JSON\n\n`: `workspaces` every 2 s, {"workspaces":[{"bot_id",
//     "status","image","limits":{"cpus","memory_bytes","pids"},
//     "network_mode","cpu_percent","memory_bytes","disk_bytes",
//     "mcp_servers":[{"name","state"}],"last_activity","pending_requests"}],
//     "truncated":bool}, only the bots the session may read (at most 500);
//     last_activity (the bot's last allowed call in the --audit-log file)
//     is absent when unknown, the figures are 0 for a stopped workspace;
//     `ping` every 15 s.
//   - GET /ui/api/audit?bot=ID&limit=N: {"lines":[records],"truncated":bool},
//     the last N (at most 500, default 100) audit records of the bot, oldest
//     first (read on the bot needed; an admin token may omit bot for every
//     bot's), from the --audit-log file; without one {"lines":[],"note":
//     "no --audit-log"}.
//   - Everything else the page does is an MCP tool call on /mcp, refused by
//     the server where the token's scopes do not allow it.
package console

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/mcpproxy"
	"github.com/berth-dev/berth/internal/workspace"
)

// CookieName is the session cookie. Other routes that forward requests to
// a bot's own servers strip it, like their own credentials.
const CookieName = "berth_ui"

// CSRFHeader carries the session's CSRF token on every request that is
// not a plain read.
const CSRFHeader = "X-Berth-CSRF"

// DefaultSessionTTL is how long a session lasts when Options leave it unset.
const DefaultSessionTTL = 12 * time.Hour

// Workspaces is what the event stream reads about workspaces: the Manager.
type Workspaces interface {
	ListVisible(ctx context.Context, after string, limit int, visible func(bot string) bool) ([]workspace.Workspace, bool, error)
	Metrics(ctx context.Context, bot string) (workspace.Metrics, error)
	NetworkRequests(bot string) ([]workspace.NetworkRequest, error)
}

// MCPServers reports the states of the bots' own MCP servers: the
// mcpproxy Supervisor.
type MCPServers interface {
	List(bot string) ([]mcpproxy.Info, error)
}

// Options configure the console.
type Options struct {
	// Login returns the principal of a berth token, or nil when it is none.
	Login func(token string) *auth.Principal
	// Workspaces and MCPServers feed the event stream; nil ones are left
	// out of it.
	Workspaces Workspaces
	MCPServers MCPServers
	// AuditFile is the --audit-log file; "" when the log goes elsewhere.
	AuditFile string
	// SessionTTL is a session's lifetime from login; 0 is DefaultSessionTTL.
	SessionTTL time.Duration
	Logger     *slog.Logger
}

// Console serves /ui and knows its sessions.
type Console struct {
	o        Options
	sessions *sessions
	failures *failureLimit
	activity *activity
	views    views

	// done ends every event stream when berth shuts down.
	done      chan struct{}
	closeOnce sync.Once
}

// New returns a console.
func New(o Options) *Console {
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Console{
		o:        o,
		sessions: newSessions(o.SessionTTL),
		failures: newFailureLimit(loginFailuresPerMinute, time.Minute),
		activity: newActivity(o.AuditFile),
		done:     make(chan struct{}),
	}
}

// Close ends the open event streams, so that a graceful shutdown does not
// wait for pages to go away.
func (c *Console) Close() {
	c.closeOnce.Do(func() { close(c.done) })
}

// ErrCSRF refuses a request of a session without the session's CSRF token.
var ErrCSRF = errors.New("missing or wrong CSRF token")

// ErrNoSession refuses a request whose cookie names no live session.
var ErrNoSession = errors.New("the console session expired or is unknown: log in again at /ui")

// Principal authenticates r by its console cookie, for a request without
// an Authorization header. It returns nil and no error when r carries no
// cookie, ErrNoSession for an unknown or expired one, and ErrCSRF when r
// needs the CSRF token and lacks it.
func (c *Console) Principal(r *http.Request) (*auth.Principal, error) {
	s, err := c.session(r)
	if s == nil || err != nil {
		return nil, err
	}
	if err := checkCSRF(r, s); err != nil {
		return nil, err
	}
	return s.principal, nil
}

// session returns r's session, nil and no error when r has no cookie.
func (c *Console) session(r *http.Request) (*session, error) {
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return nil, nil
	}
	s := c.sessions.get(ck.Value)
	if s == nil {
		return nil, ErrNoSession
	}
	return s, nil
}

// checkCSRF applies the CSRF rule: reads pass, except the /mcp stream and
// WebSocket handshakes, which (like every other method) must prove they
// come from the page. Any request asking for an upgrade counts as a
// handshake, however it words the header: the WebSocket library accepts
// "websocket" anywhere in its list.
func checkCSRF(r *http.Request, s *session) error {
	if len(r.Header.Values("Upgrade")) > 0 {
		// A browser cannot set headers on a handshake; the origin must be
		// berth's own, not one of --allowed-origins, since only the page
		// knows the token.
		if !sameToken(r.URL.Query().Get("csrf"), s.csrf) || !SameHost(r.Header.Get("Origin"), r.Host) {
			return ErrCSRF
		}
		return nil
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.URL.Path != "/mcp" {
		return nil
	}
	if !sameToken(r.Header.Get(CSRFHeader), s.csrf) {
		return ErrCSRF
	}
	return nil
}

func sameToken(presented, want string) bool {
	return presented != "" && subtle.ConstantTimeCompare([]byte(presented), []byte(want)) == 1
}

// SameHost says whether origin (https://host:port) names host.
func SameHost(origin, host string) bool {
	scheme, rest, ok := strings.Cut(origin, "://")
	return ok && scheme != "" && rest != "" && strings.EqualFold(rest, host)
}

// Handler serves /ui and everything under it.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /ui/login", c.login)
	mux.HandleFunc("POST /ui/logout", c.withSession(c.logout))
	mux.HandleFunc("GET /ui/api/me", c.withSession(c.me))
	mux.HandleFunc("GET /ui/api/events", c.withSession(c.events))
	mux.HandleFunc("GET /ui/api/audit", c.withSession(c.audit))
	mux.HandleFunc("GET /ui/api/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		jsonError(w, http.StatusNotFound, "no such console API: "+r.URL.Path)
	})
	mux.HandleFunc("GET /ui", c.static)
	mux.HandleFunc("GET /ui/{path...}", c.static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		mux.ServeHTTP(w, r)
	})
}

// csp keeps the page to its own code: no inline scripts, no other origin.
const csp = "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"

// withSession runs h with r's session (CSRF checked), or answers 401/403.
func (c *Console) withSession(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := c.session(r)
		if err == nil && s == nil {
			err = errors.New("not logged in: POST /ui/login with a berth token")
		}
		if err != nil {
			jsonError(w, http.StatusUnauthorized, err.Error())
			return
		}
		if err := checkCSRF(r, s); err != nil {
			jsonError(w, http.StatusForbidden, err.Error())
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		h(w, r, s)
	}
}

// me answers who the session is and what it may do.
func (c *Console) me(w http.ResponseWriter, _ *http.Request, s *session) {
	p := s.principal
	var bots []string
	if p.Bots != nil {
		bots = make([]string, 0, len(p.Bots))
		for b := range p.Bots {
			bots = append(bots, b)
		}
		slices.Sort(bots)
	}
	scopes := []string{}
	for _, sc := range []auth.Scope{auth.ScopeRead, auth.ScopeWrite, auth.ScopeExec, auth.ScopeManage, auth.ScopeAdmin} {
		if p.Scopes[sc] {
			scopes = append(scopes, string(sc))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"identity": identity(p), "admin": isAdmin(p), "bots": bots, "scopes": scopes, "csrf": s.csrf,
	})
}

// identity names the credential as people know it: the admin token, or a
// scoped token by its name in the tokens file.
func identity(p *auth.Principal) string {
	if name, ok := strings.CutPrefix(p.ID, "token:"); ok {
		return name
	}
	return p.Name
}

// isAdmin: the admin scope on every bot, what the admin token has.
func isAdmin(p *auth.Principal) bool {
	return p.Bots == nil && p.Allow(auth.ScopeAdmin, "") == nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
