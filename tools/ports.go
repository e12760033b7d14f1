package tools

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/server"
)

// PortExposeInput exposes a port of the workspace.
type PortExposeInput struct {
	BotID    string   `json:"bot_id"`
	Port     int      `json:"port" jsonschema:"minimum=1,maximum=65535,description=the TCP port the bot's server listens on inside the workspace (on 127.0.0.1\\, ::1 or all addresses)"`
	Name     string   `json:"name,omitempty" jsonschema:"description=a label for people\\, e.g. docs preview"`
	Protocol string   `json:"protocol,omitempty" jsonschema:"enum=http,description=what the port speaks; http (with WebSocket upgrades) is the only one served"`
	LinkTTL  *float64 `json:"link_ttl_hours,omitempty" jsonschema:"description=how long the new link works in hours; default 24 (configurable); at most 720 (configurable)"`
}

func (i PortExposeInput) bot() string { return i.BotID }

// PortInput names an exposed port.
type PortInput struct {
	BotID string `json:"bot_id"`
	Port  int    `json:"port" jsonschema:"minimum=1,maximum=65535"`
}

func (i PortInput) bot() string { return i.BotID }

// PortInfo describes an exposed port; link tokens are never listed.
type PortInfo struct {
	Port      int       `json:"port"`
	Name      string    `json:"name,omitempty"`
	Protocol  string    `json:"protocol"`
	ExposedAt time.Time `json:"exposed_at"`
	// URL is where berth serves the port: a path on berth's HTTP address,
	// or a whole URL when berth knows its public address.
	URL string `json:"url" jsonschema:"description=where berth serves the port (a path on berth's HTTP address unless --public-url is set); needs a token with the exec scope for the bot\\, or a link"`
	// PreviewHost is the host name routed to the port (--preview-domain).
	PreviewHost string     `json:"preview_host,omitempty" jsonschema:"description=with --preview-domain: the host name routed to this port at berth's HTTP address\\, for apps that use absolute paths"`
	PreviewURL  string     `json:"preview_url,omitempty"`
	Links       []LinkInfo `json:"links" jsonschema:"description=the port's links that have not expired (their tokens are shown only by port_expose)"`
}

// LinkInfo describes a capability link without its token.
type LinkInfo struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// PortExposeOutput is the exposed port and its new link.
type PortExposeOutput struct {
	Port PortInfo `json:"port"`
	// Link opens the port in a browser without a token until it expires or
	// the port is unexposed. It is shown only here.
	Link          string    `json:"link" jsonschema:"description=opens the port without a bearer token (a browser gets a cookie for it); shown only now; works until link_expires_at or port_unexpose"`
	PreviewLink   string    `json:"preview_link,omitempty" jsonschema:"description=the same link on the preview host (--preview-domain)"`
	LinkID        string    `json:"link_id"`
	LinkExpiresAt time.Time `json:"link_expires_at"`
}

// PortListOutput lists the exposed ports.
type PortListOutput struct {
	Ports []PortInfo `json:"ports"`
}

// PortUnexposeOutput says what port_unexpose did.
type PortUnexposeOutput struct {
	Port int `json:"port"`
	// Removed is false when the port was not exposed: nothing to do.
	Removed bool `json:"removed"`
	// LinksRevoked counts the links that stopped working.
	LinksRevoked int `json:"links_revoked"`
}

func portTools(h handlers) []server.ServerTool {
	return []server.ServerTool{
		define("port_expose", "Expose a port",
			"Serve a TCP port of the bot's workspace (an HTTP server, WebSockets included) through berth's HTTP transport at /bots/{bot_id}/ports/{port}/, "+
				"through the workspace's agent, so it works in every network mode (none included). Returns the URL (for holders of a token with the exec scope) "+
				"and a new revocable link that opens it in a browser without a token until it expires. The path prefix is stripped before the request reaches the server "+
				"(X-Forwarded-Prefix says it); apps that use absolute paths work on the preview host when berth has --preview-domain. "+
				"Exposing an exposed port keeps it and adds a link. The exposure lasts until port_unexpose or workspace_delete.",
			hints{openWorld: true}, auth.ScopeExec, h.portExpose),
		define("port_list", "List exposed ports",
			"List the ports the bot's workspace exposes, with their URLs and their links' ids and expiry (never their tokens).",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead, h.portList),
		define("port_unexpose", "Unexpose a port",
			"Stop serving the port through berth and revoke all its links at once; connections through it end. Unexposing a port that is not exposed succeeds with removed=false.",
			hints{destructive: true, idempotent: true}, auth.ScopeExec, h.portUnexpose),
	}
}

func (h handlers) portExpose(ctx context.Context, _ *call, in PortExposeInput) (PortExposeOutput, string, error) {
	var ttl time.Duration
	if in.LinkTTL != nil {
		hours := *in.LinkTTL
		if !(hours > 0) || hours > math.MaxInt64/float64(time.Hour) {
			return PortExposeOutput{}, "", fmt.Errorf("link_ttl_hours must be a positive number of hours (at most %.0f)", h.Manager.PortPolicy().MaxLinkTTL.Hours())
		}
		ttl = time.Duration(hours * float64(time.Hour))
	}
	p, link, token, err := h.Manager.ExposePort(ctx, in.BotID, workspace.ExposeRequest{
		Port: in.Port, Name: in.Name, Protocol: in.Protocol, LinkTTL: ttl,
		CreatedBy: auth.FromContext(ctx).ID,
	})
	if err != nil {
		return PortExposeOutput{}, "", err
	}
	info := portInfo(h.Manager.PortPolicy(), in.BotID, p)
	out := PortExposeOutput{
		Port: info, Link: info.URL + "?" + workspace.PortLinkParam + "=" + token,
		LinkID: link.ID, LinkExpiresAt: link.ExpiresAt,
	}
	if info.PreviewURL != "" {
		out.PreviewLink = info.PreviewURL + "?" + workspace.PortLinkParam + "=" + token
	}
	summary := fmt.Sprintf("port %d of %s is exposed at %s (with a token that has the exec scope)\nlink (shown once, expires %s): %s",
		p.Port, in.BotID, info.URL, link.ExpiresAt.Format(time.RFC3339), out.Link)
	switch {
	case out.PreviewLink != "":
		summary += "\npreview link: " + out.PreviewLink
	case info.PreviewHost != "":
		summary += "\npreview host (at berth's HTTP address): " + info.PreviewHost
	}
	if !strings.Contains(info.URL, "://") {
		summary += "\nthe paths are on berth's HTTP address"
	}
	return out, summary, nil
}

func (h handlers) portList(ctx context.Context, _ *call, in BotInput) (PortListOutput, string, error) {
	ports, err := h.Manager.Ports(in.BotID)
	if err != nil {
		return PortListOutput{}, "", err
	}
	out := PortListOutput{Ports: []PortInfo{}}
	pol := h.Manager.PortPolicy()
	summary := fmt.Sprintf("%d exposed port(s)", len(ports))
	for _, p := range ports {
		info := portInfo(pol, in.BotID, p)
		out.Ports = append(out.Ports, info)
		summary += fmt.Sprintf("\n%d %s: %s, %d link(s)", p.Port, p.Name, info.URL, len(info.Links))
	}
	return out, summary, nil
}

func (h handlers) portUnexpose(ctx context.Context, _ *call, in PortInput) (PortUnexposeOutput, string, error) {
	p, _, err := h.Manager.ExposedPort(in.BotID, in.Port)
	if err != nil {
		return PortUnexposeOutput{}, "", err
	}
	removed, err := h.Manager.UnexposePort(ctx, in.BotID, in.Port)
	if err != nil {
		return PortUnexposeOutput{}, "", err
	}
	out := PortUnexposeOutput{Port: in.Port, Removed: removed}
	if !removed {
		return out, fmt.Sprintf("port %d of %s was not exposed; nothing to do", in.Port, in.BotID), nil
	}
	out.LinksRevoked = len(liveLinks(p.Links))
	return out, fmt.Sprintf("port %d of %s is no longer exposed; %d link(s) revoked", in.Port, in.BotID, out.LinksRevoked), nil
}

func portInfo(pol workspace.PortPolicy, bot string, p workspace.ExposedPort) PortInfo {
	u, host, preview := pol.PortURLs(bot, p.Port)
	info := PortInfo{Port: p.Port, Name: p.Name, Protocol: p.Protocol, ExposedAt: p.ExposedAt,
		URL: u, PreviewHost: host, PreviewURL: preview, Links: []LinkInfo{}}
	for _, l := range liveLinks(p.Links) {
		info.Links = append(info.Links, LinkInfo{ID: l.ID, CreatedAt: l.CreatedAt, ExpiresAt: l.ExpiresAt, CreatedBy: l.CreatedBy})
	}
	return info
}

func liveLinks(links []workspace.PortLink) []workspace.PortLink {
	now := time.Now()
	var out []workspace.PortLink
	for _, l := range links {
		if now.Before(l.ExpiresAt) {
			out = append(out, l)
		}
	}
	return out
}
