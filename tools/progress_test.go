package tools

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// heldWriter is a transport whose progress notifications are written only
// when the test says so.
type heldWriter struct {
	mu      sync.Mutex
	waits   []float64
	waiting chan struct{}
	release chan struct{}
}

func (w *heldWriter) WaitWritten(ctx context.Context, _ any, progress float64) {
	w.mu.Lock()
	w.waits = append(w.waits, progress)
	w.mu.Unlock()
	close(w.waiting)
	select {
	case <-w.release:
	case <-ctx.Done():
	}
}

// TestResultWaitsForLastProgress: a tool's result is returned only once
// the transport has written the call's last progress notification, and
// progress reported after that is dropped, not sent after the result.
func TestResultWaitsForLastProgress(t *testing.T) {
	w := &heldWriter{waiting: make(chan struct{}), release: make(chan struct{})}
	late := make(chan func(workspace.Progress), 1)
	s := server.NewMCPServer("berth-test", "1", server.WithToolCapabilities(true),
		server.WithToolHandlerMiddleware(func(next server.ToolHandlerFunc) server.ToolHandlerFunc {
			return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				return next(WithProgressWriter(auth.WithPrincipal(ctx, auth.Local("test")), w), req)
			}
		}))
	s.AddTools(define("steps", "Steps", "reports two steps", hints{}, auth.ScopeRead,
		func(ctx context.Context, c *call, _ struct{}) (struct{}, string, error) {
			report := c.progress(ctx)
			report(workspace.Progress{Done: 1, Total: 2, Message: "one"})
			report(workspace.Progress{Done: 2, Total: 2, Message: "two"})
			late <- report
			return struct{}{}, "done", nil
		}))
	c, err := mcpclient.NewInProcessClient(s)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []float64
	c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == "notifications/progress" {
			mu.Lock()
			seen = append(seen, n.Params.AdditionalFields["progress"].(float64))
			mu.Unlock()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_LEGACY_PROTOCOL_VERSION
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	returned := make(chan error, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = "steps"
		req.Params.Meta = &mcp.Meta{ProgressToken: "tok"}
		_, err := c.CallTool(ctx, req)
		returned <- err
	}()
	<-w.waiting
	// The handler is done but its last progress is not written yet.
	(<-late)(workspace.Progress{Done: 3, Total: 3, Message: "after the result"})
	select {
	case err := <-returned:
		t.Fatalf("the result came before its last progress was written (%v)", err)
	default:
	}
	close(w.release)
	if err := <-returned; err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.waits) != 1 || w.waits[0] != 2 {
		t.Errorf("waited for %v, want the last progress sent (2)", w.waits)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range seen {
		if p > 2 {
			t.Errorf("progress %v reported after the result was sent", p)
		}
	}
}
