package mcpproxy

import (
	"context"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/workspace"
)

// Workspaces is what the supervisor uses of the workspace layer
// (*workspace.Manager in berth): the registrations it keeps, the agent of a
// running workspace, and word of a workspace (re)starting. Depending on
// this much, not on the Manager, lets the supervisor be tested and reused
// without the rest of the Manager.
type Workspaces interface {
	// OnStarted registers fn to run after a workspace (re)started.
	OnStarted(fn func(bot string))
	// MCPServerBots lists the bots that have registered servers.
	MCPServerBots() ([]string, error)
	// MCPServers lists the bot's registered servers.
	MCPServers(bot string) ([]workspace.MCPServerSpec, error)
	// PutMCPServer registers spec, saying whether it replaced one.
	PutMCPServer(ctx context.Context, bot string, spec workspace.MCPServerSpec) (replaced bool, err error)
	// RemoveMCPServer unregisters the named server.
	RemoveMCPServer(ctx context.Context, bot, name string) error
	// Agent returns a client for the agent of the bot's running workspace.
	Agent(ctx context.Context, bot string) (*client.Client, error)
}

var _ Workspaces = (*workspace.Manager)(nil)
