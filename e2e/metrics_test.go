package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestMetrics scrapes /metrics: it needs the token, and reflects tool
// calls, workspaces, MCP servers and proxy sessions.
func TestMetrics(t *testing.T) {
	e := newMCPEnv(t)
	b := e.serveHTTP()
	url := strings.TrimSuffix(b.URL, "/mcp") + "/metrics"
	scrape := func(token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := scrape(""); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without a token: %d", code)
	}

	c := e.httpMcpgo(b)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "m1"}).decode(t, &struct{}{})
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "m2"}).decode(t, &struct{}{})
	mustCall(t, c, "workspace_stop", map[string]any{"bot_id": "m2"}).decode(t, &struct{}{})
	mustCall(t, c, "mcp_server_add", map[string]any{"bot_id": "m1", "name": "fx", "command": testenv.MCPFixturePath}).decode(t, &struct{}{})
	if res := mustCall(t, c, "workspace_get", map[string]any{"bot_id": "nope"}); !res.IsError {
		t.Fatal("workspace_get of a missing bot succeeded")
	}
	proxyPost(t, b.proxyURL("m1", "fx"), b.Token, "", initializeBody)

	code, body := scrape(b.Token)
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	for _, want := range []string{
		"berth_tool_calls_total{outcome=\"ok\",tool=\"workspace_create\"} 2\n",
		"berth_tool_calls_total{outcome=\"error\",tool=\"workspace_get\"} 1\n",
		"berth_tool_call_duration_seconds_count{tool=\"workspace_stop\"} 1\n",
		"berth_workspaces{status=\"running\"} 1\n",
		"berth_workspaces{status=\"stopped\"} 1\n",
		"berth_mcp_servers{state=\"ready\"} 1\n",
		"berth_mcp_proxy_sessions 1\n",
		"berth_containerd_up 1\n",
		"\ngo_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
