package resources

import (
	"context"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/containerd/errdefs"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// notFoundHook makes a read of a snapshot version or an export that does
// not exist answer the protocol's resource-not-found error (-32002; the
// invalid-params code for clients of protocol 2026-07-28 on), not an
// internal error.
//
// mcp-go v1.2.1 reports every error a resource handler returns as -32603;
// only a URI that no template matches gets resource-not-found. So before
// the read, this hook looks the resource up and, when it is missing, turns
// the URI into one no template matches: the original URI followed by why,
// which the client sees in the error message. A caller that may not read
// the bot is left to the handler's refusal, so the hook never tells it
// what exists.
func notFoundHook(m *workspace.Manager) server.OnBeforeReadResourceFunc {
	return func(ctx context.Context, _ any, req *mcp.ReadResourceRequest) {
		if req == nil {
			return
		}
		if why := missing(ctx, m, req.Params.URI); why != "" {
			// A space matches no template (each is anchored and allows
			// no spaces), so mcp-go answers resource-not-found.
			req.Params.URI += " (" + why + ")"
		}
	}
}

// missing says why uri names a resource that does not exist, or "" when it
// exists, is not one this hook checks, or may not be looked up by the caller.
func missing(ctx context.Context, m *workspace.Manager, uri string) string {
	rest, ok := strings.CutPrefix(uri, "berth://bots/")
	if !ok {
		return ""
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 2 || workspace.ValidateBotID(parts[0]) != nil {
		return ""
	}
	bot := parts[0]
	if auth.FromContext(ctx).Allow(auth.ScopeRead, bot) != nil {
		return ""
	}
	switch {
	case len(parts) == 3 && parts[1] == "snapshots":
		lineage, err := m.ListSnapshots(ctx, bot)
		if errdefs.IsNotFound(err) {
			return fmt.Sprintf("bot %s has no workspace", bot)
		}
		if err != nil {
			return ""
		}
		for _, v := range lineage.Versions {
			if fmt.Sprint(v.Version) == parts[2] {
				return ""
			}
		}
		return fmt.Sprintf("bot %s has no snapshot version %s", bot, parts[2])
	case len(parts) == 2 && parts[1] == "snapshots":
		if _, err := m.ListSnapshots(ctx, bot); errdefs.IsNotFound(err) {
			return fmt.Sprintf("bot %s has no workspace", bot)
		}
	case len(parts) == 3 && parts[1] == "exports":
		f, err := m.OpenExport(bot, parts[2])
		if err == nil {
			f.Close()
		} else if errdefs.IsNotFound(err) {
			return fmt.Sprintf("bot %s has no export %s", bot, parts[2])
		}
	}
	return ""
}
