package transports

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// modernPost posts one 2026-07-28 message with capabilities caps.
func modernPost(t *testing.T, url, token string, method, name, caps string, params string) (int, string) {
	t.Helper()
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":` + caps + `}`
	if params != "" {
		meta += "," + params
	}
	body := `{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":{` + meta + `}}`
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", method)
	if name != "" {
		req.Header.Set("Mcp-Name", name)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// TestModernRequestsOwnSession: each 2026-07-28 request is served with a
// session of its credential, never the one session id ("") mcp-go gives
// every modern request; and a client that can be asked is sent to the
// session versions.
func TestModernRequestsOwnSession(t *testing.T) {
	s := mcpserver.New("test", tools.Deps{}, "")
	s.AddTool(mcp.NewTool("session"), func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText(server.ClientSessionFromContext(ctx).SessionID()), nil
	})
	h, shutdown := NewHTTPHandler(s, HTTPOptions{
		Addr: "127.0.0.1:0", Token: "admin-0123456789abcdef",
		ScopedTokens: []auth.ScopedToken{{Name: "a", Token: tokenA, Bots: []string{"bot-a"}}, {Name: "b", Token: tokenB, Bots: []string{"bot-b"}}},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(func() { _ = shutdown(context.Background()); srv.Close() })
	url := srv.URL + "/mcp"

	for token, want := range map[string]string{tokenA: "modern:token:a", tokenB: "modern:token:b"} {
		status, body := modernPost(t, url, token, "tools/call", "session", `{}`, `"name":"session","arguments":{}`)
		if status != http.StatusOK || !strings.Contains(body, `"text":"`+want+`"`) {
			t.Fatalf("session of a modern call: %d %s, want %s", status, body, want)
		}
	}

	status, body := modernPost(t, url, tokenA, "server/discover", "", `{}`, "")
	if status != http.StatusOK || !strings.Contains(body, `"2026-07-28"`) {
		t.Fatalf("server/discover: %d %s", status, body)
	}
	for _, caps := range []string{`{"elicitation":{}}`, `{"sampling":{}}`} {
		status, body := modernPost(t, url, tokenA, "server/discover", "", caps, "")
		var res struct {
			Error struct {
				Code int                                `json:"code"`
				Data mcp.UnsupportedProtocolVersionData `json:"data"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &res); err != nil || status != http.StatusBadRequest || res.Error.Code != mcp.UNSUPPORTED_PROTOCOL_VERSION ||
			!slices.Equal(res.Error.Data.Supported, sessionProtocolVersions()) || slices.Contains(res.Error.Data.Supported, "2026-07-28") {
			t.Fatalf("server/discover from a client that can be asked (%s): %d %s", caps, status, body)
		}
	}
}
