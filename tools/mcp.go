package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/mcpproxy"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// MCPServerAddInput registers a stdio MCP server in a workspace.
type MCPServerAddInput struct {
	BotID   string            `json:"bot_id"`
	Name    string            `json:"name" jsonschema:"description=1-32 lower-case letters\\, digits and inner '-'; prefixes the server's tools as <name>__<tool>"`
	Command string            `json:"command" jsonschema:"description=the program to run inside the workspace\\, e.g. npx\\, uvx or /data/bin/my-server (looked up in the workspace's PATH; no shell)"`
	Args    []string          `json:"args,omitempty" jsonschema:"description=its arguments\\, e.g. [\"-y\"\\, \"@modelcontextprotocol/server-filesystem\"\\, \"/data\"]"`
	Env     map[string]string `json:"env,omitempty" jsonschema:"description=extra environment variables; values are kept on the host with mode 0600 and never listed"`
	Cwd     string            `json:"cwd,omitempty" jsonschema:"description=working directory; default /data"`
}

func (i MCPServerAddInput) bot() string { return i.BotID }

// MCPServerNameInput names a registered server.
type MCPServerNameInput struct {
	BotID string `json:"bot_id"`
	Name  string `json:"name"`
}

func (i MCPServerNameInput) bot() string { return i.BotID }

// MCPServerLogsInput asks for a server's stderr.
type MCPServerLogsInput struct {
	BotID string `json:"bot_id"`
	Name  string `json:"name"`
	Lines int    `json:"lines,omitempty" jsonschema:"description=how many of the last lines; default 100\\, at most 1000"`
}

func (i MCPServerLogsInput) bot() string { return i.BotID }

// MCPServerAddOutput says what mcp_server_add did.
type MCPServerAddOutput struct {
	Server   mcpproxy.Info `json:"server"`
	Replaced bool          `json:"replaced"`
}

// MCPServerListOutput lists a workspace's servers.
type MCPServerListOutput struct {
	Servers []mcpproxy.Info `json:"servers"`
}

// MCPServerLogsOutput is a server's stderr tail.
type MCPServerLogsOutput struct {
	Lines []string `json:"lines"`
	// TotalBytes is everything the server wrote to stderr since berth
	// started it; only the last 64 KiB are kept.
	TotalBytes int64 `json:"total_bytes"`
}

func mcpServerTools(h handlers) []server.ServerTool {
	return []server.ServerTool{
		define("mcp_server_add", "Add an MCP server",
			"Register a stdio MCP server of the bot and run it inside its workspace (it sees /data and what the bot installed). "+
				"It is long-lived: restarted with backoff when it dies, brought back when the workspace restarts and when berth restarts. "+
				"Its tools join this tool list as <name>__<tool>; it is also served alone at the HTTP endpoint /bots/{bot_id}/mcp/{name}. "+
				"Adding a name that exists replaces that server. Waits for the server's first start and reports its state and tools.",
			hints{idempotent: true, openWorld: true}, auth.ScopeExec, h.mcpServerAdd),
		define("mcp_server_list", "List MCP servers",
			"List the bot's registered MCP servers: state, pid, restarts, last exit, tool count and federated tool names, and the last stderr lines.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead, h.mcpServerList),
		define("mcp_server_remove", "Remove an MCP server",
			"Stop the named MCP server and unregister it; its tools leave the tool list. Proxy sessions already open keep their own processes until they end.",
			hints{destructive: true}, auth.ScopeExec, h.mcpServerRemove),
		define("mcp_server_logs", "MCP server logs",
			"The last lines the named MCP server wrote to stderr, across its restarts, with berth's notes of each start and exit.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead, h.mcpServerLogs),
	}
}

func (h handlers) mcpServerAdd(ctx context.Context, _ *call, in MCPServerAddInput) (MCPServerAddOutput, string, error) {
	info, replaced, err := h.MCP.Add(ctx, in.BotID, workspace.MCPServerSpec{
		Name: in.Name, Command: in.Command, Args: in.Args, Env: in.Env, Cwd: in.Cwd,
	})
	if err != nil {
		return MCPServerAddOutput{}, "", err
	}
	verb := "added"
	if replaced {
		verb = "replaced"
	}
	return MCPServerAddOutput{Server: info, Replaced: replaced}, fmt.Sprintf("%s MCP server %s: %s", verb, in.Name, describeServer(info)), nil
}

func (h handlers) mcpServerList(ctx context.Context, _ *call, in BotInput) (MCPServerListOutput, string, error) {
	list, err := h.MCP.List(in.BotID)
	if err != nil {
		return MCPServerListOutput{}, "", err
	}
	summary := fmt.Sprintf("%d MCP server(s)", len(list))
	for _, info := range list {
		summary += fmt.Sprintf("\n%s: %s", info.Name, describeServer(info))
	}
	return MCPServerListOutput{Servers: list}, summary, nil
}

func (h handlers) mcpServerRemove(ctx context.Context, _ *call, in MCPServerNameInput) (MCPServerNameInput, string, error) {
	if err := h.MCP.Remove(ctx, in.BotID, in.Name); err != nil {
		return in, "", err
	}
	return in, "removed MCP server " + in.Name, nil
}

func (h handlers) mcpServerLogs(ctx context.Context, _ *call, in MCPServerLogsInput) (MCPServerLogsOutput, string, error) {
	n := in.Lines
	if n <= 0 {
		n = 100
	}
	lines, total, err := h.MCP.Logs(in.BotID, in.Name, n)
	if err != nil {
		return MCPServerLogsOutput{}, "", err
	}
	if lines == nil {
		lines = []string{}
	}
	return MCPServerLogsOutput{Lines: lines, TotalBytes: total}, strings.Join(lines, "\n"), nil
}

func describeServer(info mcpproxy.Info) string {
	s := fmt.Sprintf("%s, %d tool(s), %d restart(s)", info.State, info.ToolCount, info.Restarts)
	if info.PID > 0 {
		s += fmt.Sprintf(", pid %d", info.PID)
	}
	if info.Reason != "" {
		s += ": " + info.Reason
	}
	return s
}

// FederatedTools turns the bot's servers' tools into tools of berth's
// server, under their federated names, with their own schemas and
// annotations unchanged. Calls go to the shared process of their server.
func FederatedTools(d Deps, bot string) []server.ServerTool {
	fed := d.MCP.Tools(bot)
	out := make([]server.ServerTool, 0, len(fed))
	for _, ft := range fed {
		out = append(out, server.ServerTool{Tool: federatedDefinition(ft), Handler: federatedHandler(d, ft)})
	}
	return out
}

// askClient passes a bot's server's own requests, made during a federated
// call, to the client of that call.
func askClient(ctx context.Context) mcpproxy.RequestHandler {
	srv := server.ServerFromContext(ctx)
	if srv == nil {
		return nil
	}
	return func(method string, params json.RawMessage) (any, error) {
		switch method {
		case string(mcp.MethodElicitationCreate):
			var req mcp.ElicitationRequest
			if err := json.Unmarshal(params, &req.Params); err != nil {
				return nil, err
			}
			return srv.RequestElicitation(ctx, req)
		case string(mcp.MethodSamplingCreateMessage):
			var req mcp.CreateMessageRequest
			if err := json.Unmarshal(params, &req.CreateMessageParams); err != nil {
				return nil, err
			}
			//lint:ignore SA1019 bots' servers still sample, and the issue asks for it to pass through
			return srv.RequestSampling(ctx, req)
		case string(mcp.MethodListRoots):
			return srv.RequestRoots(ctx, mcp.ListRootsRequest{})
		}
		return nil, fmt.Errorf("berth does not pass %s on to clients", method)
	}
}

func federatedDefinition(ft mcpproxy.FederatedTool) mcp.Tool {
	var def struct {
		Title        string             `json:"title"`
		Description  string             `json:"description"`
		InputSchema  json.RawMessage    `json:"inputSchema"`
		OutputSchema json.RawMessage    `json:"outputSchema"`
		Annotations  mcp.ToolAnnotation `json:"annotations"`
	}
	_ = json.Unmarshal(ft.Definition, &def)
	if len(def.InputSchema) == 0 || string(def.InputSchema) == "null" {
		def.InputSchema = json.RawMessage(`{"type":"object"}`)
	}
	tool := mcp.Tool{
		Name: ft.Name, Title: def.Title, RawInputSchema: def.InputSchema, Annotations: def.Annotations,
		Description: fmt.Sprintf("[%s's MCP server %s: tool %s] %s", ft.Bot, ft.Server, ft.Tool, def.Description),
	}
	if len(def.OutputSchema) > 0 && string(def.OutputSchema) != "null" {
		tool.RawOutputSchema = def.OutputSchema
	}
	return tool
}

func federatedHandler(d Deps, ft mcpproxy.FederatedTool) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if err := auth.FromContext(ctx).Allow(auth.ScopeExec, ft.Bot); err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		args := json.RawMessage(req.Params.RawArguments)
		if len(args) == 0 && req.Params.Arguments != nil {
			var err error
			if args, err = json.Marshal(req.Params.Arguments); err != nil {
				return mcp.NewToolResultError("invalid arguments: " + err.Error()), nil
			}
		}
		c := &call{req: req}
		var onProgress func(mcpproxy.Progress)
		if report := c.progress(ctx); report != nil {
			onProgress = func(p mcpproxy.Progress) {
				wp := workspace.Progress{Done: p.Progress, Message: p.Message}
				if p.Total != nil {
					wp.Total = *p.Total
				}
				report(wp)
			}
		}
		res, err := d.MCP.CallTool(ctx, ft.Bot, ft.Name, args, onProgress, askClient(ctx))
		c.finish(ctx)
		if err != nil {
			return mcp.NewToolResultError(Explain(err)), nil
		}
		return res, nil
	}
}
