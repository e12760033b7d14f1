package mcpserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/tools"
	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestBotLogWarnings: berth's log records at warning level that name a
// bot ("bot", or "server" as bot/name, also through With) reach a session
// that asked for warnings as notifications/message; info records and
// warnings about no bot stay in berth's log.
func TestBotLogWarnings(t *testing.T) {
	botLog := NewBotLog()
	s := New("test", tools.Deps{}, "", WithBotLog(botLog))
	c, err := mcpclient.NewInProcessClient(s)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []map[string]any
	arrived := make(chan struct{}, 16)
	c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == "notifications/message" {
			mu.Lock()
			got = append(got, n.Params.AdditionalFields)
			mu.Unlock()
			arrived <- struct{}{}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_LEGACY_PROTOCOL_VERSION
	res, err := c.Initialize(ctx, init)
	if err != nil {
		t.Fatal(err)
	}
	if res.Capabilities.Logging == nil {
		t.Fatal("no logging capability declared")
	}
	set := mcp.SetLevelRequest{}
	set.Params.Level = mcp.LoggingLevelWarning
	if err := c.SetLevel(ctx, set); err != nil {
		t.Fatal(err)
	}

	log := slog.New(botLog.Handler(slog.NewTextHandler(io.Discard, nil)))
	log.Info("MCP server log", "server", "alpha/fx")
	log.Warn("no bot here", "err", "x")
	log.Warn("MCP server ended", "server", "alpha/fx", "exit", "exit status 1")
	log.With("bot", "bravo").Error("restore failed", "err", "bad gzip")

	want := []struct{ level, bot, message string }{
		{"warning", "alpha", "MCP server ended"},
		{"error", "bravo", "restore failed"},
	}
	for range want {
		select {
		case <-arrived:
		case <-ctx.Done():
			t.Fatalf("log notifications: %v", got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("log notifications %v, want %d", got, len(want))
	}
	for i, w := range want {
		data, _ := got[i]["data"].(map[string]any)
		if fmt.Sprint(got[i]["level"]) != w.level || data["message"] != w.message || data["bot"] != w.bot {
			t.Errorf("notification %d: %v, want %+v", i, got[i], w)
		}
	}
}
