package resources

import (
	"context"
	"path"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/skills"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/mcp"
)

// maxCompletions is the most values one completion/complete answers, as
// MCP allows; hasMore says there are others (type more of the value).
const maxCompletions = 100

// maxListed bounds the entries of a directory a path completion looks at
// (the first in name order): the agent stats each entry it returns, so
// this bounds the time a completion takes (about 150 ms for 1000 entries
// on a busy 2-core machine, 2 ms for a handful). Past it, hasMore.
const maxListed = 1000

// Completions completes the arguments of the resource templates
// (completion/complete): the bots the caller may read, a bot's snapshot
// versions, skills and exports, and paths in its workspace one directory
// at a time. A bot the caller may not read completes to nothing, as an
// unknown one does: completions never tell one tenant of another's bots.
type Completions struct {
	m      *workspace.Manager
	skills skills.Config
}

// NewCompletions returns the completion provider of the templates
// Register adds (server.WithResourceCompletionProvider).
func NewCompletions(m *workspace.Manager, skillsCfg skills.Config) *Completions {
	return &Completions{m: m, skills: skillsCfg}
}

// CompleteResourceArgument implements server.ResourceCompletionProvider.
// Failures (no workspace, agent down) complete to nothing: a completion is
// a convenience, and its errors would only interrupt the person typing.
func (c *Completions) CompleteResourceArgument(ctx context.Context, uri string, arg mcp.CompleteArgument, cc mcp.CompleteContext) (*mcp.Completion, error) {
	p := auth.FromContext(ctx)
	if arg.Name == "bot_id" {
		return c.bots(ctx, p, arg.Value), nil
	}
	bot := cc.Arguments["bot_id"]
	if bot == "" || p.Allow(auth.ScopeRead, bot) != nil {
		return none(), nil
	}
	var values []string
	switch {
	case arg.Name == "version" && uri == SnapshotTemplate:
		l, err := c.m.ListSnapshots(ctx, bot)
		if err != nil {
			return none(), nil
		}
		for _, v := range l.Versions {
			values = append(values, strconv.Itoa(v.Version))
		}
	case arg.Name == "name" && uri == SkillTemplate:
		list, err := workspace.Ask(ctx, c.m, bot, func(a *client.Client) ([]skills.Skill, error) { return skills.List(ctx, a, c.skills) })
		if err != nil {
			return none(), nil
		}
		for _, s := range list {
			if s.State == "effective" {
				values = append(values, s.Name)
			}
		}
	case arg.Name == "export_id" && uri == ExportTemplate:
		for _, e := range c.m.ListExports(bot) {
			values = append(values, e.ID)
		}
	case arg.Name == "path" && uri == FilesTemplate:
		return c.paths(ctx, bot, arg.Value), nil
	default:
		return none(), nil
	}
	return matching(values, arg.Value), nil
}

// bots completes bot ids among the workspaces the caller may read.
func (c *Completions) bots(ctx context.Context, p *auth.Principal, prefix string) *mcp.Completion {
	visible := func(bot string) bool {
		return strings.HasPrefix(bot, prefix) && p.Allow(auth.ScopeRead, bot) == nil
	}
	list, more, err := c.m.ListVisible(ctx, "", maxCompletions, visible)
	if err != nil {
		return none()
	}
	out := &mcp.Completion{Values: []string{}, HasMore: more}
	for _, ws := range list {
		out.Values = append(out.Values, ws.BotID)
	}
	return out
}

// paths completes a path in the files template (absolute without its
// leading slash): the entries of the directory the value names so far
// whose names start with what follows its last slash, directories with a
// trailing slash so the next completion goes into them. One listing of
// one directory through the agent, of at most maxListed entries.
func (c *Completions) paths(ctx context.Context, bot, value string) *mcp.Completion {
	dir, prefix := "", value
	if i := strings.LastIndexByte(value, '/'); i >= 0 {
		dir, prefix = value[:i+1], value[i+1:]
	}
	list, err := workspace.Ask(ctx, c.m, bot, func(a *client.Client) (wire.ListResult, error) {
		return a.List(ctx, wire.ListRequest{Path: "/" + dir, Limit: maxListed})
	})
	if err != nil {
		return none()
	}
	var values []string
	for _, e := range list.Entries {
		name := path.Base(e.Path)
		if e.Type == wire.FileTypeDir {
			name += "/"
		}
		values = append(values, dir+name)
	}
	out := matching(values, dir+prefix)
	// A directory larger than one listing: the rest of it may match too.
	out.HasMore = out.HasMore || list.NextOffset > 0
	return out
}

// matching is the values that start with prefix, at most maxCompletions.
func matching(values []string, prefix string) *mcp.Completion {
	out := none()
	for _, v := range values {
		if !strings.HasPrefix(v, prefix) {
			continue
		}
		out.Total++
		if len(out.Values) < maxCompletions {
			out.Values = append(out.Values, v)
		}
	}
	out.HasMore = out.Total > len(out.Values)
	return out
}

func none() *mcp.Completion { return &mcp.Completion{Values: []string{}} }
