package workspace

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/remedy"
	"github.com/containerd/errdefs"
)

// The ports a bot exposed are part of its workspace, like its MCP server
// registrations: one small JSON file per workspace under the state
// directory (never in the agent directory, which the workspace can write),
// removed on delete. Each exposed port carries its capability links, stored
// as SHA-256 hashes only: the token itself is shown once, by port_expose.
// Carrying the traffic is the transports' job (through the agent's tunnel).

// PortPolicy bounds exposed ports and what reaches them.
type PortPolicy struct {
	// MaxPorts is how many ports one bot may expose.
	MaxPorts int
	// MaxTunnels is how many connections to one bot's ports may be open at
	// once (idle kept-alive ones included).
	MaxTunnels int
	// LinkTTL is a new link's lifetime when port_expose names none;
	// MaxLinkTTL the longest one may ask for.
	LinkTTL, MaxLinkTTL time.Duration
	// IdleTimeout closes a connection to a port (a WebSocket included) that
	// carried nothing either way for this long.
	IdleTimeout time.Duration
	// MaxBodyBytes caps a request body sent to a port.
	MaxBodyBytes int64
	// PreviewDomain, if set, routes requests for Host {port}-{bot}.DOMAIN
	// to that port, so apps that use absolute paths work.
	PreviewDomain string
	// PublicURL is berth's HTTP address as people reach it (scheme, host,
	// port); with it port_expose answers whole URLs instead of paths.
	PublicURL string
}

// Defaults and bounds of PortPolicy.
const (
	DefaultMaxPorts     = 16
	DefaultMaxTunnels   = 64
	DefaultLinkTTL      = 24 * time.Hour
	DefaultMaxLinkTTL   = 30 * 24 * time.Hour
	DefaultPortIdle     = 10 * time.Minute
	DefaultPortMaxBody  = 64 << 20
	minLinkTTL          = time.Minute
	maxLinksPerPort     = 16
	maxPortNameLen      = 64
	portLinkTokenBytes  = 32
	PortProtocolHTTP    = "http"
	portsFileMaxBytes   = 1 << 20
	previewDomainMaxLen = 200
)

// WithDefaults fills zero fields.
func (p PortPolicy) WithDefaults() PortPolicy {
	if p.MaxPorts <= 0 {
		p.MaxPorts = DefaultMaxPorts
	}
	if p.MaxTunnels <= 0 {
		p.MaxTunnels = DefaultMaxTunnels
	}
	if p.LinkTTL <= 0 {
		p.LinkTTL = DefaultLinkTTL
	}
	if p.MaxLinkTTL <= 0 {
		p.MaxLinkTTL = DefaultMaxLinkTTL
	}
	if p.IdleTimeout <= 0 {
		p.IdleTimeout = DefaultPortIdle
	}
	if p.MaxBodyBytes <= 0 {
		p.MaxBodyBytes = DefaultPortMaxBody
	}
	p.PreviewDomain = strings.ToLower(strings.Trim(p.PreviewDomain, "."))
	p.PublicURL = strings.TrimSuffix(p.PublicURL, "/")
	return p
}

// Validate says why the policy cannot be served, naming the flag.
func (p PortPolicy) Validate() error {
	p = p.WithDefaults()
	if p.LinkTTL < minLinkTTL || p.LinkTTL > p.MaxLinkTTL {
		return fmt.Errorf("--port-link-ttl %s must be between %s and --port-link-max-ttl (%s)", p.LinkTTL, minLinkTTL, p.MaxLinkTTL)
	}
	if d := p.PreviewDomain; d != "" {
		if len(d) > previewDomainMaxLen || net.ParseIP(d) != nil || !validHostname(d) {
			return fmt.Errorf("--preview-domain %q is not a domain name like preview.example.com or localhost", d)
		}
	}
	if p.PublicURL != "" {
		u, err := url.Parse(p.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("--public-url %q is not a base URL like https://berth.example.com or http://127.0.0.1:8080", p.PublicURL)
		}
	}
	return nil
}

func validHostname(d string) bool {
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// PortPolicy is the policy this Manager serves ports with.
func (m *Manager) PortPolicy() PortPolicy { return m.opts.Ports.WithDefaults() }

// ExposedPort is a port of a workspace that berth's HTTP transport serves.
type ExposedPort struct {
	Port      int        `json:"port"`
	Name      string     `json:"name,omitempty"`
	Protocol  string     `json:"protocol"`
	ExposedAt time.Time  `json:"exposed_at"`
	Links     []PortLink `json:"links,omitempty"`
}

// PortLink is a capability link of an exposed port. Only the token's hash
// is kept.
type PortLink struct {
	ID        string    `json:"id"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// CreatedBy is the credential that asked for it (its audit id).
	CreatedBy string `json:"created_by,omitempty"`
}

// ExposeRequest asks for a port to be exposed with a new link.
type ExposeRequest struct {
	Port     int
	Name     string
	Protocol string
	// LinkTTL is the new link's lifetime; 0 takes the policy's default.
	LinkTTL   time.Duration
	CreatedBy string
}

// ValidatePort says why port cannot be exposed, or nil.
func ValidatePort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%w: port %d is not a TCP port: give 1-65535 (the port the bot's server listens on inside the workspace)", errdefs.ErrInvalidArgument, port)
	}
	return nil
}

func (m *Manager) portsPath(bot string) string {
	return filepath.Join(m.opts.StateDir, "ports", bot+".json")
}

// Ports returns the bot's exposed ports, by port number.
func (m *Manager) Ports(bot string) ([]ExposedPort, error) {
	if err := ValidateBotID(bot); err != nil {
		return nil, err
	}
	f, err := os.Open(m.portsPath(bot))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ports []ExposedPort
	dec := json.NewDecoder(&limitedReader{f, portsFileMaxBytes})
	if err := dec.Decode(&ports); err != nil {
		return nil, fmt.Errorf("exposed ports of %s (%s): %w", bot, m.portsPath(bot), err)
	}
	return ports, nil
}

// limitedReader fails, rather than ends, past its limit, so a file that is
// too big never decodes as something shorter.
type limitedReader struct {
	f interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("file too large")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}

// ExposedPort returns the bot's exposed port, if it is exposed.
func (m *Manager) ExposedPort(bot string, port int) (ExposedPort, bool, error) {
	ports, err := m.Ports(bot)
	if err != nil {
		return ExposedPort{}, false, err
	}
	i := slices.IndexFunc(ports, func(p ExposedPort) bool { return p.Port == port })
	if i < 0 {
		return ExposedPort{}, false, nil
	}
	return ports[i], true, nil
}

// ExposePort exposes req.Port of the bot's workspace (or keeps it exposed,
// renaming it if req names it) and issues a new link. The link's token is
// returned once and never stored.
func (m *Manager) ExposePort(ctx context.Context, bot string, req ExposeRequest) (ExposedPort, PortLink, string, error) {
	if err := ValidatePort(req.Port); err != nil {
		return ExposedPort{}, PortLink{}, "", err
	}
	if req.Protocol == "" {
		req.Protocol = PortProtocolHTTP
	}
	if req.Protocol != PortProtocolHTTP {
		return ExposedPort{}, PortLink{}, "", fmt.Errorf("%w: protocol %q is not served; berth proxies %q (HTTP and WebSocket)", errdefs.ErrInvalidArgument, req.Protocol, PortProtocolHTTP)
	}
	if len(req.Name) > maxPortNameLen || strings.ContainsFunc(req.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return ExposedPort{}, PortLink{}, "", fmt.Errorf("%w: name is longer than %d bytes or holds control characters", errdefs.ErrInvalidArgument, maxPortNameLen)
	}
	pol := m.PortPolicy()
	ttl := req.LinkTTL
	if ttl == 0 {
		ttl = pol.LinkTTL
	}
	if ttl < minLinkTTL || ttl > pol.MaxLinkTTL {
		return ExposedPort{}, PortLink{}, "", fmt.Errorf("%w: link_ttl %s must be between %s and %s", errdefs.ErrInvalidArgument, ttl, minLinkTTL, pol.MaxLinkTTL)
	}
	mctx, done, err := m.mutate(ctx, bot, time.Minute)
	if err != nil {
		return ExposedPort{}, PortLink{}, "", err
	}
	defer done()
	if _, err := m.rt.Container(mctx, bot); isNotFound(err) {
		return ExposedPort{}, PortLink{}, "", notFound(bot)
	} else if err != nil {
		return ExposedPort{}, PortLink{}, "", err
	}
	ports, err := m.Ports(bot)
	if err != nil {
		return ExposedPort{}, PortLink{}, "", err
	}
	now := time.Now().UTC()
	i := slices.IndexFunc(ports, func(p ExposedPort) bool { return p.Port == req.Port })
	if i < 0 {
		if len(ports) >= pol.MaxPorts {
			return ExposedPort{}, PortLink{}, "", remedy.With(remedy.UnexposePort, fmt.Errorf("%w: workspace %s already exposes %d ports, the most it may",
				errdefs.ErrResourceExhausted, bot, pol.MaxPorts))
		}
		ports = append(ports, ExposedPort{Port: req.Port, Protocol: req.Protocol, ExposedAt: now})
		slices.SortFunc(ports, func(a, b ExposedPort) int { return a.Port - b.Port })
		i = slices.IndexFunc(ports, func(p ExposedPort) bool { return p.Port == req.Port })
	}
	p := &ports[i]
	if req.Name != "" {
		p.Name = req.Name
	}
	p.Protocol = req.Protocol
	token, link, err := newPortLink(now, ttl, req.CreatedBy)
	if err != nil {
		return ExposedPort{}, PortLink{}, "", err
	}
	// Expired links go; past the cap, the oldest live ones do too.
	p.Links = slices.DeleteFunc(p.Links, func(l PortLink) bool { return !now.Before(l.ExpiresAt) })
	if len(p.Links) >= maxLinksPerPort {
		p.Links = p.Links[len(p.Links)-maxLinksPerPort+1:]
	}
	p.Links = append(p.Links, link)
	if err := m.writePorts(bot, ports); err != nil {
		return ExposedPort{}, PortLink{}, "", err
	}
	return *p, link, token, nil
}

func newPortLink(now time.Time, ttl time.Duration, by string) (string, PortLink, error) {
	secret := make([]byte, portLinkTokenBytes)
	id := make([]byte, 4)
	if _, err := rand.Read(secret); err != nil {
		return "", PortLink{}, err
	}
	if _, err := rand.Read(id); err != nil {
		return "", PortLink{}, err
	}
	token := base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(token))
	return token, PortLink{
		ID: "l" + hex.EncodeToString(id), SHA256: hex.EncodeToString(sum[:]),
		CreatedAt: now, ExpiresAt: now.Add(ttl).Truncate(time.Second), CreatedBy: by,
	}, nil
}

// UnexposePort stops serving the port and revokes its links; removed says
// whether it was exposed.
func (m *Manager) UnexposePort(ctx context.Context, bot string, port int) (removed bool, err error) {
	if err := ValidatePort(port); err != nil {
		return false, err
	}
	_, done, err := m.mutate(ctx, bot, time.Minute)
	if err != nil {
		return false, err
	}
	defer done()
	ports, err := m.Ports(bot)
	if err != nil {
		return false, err
	}
	i := slices.IndexFunc(ports, func(p ExposedPort) bool { return p.Port == port })
	if i < 0 {
		return false, nil
	}
	return true, m.writePorts(bot, slices.Delete(ports, i, i+1))
}

// CheckPortLink returns the link of the bot's exposed port that token
// opens, if one does and it has not expired. Every stored hash is compared
// in constant time, so the time taken says nothing about the token.
func (m *Manager) CheckPortLink(bot string, port int, token string) (PortLink, bool) {
	if token == "" || len(token) > 128 {
		return PortLink{}, false
	}
	p, ok, err := m.ExposedPort(bot, port)
	if err != nil || !ok {
		return PortLink{}, false
	}
	sum := sha256.Sum256([]byte(token))
	want := hex.EncodeToString(sum[:])
	now := time.Now()
	var found PortLink
	match := 0
	for _, l := range p.Links {
		if subtle.ConstantTimeCompare([]byte(l.SHA256), []byte(want)) == 1 {
			found, match = l, 1
		}
	}
	if match == 0 || !now.Before(found.ExpiresAt) {
		return PortLink{}, false
	}
	return found, true
}

// writePorts replaces the bot's ports file atomically, so a crash leaves
// the old list or the new one.
func (m *Manager) writePorts(bot string, ports []ExposedPort) error {
	return writeBotFile(m.portsPath(bot), bot, ports)
}

// PortLinkParam is the query parameter that carries a capability link's
// token; berth answers it with a cookie and a redirect to the same URL
// without it.
const PortLinkParam = "berth_link"

// PortPath is where berth's HTTP transport serves the bot's port.
func PortPath(bot string, port int) string {
	return fmt.Sprintf("/bots/%s/ports/%d/", bot, port)
}

// PortURLs are the addresses of an exposed port under this policy: URL is
// PortPath, made whole with PublicURL when that is set; PreviewHost is the
// host name routed to the port when PreviewDomain is set, and PreviewURL
// its whole URL when PublicURL says the scheme and port too.
func (p PortPolicy) PortURLs(bot string, port int) (u, previewHost, previewURL string) {
	p = p.WithDefaults()
	u = p.PublicURL + PortPath(bot, port)
	if p.PreviewDomain == "" {
		return u, "", ""
	}
	previewHost = fmt.Sprintf("%d-%s.%s", port, bot, p.PreviewDomain)
	if pub, err := url.Parse(p.PublicURL); err == nil && p.PublicURL != "" {
		host := previewHost
		if pp := pub.Port(); pp != "" {
			host = net.JoinHostPort(previewHost, pp)
		}
		previewURL = pub.Scheme + "://" + host + "/"
	}
	return u, previewHost, previewURL
}

// ParsePreviewHost reads the bot and port out of a Host header of the form
// {port}-{bot}.PreviewDomain[:port]; ok is false for any other host.
func (p PortPolicy) ParsePreviewHost(host string) (bot string, port int, ok bool) {
	d := p.PreviewDomain
	if d == "" {
		return "", 0, false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	label, found := strings.CutSuffix(host, "."+d)
	if !found {
		return "", 0, false
	}
	num, bot, found := strings.Cut(label, "-")
	if !found || len(num) == 0 || len(num) > 5 || num[0] == '0' {
		return "", 0, false
	}
	for _, r := range num {
		if r < '0' || r > '9' {
			return "", 0, false
		}
		port = port*10 + int(r-'0')
	}
	if ValidatePort(port) != nil || ValidateBotID(bot) != nil {
		return "", 0, false
	}
	return bot, port, true
}
