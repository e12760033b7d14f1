package tools

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/mcpproxy"
	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// TestToolDefinitions lists the tools as a client sees them and checks that
// every one has explicit annotations and object schemas that refuse
// unknown properties.
func TestToolDefinitions(t *testing.T) {
	s := server.NewMCPServer("berth-test", "1", server.WithToolCapabilities(true))
	Register(s, Deps{MCP: new(mcpproxy.Supervisor)})
	c, err := mcpclient.NewInProcessClient(s)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	res, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	want := []string{"data_export", "data_export_delete", "data_import", "data_preserved_delete", "data_restore", "exec", "fs_copy", "fs_delete", "fs_edit", "fs_find", "fs_grep", "fs_list", "fs_mkdir",
		"fs_move", "fs_read", "fs_stat", "fs_write", "image_delete", "image_import", "image_list",
		"mcp_server_add", "mcp_server_list", "mcp_server_logs", "mcp_server_remove",
		"network_access_request", "network_get", "network_mode_set", "network_policy_set", "network_request_decide", "network_requests_list", "port_expose", "port_list", "port_unexpose", "process_kill", "process_list",
		"process_output", "process_signal", "skills_action", "skills_delete", "skills_list", "skills_upsert",
		"snapshot_create", "snapshot_delete", "snapshot_diff", "snapshot_export", "snapshot_list", "snapshot_rollback", "terminal_close", "terminal_list", "terminal_open", "terminal_read",
		"terminal_resize", "terminal_send", "workspace_create", "workspace_delete", "workspace_fork", "workspace_get",
		"workspace_list", "workspace_metrics", "workspace_start", "workspace_stop"}
	var got []string
	for _, tool := range res.Tools {
		got = append(got, tool.Name)
		a := tool.Annotations
		if a.ReadOnlyHint == nil || a.DestructiveHint == nil || a.IdempotentHint == nil || a.OpenWorldHint == nil {
			t.Errorf("%s: every annotation must be explicit: %+v", tool.Name, a)
		}
		if a.ReadOnlyHint != nil && *a.ReadOnlyHint && a.DestructiveHint != nil && *a.DestructiveHint {
			t.Errorf("%s: read-only and destructive", tool.Name)
		}
		data, err := json.Marshal(tool)
		if err != nil {
			t.Fatalf("%s: %v", tool.Name, err)
		}
		var def struct {
			InputSchema  map[string]any `json:"inputSchema"`
			OutputSchema map[string]any `json:"outputSchema"`
		}
		if err := json.Unmarshal(data, &def); err != nil {
			t.Fatal(err)
		}
		for name, schema := range map[string]map[string]any{"input": def.InputSchema, "output": def.OutputSchema} {
			if schema["type"] != "object" {
				t.Errorf("%s: %s schema type %v, want object", tool.Name, name, schema["type"])
			}
			if strings.Contains(string(data), "$ref") {
				t.Errorf("%s: schema must be inline", tool.Name)
			}
		}
		if def.InputSchema["additionalProperties"] != false {
			t.Errorf("%s: input schema must refuse unknown properties", tool.Name)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("tools %v, want %v", got, want)
	}
}

func TestDecodeArgsRefusesUnknownFields(t *testing.T) {
	var in CreateInput
	if err := decodeArgs(mcp.CallToolParams{Arguments: map[string]any{"bot_id": "a", "colour": "blue"}}, &in); err == nil {
		t.Fatal("unknown field accepted")
	}
	if err := decodeArgs(mcp.CallToolParams{RawArguments: []byte(`{"bot_id":"a","colour":"blue"}`)}, &in); err == nil {
		t.Fatal("unknown field accepted from raw arguments")
	}
	if err := decodeArgs(mcp.CallToolParams{}, &in); err != nil {
		t.Fatalf("no arguments: %v", err)
	}
	if err := decodeArgs(mcp.CallToolParams{RawArguments: []byte(`{"bot_id":"a","cpus":1.5}`)}, &in); err != nil || in.CPUs != 1.5 {
		t.Fatalf("decode: %v %+v", err, in)
	}
}
