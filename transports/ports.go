package transports

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/console"
	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
)

// The bots' exposed ports, served at /bots/{bot_id}/ports/{port}/ (and on
// {port}-{bot}.PREVIEW_DOMAIN with --preview-domain) by a reverse proxy
// whose every connection is a tunnel through the workspace's agent: no
// route from the host into the workspace's network is needed, so it works
// in every network mode, none included.
//
// Who may pass: a bearer token with the exec scope for the bot (the scope
// of the other routes that reach the workspace's processes: the terminal
// and the bots' MCP servers), or a capability link of that port. A link
// arrives as ?berth_link=TOKEN, is answered with a cookie scoped to the
// port's path (or, on a preview host, to that host) and a redirect without
// it, and from then on travels as the cookie. Neither berth's Authorization
// header nor its cookie ever reaches the bot's server.

const (
	portLinkCookie = "berth_link"
	// portRoute is the pattern of the path route, also recorded as the
	// route of host-routed requests in the audit log.
	portRoute = "/bots/{bot_id}/ports/{port}/"
	// portResponseHeaderTimeout bounds the wait for the bot's server to
	// start answering; a dev server compiling on its first request is slow,
	// one that never answers must not hold a tunnel forever.
	portResponseHeaderTimeout = 5 * time.Minute
	portMaxResponseHeader     = 64 << 10
	portIdlePerHost           = 2
)

// portPathSandbox is the Content-Security-Policy of a bot's responses on
// the path route (see modifyResponse): scripts, forms, popups, dialogs and
// downloads work; the same origin as berth is not given. It is added
// beside the app's own policy: browsers enforce every policy a response
// carries, so the app keeps its own and cannot loosen this one.
const portPathSandbox = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"

// errTooManyTunnels refuses a connection past the bot's tunnel cap.
var errTooManyTunnels = errors.New("too many connections to this bot's ports")

// portProxy serves the exposed ports of every bot.
type portProxy struct {
	o     HTTPOptions
	m     *workspace.Manager
	pol   workspace.PortPolicy
	log   *slog.Logger
	proxy *httputil.ReverseProxy
	tr    *http.Transport

	mu   sync.Mutex
	open map[string]int // tunnels per bot, idle kept-alive ones included
	// live are the open tunnels by target, for the revocation sweep.
	live     map[portKey]map[*idleConn]struct{}
	sweeping bool
}

type portKey struct {
	bot  string
	port int
}

// revokeSweep is how often open tunnels are checked against the exposed
// ports, so that port_unexpose (which revokes the links) and workspace_delete
// also end the connections already open, WebSockets included, within it.
const revokeSweep = 2 * time.Second

// withPorts registers the port route on mux and returns the handler to
// serve: mux itself, or with --preview-domain, mux behind host routing.
func (o HTTPOptions) withPorts(mux *http.ServeMux) http.Handler {
	if o.Manager == nil {
		return mux
	}
	pp := newPortProxy(o)
	mux.Handle(portRoute, auditHTTP(o.Audit, true, o.checkOrigin(http.HandlerFunc(pp.servePath))))
	if pp.pol.PreviewDomain == "" {
		return mux
	}
	byHost := auditHTTP(o.Audit, true, o.checkOrigin(http.HandlerFunc(pp.serveHost)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bot, port, ok := pp.pol.ParsePreviewHost(r.Host)
		if !ok {
			mux.ServeHTTP(w, r)
			return
		}
		// Everything on a preview host is the bot's: /mcp there is the
		// app's /mcp, not berth's.
		r.SetPathValue("bot_id", bot)
		r.SetPathValue("port", strconv.Itoa(port))
		r.Pattern = portRoute
		byHost.ServeHTTP(w, r)
	})
}

func newPortProxy(o HTTPOptions) *portProxy {
	pp := &portProxy{o: o, m: o.Manager, pol: o.Manager.PortPolicy(), log: o.Logger,
		open: map[string]int{}, live: map[portKey]map[*idleConn]struct{}{}}
	pp.tr = &http.Transport{
		DialContext:            pp.dial,
		Proxy:                  nil,
		DisableCompression:     true,
		MaxIdleConnsPerHost:    portIdlePerHost,
		IdleConnTimeout:        min(90*time.Second, pp.pol.IdleTimeout),
		ResponseHeaderTimeout:  portResponseHeaderTimeout,
		MaxResponseHeaderBytes: portMaxResponseHeader,
	}
	pp.proxy = &httputil.ReverseProxy{
		Rewrite:        pp.rewrite,
		Transport:      pp.tr,
		ModifyResponse: pp.modifyResponse,
		ErrorHandler:   pp.proxyError,
		ErrorLog:       slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	return pp
}

// portTarget is what one proxied request goes to.
type portTarget struct {
	bot    string
	port   int
	prefix string // the path prefix stripped, "" on a preview host
}

type portTargetKey struct{}

func (pp *portProxy) servePath(w http.ResponseWriter, r *http.Request) {
	bot, port, ok := parsePortRoute(w, r)
	if !ok {
		return
	}
	pp.serve(w, r, portTarget{bot: bot, port: port, prefix: strings.TrimSuffix(workspace.PortPath(bot, port), "/")})
}

func (pp *portProxy) serveHost(w http.ResponseWriter, r *http.Request) {
	port, _ := strconv.Atoi(r.PathValue("port"))
	pp.serve(w, r, portTarget{bot: r.PathValue("bot_id"), port: port})
}

// parsePortRoute reads and checks the bot and port of the path.
func parsePortRoute(w http.ResponseWriter, r *http.Request) (string, int, bool) {
	bot, ps := r.PathValue("bot_id"), r.PathValue("port")
	if err := workspace.ValidateBotID(bot); err != nil {
		httpError(w, http.StatusBadRequest, err)
		return "", 0, false
	}
	port, err := strconv.Atoi(ps)
	if err != nil || strconv.Itoa(port) != ps {
		port = 0
	}
	if err := workspace.ValidatePort(port); err != nil {
		httpError(w, http.StatusBadRequest, fmt.Errorf("port %q is not a TCP port: give 1-65535", ps))
		return "", 0, false
	}
	return bot, port, true
}

// serve authorizes r for t and proxies it.
func (pp *portProxy) serve(w http.ResponseWriter, r *http.Request, t portTarget) {
	if tok := r.URL.Query().Get(workspace.PortLinkParam); tok != "" {
		pp.acceptLink(w, r, t, tok)
		return
	}
	if r.Header.Get("Authorization") == "" && !pp.o.NoAuth {
		if c, err := r.Cookie(portLinkCookie); err == nil {
			link, ok := pp.m.CheckPortLink(t.bot, t.port, c.Value)
			if !ok {
				pp.refuseLink(w, r, t)
				return
			}
			setAuditToken(r, "link:"+link.ID)
			pp.forward(w, r, t)
			return
		}
	}
	pp.o.authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := auth.FromContext(r.Context()).Allow(auth.ScopeExec, t.bot); err != nil {
			httpError(w, statusOf(err), err)
			return
		}
		if _, ok, err := pp.m.ExposedPort(t.bot, t.port); err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		} else if !ok {
			httpError(w, http.StatusNotFound, fmt.Errorf("port %d of %s is not exposed; port_expose serves it (port_list shows what is)", t.port, t.bot))
			return
		}
		// The token was berth's, not the app's.
		r.Header.Del("Authorization")
		pp.forward(w, r, t)
	})).ServeHTTP(w, r)
}

// acceptLink turns a link into a cookie for the port and redirects to the
// same URL without the token, so it leaves the address bar and history.
func (pp *portProxy) acceptLink(w http.ResponseWriter, r *http.Request, t portTarget, tok string) {
	link, ok := pp.m.CheckPortLink(t.bot, t.port, tok)
	if !ok {
		pp.refuseLink(w, r, t)
		return
	}
	setAuditToken(r, "link:"+link.ID)
	path := "/"
	if t.prefix != "" {
		path = t.prefix + "/"
	}
	http.SetCookie(w, &http.Cookie{
		Name: portLinkCookie, Value: tok, Path: path, Expires: link.ExpiresAt,
		// No Domain: on a preview host the cookie stays on that host.
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: isHTTPS(r),
	})
	q := r.URL.Query()
	q.Del(workspace.PortLinkParam)
	u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

func (pp *portProxy) refuseLink(w http.ResponseWriter, r *http.Request, t portTarget) {
	markDenied(r, "bad or expired port link")
	// Forget the dead cookie, so the browser falls back to asking.
	path := "/"
	if t.prefix != "" {
		path = t.prefix + "/"
	}
	http.SetCookie(w, &http.Cookie{Name: portLinkCookie, Value: "", Path: path, MaxAge: -1, HttpOnly: true})
	httpError(w, http.StatusForbidden, fmt.Errorf("this link to port %d of %s is invalid, expired or revoked; port_expose issues a new one", t.port, t.bot))
}

func isHTTPS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// forward proxies r to the port.
func (pp *portProxy) forward(w http.ResponseWriter, r *http.Request, t portTarget) {
	r.Body = http.MaxBytesReader(w, r.Body, pp.pol.MaxBodyBytes)
	pp.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), portTargetKey{}, t)))
}

// tunnelHost encodes the bot and port as the URL host, so the transport
// keeps its kept-alive connections apart per bot and port and its dialer
// knows where to go.
func tunnelHost(bot string, port int) string { return "p" + strconv.Itoa(port) + "." + bot }

func parseTunnelHost(host string) (string, int, bool) {
	ps, bot, ok := strings.Cut(strings.TrimPrefix(host, "p"), ".")
	port, err := strconv.Atoi(ps)
	return bot, port, ok && err == nil
}

func (pp *portProxy) rewrite(pr *httputil.ProxyRequest) {
	t := pr.In.Context().Value(portTargetKey{}).(portTarget)
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = tunnelHost(t.bot, t.port)
	if t.prefix != "" {
		out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, t.prefix)
		out.URL.RawPath = strings.TrimPrefix(pr.In.URL.RawPath, t.prefix)
		out.Header.Set("X-Forwarded-Prefix", t.prefix)
	}
	if out.URL.Path == "" {
		out.URL.Path = "/"
	}
	q := out.URL.Query()
	if q.Has(workspace.PortLinkParam) {
		q.Del(workspace.PortLinkParam)
		out.URL.RawQuery = q.Encode()
	}
	// The host the bot's server sees is the one it would see when opened
	// inside the workspace, which dev servers' host checks accept; the
	// address people used is in X-Forwarded-Host.
	out.Host = "localhost:" + strconv.Itoa(t.port)
	pr.SetXForwarded()
	stripCookie(out.Header, portLinkCookie)
	stripCookie(out.Header, console.CookieName)
}

// stripCookie removes the named cookie from the Cookie headers and keeps
// the others (the app's own).
func stripCookie(h http.Header, name string) {
	values := h.Values("Cookie")
	if len(values) == 0 {
		return
	}
	h.Del("Cookie")
	var kept []string
	for _, v := range values {
		for _, part := range strings.Split(v, ";") {
			part = strings.TrimSpace(part)
			if n, _, _ := strings.Cut(part, "="); part == "" || strings.TrimSpace(n) == name {
				continue
			}
			kept = append(kept, part)
		}
	}
	if len(kept) > 0 {
		h.Set("Cookie", strings.Join(kept, "; "))
	}
}

// modifyResponse keeps the app's redirects inside its prefix: a Location
// of /login (or http://localhost:PORT/login) means the app's own /login.
func (pp *portProxy) modifyResponse(res *http.Response) error {
	t, _ := res.Request.Context().Value(portTargetKey{}).(portTarget)
	keepOwnCookies(res.Header, t.prefix)
	if t.prefix != "" {
		// It would clear berth's cookies and storage for the whole origin.
		res.Header.Del("Clear-Site-Data")
		// On berth's own origin a bot's page must not act as berth's: its
		// scripts would share the origin of the console (and of every
		// other bot's path), read the console's pages with the logged-in
		// user's cookie and call /mcp as them. The sandbox gives the page
		// an opaque origin of its own, from which berth's cookies are not
		// sent and its responses not readable; apps that need an origin
		// (their own cookies, storage) are served on --preview-domain.
		res.Header.Add("Content-Security-Policy", portPathSandbox)
		// And its service worker would see the console's pages too.
		res.Header.Del("Service-Worker-Allowed")
	}
	loc := res.Header.Get("Location")
	if t.prefix == "" || loc == "" {
		return nil
	}
	u, err := url.Parse(loc)
	if err != nil {
		return nil
	}
	local := u.Host == "" || u.Host == "localhost:"+strconv.Itoa(t.port) || u.Host == "127.0.0.1:"+strconv.Itoa(t.port)
	if !local || (u.Host == "" && !strings.HasPrefix(loc, "/")) || strings.HasPrefix(loc, "//") || (u.Scheme != "" && u.Scheme != "http") {
		return nil
	}
	res.Header.Set("Location", (&url.URL{Path: t.prefix + u.Path, RawQuery: u.RawQuery, Fragment: u.Fragment}).String())
	return nil
}

// keepOwnCookies drops the cookies a bot's response sets outside what is
// the app's own: any named like berth's (a bot could plant its own console
// session or port link in the browser of whoever opens its page), any with
// a Domain (it would reach berth's host or other bots' preview hosts), and
// on the path route (prefix) any whose Path leaves the port's prefix.
func keepOwnCookies(h http.Header, prefix string) {
	set := h.Values("Set-Cookie")
	if len(set) == 0 {
		return
	}
	h.Del("Set-Cookie")
	for _, line := range set {
		c, err := http.ParseSetCookie(line)
		if err != nil || strings.HasPrefix(strings.ToLower(c.Name), "berth_") || c.Domain != "" {
			continue
		}
		if prefix != "" && c.Path != "" && c.Path != prefix && !strings.HasPrefix(c.Path, prefix+"/") {
			continue
		}
		h.Add("Set-Cookie", line)
	}
}

// proxyError answers a request the proxy could not carry.
func (pp *portProxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	t, _ := r.Context().Value(portTargetKey{}).(portTarget)
	var remote *client.RemoteError
	var tooBig *http.MaxBytesError
	switch {
	case client.IsUnreachable(err) && errors.As(err, &remote):
		httpError(w, http.StatusBadGateway, fmt.Errorf("port %d of %s: %s", t.port, t.bot, remote.Message))
	case errors.Is(err, errTooManyTunnels):
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, fmt.Errorf("%s has %d connections to its ports open, the most it may; retry when some close", t.bot, pp.pol.MaxTunnels))
	case errors.As(err, &tooBig):
		httpError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("the request body is larger than %d bytes, the most berth passes to a port", pp.pol.MaxBodyBytes))
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads an answer.
		w.WriteHeader(499)
	default:
		status := statusOf(err)
		if status == http.StatusInternalServerError {
			status = http.StatusBadGateway
		}
		pp.log.Debug("port proxy", "bot", t.bot, "port", t.port, "err", err)
		httpError(w, status, fmt.Errorf("port %d of %s: %w", t.port, t.bot, err))
	}
}

// dial opens a tunnel to the port that addr names, within the bot's cap.
func (pp *portProxy) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	bot, port, ok := parseTunnelHost(host)
	if !ok {
		return nil, fmt.Errorf("no tunnel target in %q", addr)
	}
	if !pp.acquire(bot) {
		return nil, errTooManyTunnels
	}
	key := portKey{bot, port}
	var ic *idleConn
	release := func() { pp.release(bot) }
	conn, err := workspace.Ask(ctx, pp.m, bot, func(a *client.Client) (*client.TunnelConn, error) { return a.DialTunnel(ctx, port) })
	if err != nil {
		release()
		return nil, err
	}
	ic = newIdleConn(conn, pp.pol.IdleTimeout, func() { pp.forget(key, ic); release() })
	pp.track(key, ic)
	return ic, nil
}

// track records an open tunnel and starts the revocation sweep if it is
// not running.
func (pp *portProxy) track(key portKey, ic *idleConn) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.live[key] == nil {
		pp.live[key] = map[*idleConn]struct{}{}
	}
	pp.live[key][ic] = struct{}{}
	if !pp.sweeping {
		pp.sweeping = true
		go pp.sweep()
	}
}

func (pp *portProxy) forget(key portKey, ic *idleConn) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	delete(pp.live[key], ic)
	if len(pp.live[key]) == 0 {
		delete(pp.live, key)
	}
}

// sweep closes the tunnels of ports no longer exposed, until none is open.
func (pp *portProxy) sweep() {
	t := time.NewTicker(revokeSweep)
	defer t.Stop()
	for range t.C {
		pp.mu.Lock()
		if len(pp.live) == 0 {
			pp.sweeping = false
			pp.mu.Unlock()
			return
		}
		keys := make([]portKey, 0, len(pp.live))
		for k := range pp.live {
			keys = append(keys, k)
		}
		pp.mu.Unlock()
		for _, k := range keys {
			if _, ok, err := pp.m.ExposedPort(k.bot, k.port); err != nil || ok {
				continue
			}
			pp.mu.Lock()
			var conns []*idleConn
			for c := range pp.live[k] {
				conns = append(conns, c)
			}
			pp.mu.Unlock()
			for _, c := range conns {
				_ = c.Close()
			}
			pp.log.Debug("closed the connections of a port no longer exposed", "bot", k.bot, "port", k.port, "count", len(conns))
		}
	}
}

func (pp *portProxy) acquire(bot string) bool {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.open[bot] >= pp.pol.MaxTunnels {
		return false
	}
	pp.open[bot]++
	return true
}

func (pp *portProxy) release(bot string) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.open[bot]--; pp.open[bot] <= 0 {
		delete(pp.open, bot)
	}
}

// idleConn closes a tunnel that carried nothing either way for idle: a
// kept-alive connection nobody reuses, or a WebSocket both ends left
// silent. Checking a timestamp when the timer fires keeps reads and writes
// free of timer resets.
type idleConn struct {
	*client.TunnelConn
	idle      time.Duration
	last      atomic.Int64
	timer     *time.Timer
	closeOnce sync.Once
	onClose   func()
}

func newIdleConn(c *client.TunnelConn, idle time.Duration, onClose func()) *idleConn {
	ic := &idleConn{TunnelConn: c, idle: idle, onClose: onClose}
	ic.touch()
	ic.timer = time.AfterFunc(idle, ic.check)
	return ic
}

func (c *idleConn) touch() { c.last.Store(time.Now().UnixNano()) }

func (c *idleConn) check() {
	quiet := time.Since(time.Unix(0, c.last.Load()))
	if quiet < c.idle {
		c.timer.Reset(c.idle - quiet)
		return
	}
	_ = c.Close()
}

func (c *idleConn) Read(p []byte) (int, error) {
	n, err := c.TunnelConn.Read(p)
	if n > 0 {
		c.touch()
	}
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	n, err := c.TunnelConn.Write(p)
	if n > 0 {
		c.touch()
	}
	return n, err
}

func (c *idleConn) Close() error {
	err := c.TunnelConn.Close()
	c.closeOnce.Do(func() {
		c.timer.Stop()
		c.onClose()
	})
	return err
}
