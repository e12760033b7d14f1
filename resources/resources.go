// Package resources defines berth's MCP resources and resource templates.
// Like the tools, they are thin: they parse the URI, check the caller may
// read it, and call the Manager.
package resources

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// WorkspaceTemplate is the URI template of a bot's workspace description.
const WorkspaceTemplate = "berth://bots/{bot_id}/workspace"

// Register adds every resource template to s.
func Register(s *server.MCPServer, m *workspace.Manager) {
	s.AddResourceTemplate(
		mcp.NewResourceTemplate(WorkspaceTemplate, "workspace",
			mcp.WithTemplateDescription("The bot's workspace, as workspace_get returns it."),
			mcp.WithTemplateMIMEType("application/json"),
		),
		func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			bot, _ := argument(req, "bot_id")
			if err := auth.FromContext(ctx).Allow(auth.ScopeRead, bot); err != nil {
				return nil, err
			}
			ws, err := m.Get(ctx, bot)
			if err != nil {
				return nil, err
			}
			data, err := json.MarshalIndent(ws, "", "  ")
			if err != nil {
				return nil, err
			}
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "application/json", Text: string(data)}}, nil
		},
	)
}

// argument returns a URI template variable of the request.
func argument(req mcp.ReadResourceRequest, name string) (string, error) {
	v := req.Params.Arguments[name]
	switch v := v.(type) {
	case string:
		return v, nil
	case []string:
		if len(v) == 1 {
			return v[0], nil
		}
	}
	return "", fmt.Errorf("missing %s in %s", name, req.Params.URI)
}
