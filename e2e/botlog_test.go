package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
)

// TestBotWarningsAsLogNotifications: berth declares the logging
// capability, serves logging/setLevel, and a warning about a bot's work (a
// preserved /data it could not restore) reaches the session as
// notifications/message once the client asked for warnings.
func TestBotWarningsAsLogNotifications(t *testing.T) {
	e := newEnv(t)
	args := append([]string{"serve", "--stdio"}, e.args()...)
	raw, err := mcpclient.NewStdioMCPClientWithOptions(berthBin, nil, args, transport.WithCommandStderrWriter(e.logWriter("berth-stdio")))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs []map[string]any
	got := make(chan struct{}, 16)
	raw.OnNotification(func(n mcpgo.JSONRPCNotification) {
		if n.Method != "notifications/message" {
			return
		}
		mu.Lock()
		logs = append(logs, n.Params.AdditionalFields)
		mu.Unlock()
		got <- struct{}{}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := raw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// logging/setLevel belongs to the protocol versions with a handshake.
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = mcpgo.LATEST_LEGACY_PROTOCOL_VERSION
	init.Params.ClientInfo = mcpgo.Implementation{Name: "berth-e2e-log", Version: "1"}
	res, err := raw.Initialize(ctx, init)
	if err != nil {
		t.Fatal(err)
	}
	if res.Capabilities.Logging == nil {
		t.Fatalf("berth does not declare the logging capability: %+v", res.Capabilities)
	}
	set := mcpgo.SetLevelRequest{}
	set.Params.Level = mcpgo.LoggingLevelWarning
	if err := raw.SetLevel(ctx, set); err != nil {
		t.Fatalf("logging/setLevel: %v", err)
	}
	c := newMcpgoClientStarted(t, raw)

	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "logged"})
	mustCall(t, c, "workspace_delete", map[string]any{"bot_id": "logged", "preserve_data": true})
	if err := os.WriteFile(filepath.Join(e.stateDir, "preserved", "logged.tar.gz"), []byte("not a gzip stream"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "logged", "restore_data": true})
	for {
		mu.Lock()
		for _, l := range logs {
			data, _ := l["data"].(map[string]any)
			if l["level"] == "warning" && data["bot"] == "logged" && strings.Contains(fmt.Sprint(data["message"]), "not restored") {
				mu.Unlock()
				return
			}
		}
		mu.Unlock()
		select {
		case <-got:
		case <-ctx.Done():
			t.Fatalf("no warning about the failed restore reached the session; log notifications: %v", logs)
		}
	}
}

// newMcpgoClientStarted wraps an initialized mcp-go client for mustCall.
func newMcpgoClientStarted(t *testing.T, c *mcpclient.Client) mcpClient {
	t.Cleanup(func() { c.Close() })
	return &mcpgoClient{c: c, progress: progressRouter{prefix: "l"}}
}
