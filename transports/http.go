package transports

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/console"
	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/mcpproxy"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/berth-dev/berth/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// HTTPOptions configure the streamable HTTP transport.
type HTTPOptions struct {
	Addr   string
	Token  auth.Token // required unless NoAuth
	NoAuth bool       // only on loopback addresses
	// ScopedTokens are further tokens, each limited to some bots and scopes.
	ScopedTokens   []auth.ScopedToken
	AllowedOrigins []string
	SessionIdleTTL time.Duration
	// Ready reports whether berth can serve tools (containerd reachable).
	Ready  func(context.Context) error
	Logger *slog.Logger
	// Manager serves the per-bot file and terminal endpoints.
	Manager *workspace.Manager
	// MCPProxy serves /bots/{bot_id}/mcp/{name}, the bots' own MCP servers.
	MCPProxy *mcpproxy.Endpoint
	// Metrics is served at /metrics, to holders of a token.
	Metrics *metrics.Metrics
	// Audit records the use of the per-bot endpoints and every refused
	// request; nil records nothing.
	Audit *audit.Logger
	// Tasks, when set, wraps /mcp's MCP handler to serve long tool calls
	// as tasks (mcpserver.Tasks.Handler); it sees each request's principal.
	Tasks func(http.Handler) http.Handler
	// Console configures the web console at /ui, always served; the
	// transport fills in its Login and Workspaces.
	Console console.Options

	ui *console.Console // set by NewHTTPHandler
}

// Limits of the HTTP transport.
const (
	maxRequestBytes   = 32 << 20 // fs_write of a 10+ MB file fits; bigger files use PUT /bots/{bot}/files
	eventsPerSession  = 1024
	readHeaderTimeout = 10 * time.Second
)

// httpProtocolVersions are the MCP versions served over HTTP: 2026-07-28,
// sessionless (each request carries its token, and its bot with ?bot=; see
// modern.go), and the versions with sessions, bound to the token that
// opened them (sessions.go).
var httpProtocolVersions = []string{
	mcp.ProtocolVersion20260728,
	mcp.ProtocolVersion20251125, mcp.ProtocolVersion20250618,
	mcp.ProtocolVersion20250326, mcp.ProtocolVersion20241105,
}

// CheckHTTPOptions refuses unsafe combinations before anything listens.
func CheckHTTPOptions(o HTTPOptions) error {
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return fmt.Errorf("--http %q: want HOST:PORT, e.g. 127.0.0.1:8080: %v", o.Addr, err)
	}
	if o.NoAuth && !isLoopback(host) {
		return fmt.Errorf("--no-auth is refused on %s: without a token anyone who can reach it controls every workspace; listen on 127.0.0.1 or drop --no-auth", o.Addr)
	}
	if !o.NoAuth && o.Token == "" {
		return errors.New("HTTP needs a bearer token (--token, BERTH_TOKEN or the token file)")
	}
	for _, origin := range o.AllowedOrigins {
		if _, err := parseOrigin(origin); err != nil {
			return fmt.Errorf("--allowed-origins: %q is not an origin like https://app.example.com", origin)
		}
	}
	return nil
}

// parseOrigin returns the host of an origin like https://app.example.com.
func parseOrigin(origin string) (string, error) {
	u, err := url.Parse(origin)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("not an origin: %q", origin)
	}
	return u.Host, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// NewHTTPHandler returns the handler for /mcp, the per-bot endpoints,
// /metrics, /healthz and /readyz.
// The returned shutdown func ends MCP sessions.
func NewHTTPHandler(s *server.MCPServer, o HTTPOptions) (http.Handler, func(context.Context) error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Console.Login, o.Console.Logger = o.tokenPrincipal, o.Logger
	if o.Manager != nil {
		o.Console.Workspaces = o.Manager
	}
	o.ui = console.New(o.Console)
	owners := newSessionOwners()
	progress := newProgressLog()
	calls := newModernCalls()
	mcpHandler := server.NewStreamableHTTPServer(s,
		server.WithEndpointPath("/mcp"),
		// Stateful, with ids owned by the credential that opened them.
		server.WithSessionIdManagerResolver(owners),
		server.WithStreamableHTTPProtocolVersions(httpProtocolVersions...),
		server.WithEventStore(newEventStore(eventsPerSession)),
		server.WithSessionIdleTTL(o.SessionIdleTTL),
		server.WithHeartbeatInterval(30*time.Second),
		server.WithStreamableHTTPLogger(o.Logger),
		server.WithHTTPContextFunc(func(ctx context.Context, r *http.Request) context.Context {
			// A call's result waits until its last progress is flushed on
			// its progress stream (see recordProgress).
			if isModern(r) {
				ctx = modernContext(s, ctx, r)
			}
			if stream := progressStreamOf(r); stream != "" {
				ctx = tools.WithProgressWriter(ctx, sessionProgress{log: progress, session: stream})
			}
			return auth.WithPrincipal(ctx, auth.FromContext(r.Context()))
		}),
	)
	mux := http.NewServeMux()
	// /mcp's tool calls and resource reads are audited one by one; its
	// HTTP requests only when refused.
	mux.Handle("/mcp", auditHTTP(o.Audit, false,
		o.checkOrigin(o.authenticate(owners.guard(pinBot(http.MaxBytesHandler(o.tasks(calls.shim(recordProgress(progress, mcpHandler))), maxRequestBytes)))))))
	wrap := func(h http.Handler) http.Handler { return auditHTTP(o.Audit, true, o.checkOrigin(o.authenticate(h))) }
	if o.Manager != nil {
		botRoutes{m: o.Manager, origins: o.AllowedOrigins}.register(mux, wrap)
	}
	if o.MCPProxy != nil {
		mux.Handle("/bots/{bot_id}/mcp/{name}", wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			bot, p := r.PathValue("bot_id"), auth.FromContext(r.Context())
			if err := p.Allow(auth.ScopeExec, bot); err != nil {
				httpError(w, statusOf(err), err)
				return
			}
			// Proxy sessions are matched by the credential's ID, which no
			// other token can share (names may look alike after Only).
			o.MCPProxy.Serve(w, r, mcpproxy.Target{Bot: bot, Server: r.PathValue("name"), Caller: p.ID})
		})))
	}
	if o.Metrics != nil {
		// Scrapes are frequent: only refused ones are audited.
		mux.Handle("GET /metrics", auditHTTP(o.Audit, false, o.checkOrigin(o.authenticate(o.Metrics.Handler()))))
	}
	// The web console: the page, its login and its own API, which answers
	// its sessions only (refusals are audited).
	ui := auditHTTP(o.Audit, false, o.checkOrigin(o.ui.Handler()))
	mux.Handle("/ui", ui)
	mux.Handle("/ui/", ui)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if o.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if err := o.Ready(ctx); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	return o.withPorts(mux), func(ctx context.Context) error {
		o.ui.Close() // the console's event streams would hold the shutdown
		return mcpHandler.Shutdown(ctx)
	}
}

// authenticate admits requests with the bearer token and attaches the
// principal they act as.
func (o HTTPOptions) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p *auth.Principal
		if o.NoAuth {
			p = auth.Local("unauthenticated loopback client")
		} else {
			tok, ok := auth.BearerToken(r.Header.Get("Authorization"))
			if !ok && strings.HasSuffix(r.URL.Path, "/terminal/ws") {
				// Browsers cannot set headers on a WebSocket handshake.
				tok = r.URL.Query().Get("access_token")
				ok = tok != ""
			}
			msg := "missing bearer token: send Authorization: Bearer <token> (see berth's token file)"
			if ok {
				p, msg = o.tokenPrincipal(tok), "invalid bearer token"
			} else if r.Header.Get("Authorization") == "" {
				// The console's session cookie, under its CSRF rule.
				var err error
				if p, err = o.ui.Principal(r); errors.Is(err, console.ErrCSRF) {
					markDenied(r, "missing or wrong CSRF token")
					http.Error(w, err.Error(), http.StatusForbidden)
					return
				} else if err != nil {
					msg = err.Error()
				}
			}
			if p == nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="berth"`)
				http.Error(w, msg, http.StatusUnauthorized)
				return
			}
		}
		setAuditToken(r, p.ID)
		next.ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	})
}

// tasks is o.Tasks around h, or h.
func (o HTTPOptions) tasks(h http.Handler) http.Handler {
	if o.Tasks == nil {
		return h
	}
	return o.Tasks(h)
}

// tokenPrincipal is who a berth token makes its holder: the admin, a
// scoped token's principal, or nil.
func (o HTTPOptions) tokenPrincipal(tok string) *auth.Principal {
	switch {
	case o.NoAuth:
		return auth.Local("unauthenticated loopback client")
	case o.Token.Matches(tok):
		return auth.Local("admin token")
	}
	return auth.MatchScoped(o.ScopedTokens, tok)
}

// pinBot limits a session of /mcp?bot=ID to that bot: its tools act on
// it only, and the tools of that bot's own MCP servers join its list.
func pinBot(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bot := r.URL.Query().Get("bot")
		if bot == "" {
			next.ServeHTTP(w, r)
			return
		}
		p := auth.FromContext(r.Context())
		if err := workspace.ValidateBotID(bot); err != nil {
			httpError(w, http.StatusBadRequest, err)
			return
		}
		if err := p.Allow(auth.ScopeRead, bot); err != nil {
			httpError(w, statusOf(err), err)
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), p.Only(bot))))
	})
}

// checkOrigin refuses browser requests from origins not allowed, so a web
// page cannot drive berth through a user's browser. Requests without an
// Origin header (every non-browser client) pass.
func (o HTTPOptions) checkOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin != "" && !slices.Contains(o.AllowedOrigins, origin) && !sameHost(origin, r.Host) {
			markDenied(r, "origin not allowed")
			http.Error(w, "origin "+origin+" is not allowed (see --allowed-origins)", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func sameHost(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, host)
}

// ServeHTTP listens on o.Addr and serves until ctx ends, then shuts down
// gracefully. ready, if not nil, receives the bound address.
func ServeHTTP(ctx context.Context, s *server.MCPServer, o HTTPOptions, ready func(addr string)) error {
	if err := CheckHTTPOptions(o); err != nil {
		return err
	}
	handler, shutdownMCP := NewHTTPHandler(s, o)
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: readHeaderTimeout, MaxHeaderBytes: 64 << 10}
	if ready != nil {
		ready(ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = shutdownMCP(shutdown)
	if o.MCPProxy != nil {
		// Ends the proxy sessions' streams, which Shutdown would wait for.
		o.MCPProxy.Close()
	}
	return srv.Shutdown(shutdown)
}
