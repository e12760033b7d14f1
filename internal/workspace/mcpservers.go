package workspace

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/remedy"
	"github.com/containerd/errdefs"
)

// The stdio MCP servers a bot registered are part of its workspace, but not
// of its files: they are kept in one small JSON file per workspace under the
// state directory (labels cap values at 4 KiB, and env values may be long
// and secret, so the file is 0600). The file goes with the workspace on
// delete. Running the servers is the job of internal/mcpproxy.

// MCPServerSpec is a registered stdio MCP server of a workspace.
type MCPServerSpec struct {
	// Name identifies it in the workspace and prefixes its federated tools.
	Name string `json:"name"`
	// Command is the program (looked up in the workspace's PATH), Args its
	// arguments; no shell is involved.
	Command string            `json:"command"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	// Cwd is the working directory; empty means /data.
	Cwd     string    `json:"cwd,omitempty"`
	AddedAt time.Time `json:"added_at"`
}

// Argv is the command line the agent runs.
func (s MCPServerSpec) Argv() []string { return append([]string{s.Command}, s.Args...) }

// Caps on registrations.
const (
	MaxMCPServers       = 16
	maxMCPServerNameLen = 32
	maxMCPArgs          = 256
	maxMCPArgLen        = 4096
	maxMCPEnvVars       = 64
)

// mcpServerNamePattern keeps names safe as a prefix of federated tool names
// (`<name>__<tool>`): no underscores, so the first "__" always ends the
// server's part, and never two servers' names compose into the same tool.
var mcpServerNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateMCPServerName says why name cannot name an MCP server, or nil.
func ValidateMCPServerName(name string) error {
	if len(name) > maxMCPServerNameLen || !mcpServerNamePattern.MatchString(name) {
		return fmt.Errorf("%w: MCP server name %q is invalid: use 1-%d lower-case letters, digits and inner '-' (for example \"github\" or \"web-search\")",
			errdefs.ErrInvalidArgument, name, maxMCPServerNameLen)
	}
	return nil
}

func (s MCPServerSpec) validate() error {
	if err := ValidateMCPServerName(s.Name); err != nil {
		return err
	}
	if strings.TrimSpace(s.Command) == "" {
		return fmt.Errorf("%w: command is required (for example \"npx\" with args [\"-y\", \"@modelcontextprotocol/server-filesystem\", \"/data\"])", errdefs.ErrInvalidArgument)
	}
	if len(s.Args) > maxMCPArgs {
		return fmt.Errorf("%w: at most %d args", errdefs.ErrInvalidArgument, maxMCPArgs)
	}
	for i, a := range s.Argv() {
		if len(a) > maxMCPArgLen || strings.ContainsRune(a, 0) {
			return fmt.Errorf("%w: argument %d is longer than %d bytes or holds a NUL byte", errdefs.ErrInvalidArgument, i, maxMCPArgLen)
		}
	}
	if err := validateEnv(s.Env, maxMCPEnvVars); err != nil {
		return err
	}
	if len(s.Cwd) > maxMCPArgLen || strings.ContainsRune(s.Cwd, 0) {
		return fmt.Errorf("%w: cwd is longer than %d bytes or holds a NUL byte", errdefs.ErrInvalidArgument, maxMCPArgLen)
	}
	return nil
}

func (m *Manager) mcpServersPath(bot string) string {
	return filepath.Join(m.opts.StateDir, "mcp", bot+".json")
}

// MCPServers returns the bot's registered MCP servers, sorted by name.
func (m *Manager) MCPServers(bot string) ([]MCPServerSpec, error) {
	if err := ValidateBotID(bot); err != nil {
		return nil, err
	}
	specs, err := readBotFile[MCPServerSpec](m.mcpServersPath(bot))
	if err != nil {
		return nil, fmt.Errorf("MCP server registrations of %s (%s): %w", bot, m.mcpServersPath(bot), err)
	}
	return specs, nil
}

// MCPServerBots lists the bots that have registered MCP servers.
func (m *Manager) MCPServerBots() ([]string, error) {
	return botsWithFiles(filepath.Join(m.opts.StateDir, "mcp"))
}

// PutMCPServer registers spec in the bot's workspace, replacing a server of
// the same name; replaced says whether one was.
func (m *Manager) PutMCPServer(ctx context.Context, bot string, spec MCPServerSpec) (replaced bool, err error) {
	if err := spec.validate(); err != nil {
		return false, err
	}
	mctx, done, err := m.mutate(ctx, bot, time.Minute)
	if err != nil {
		return false, err
	}
	defer done()
	if _, err := m.rt.Container(mctx, bot); isNotFound(err) {
		return false, notFound(bot)
	} else if err != nil {
		return false, err
	}
	specs, err := m.MCPServers(bot)
	if err != nil {
		return false, err
	}
	i := slices.IndexFunc(specs, func(s MCPServerSpec) bool { return s.Name == spec.Name })
	if i >= 0 {
		specs[i] = spec
	} else {
		if len(specs) >= MaxMCPServers {
			return false, remedy.With(remedy.RemoveMCPServer, fmt.Errorf("%w: workspace %s already has %d MCP servers, the most it may have",
				errdefs.ErrResourceExhausted, bot, MaxMCPServers))
		}
		specs = append(specs, spec)
		slices.SortFunc(specs, func(a, b MCPServerSpec) int { return strings.Compare(a.Name, b.Name) })
	}
	return i >= 0, m.writeMCPServers(bot, specs)
}

// RemoveMCPServer unregisters the named server.
func (m *Manager) RemoveMCPServer(ctx context.Context, bot, name string) error {
	_, done, err := m.mutate(ctx, bot, time.Minute)
	if err != nil {
		return err
	}
	defer done()
	specs, err := m.MCPServers(bot)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(specs, func(s MCPServerSpec) bool { return s.Name == name })
	if i < 0 {
		return remedy.With(remedy.ListMCPServers, fmt.Errorf("%w: workspace %s has no MCP server %q", errdefs.ErrNotFound, bot, name))
	}
	return m.writeMCPServers(bot, slices.Delete(specs, i, i+1))
}

// writeMCPServers replaces the registration file atomically, so a crash
// leaves the old list or the new one.
func (m *Manager) writeMCPServers(bot string, specs []MCPServerSpec) error {
	return writeBotFile(m.mcpServersPath(bot), bot, specs)
}

// OnStarted registers fn to be called (in its own goroutine) each time a
// workspace's task has started and its agent answers: on create, start,
// rollback and reconcile. Processes that live in the workspace (its MCP
// servers) use it to come back after a restart.
func (m *Manager) OnStarted(fn func(bot string)) {
	m.hooksMu.Lock()
	defer m.hooksMu.Unlock()
	m.onStarted = append(m.onStarted, fn)
}

func (m *Manager) notifyStarted(bot string) {
	m.hooksMu.Lock()
	hooks := slices.Clone(m.onStarted)
	m.hooksMu.Unlock()
	for _, fn := range hooks {
		go fn(bot)
	}
}
