package tools

import (
	"context"
	"slices"
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
// when the test says so: WaitWritten returns once written reaches the
// progress waited for.
type heldWriter struct {
	mu      sync.Mutex
	waits   []float64
	written float64
	changed chan struct{} // closed and replaced on every wait and write
}

func newHeldWriter() *heldWriter { return &heldWriter{changed: make(chan struct{})} }

func (w *heldWriter) broadcast() {
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *heldWriter) WaitWritten(ctx context.Context, _ any, progress float64) bool {
	w.mu.Lock()
	w.waits = append(w.waits, progress)
	w.broadcast()
	for w.written < progress {
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
		w.mu.Lock()
	}
	w.mu.Unlock()
	return true
}

// write says the notifications up to progress are on the client's stream.
func (w *heldWriter) write(progress float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.written = progress
	w.broadcast()
}

// awaitWaits returns once the tool has waited n times, with what it waited for.
func (w *heldWriter) awaitWaits(n int) []float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.waits) < n {
		changed := w.changed
		w.mu.Unlock()
		<-changed
		w.mu.Lock()
	}
	return slices.Clone(w.waits)
}

// TestProgressOneAtATime: a call's next progress notification is queued
// only once the previous one is on the client's stream (two queued at once
// can leave on two streams and arrive in either order), its result only once
// its last one is, and progress reported after that is dropped, not sent
// after the result.
func TestProgressOneAtATime(t *testing.T) {
	w := newHeldWriter()
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
	// The second step waits for the first to be written.
	if waits := w.awaitWaits(1); waits[0] != 1 {
		t.Fatalf("the second step waited for %v, want the first (1)", waits)
	}
	mu.Lock()
	if slices.Contains(seen, 2) {
		t.Error("the second progress was queued before the first was written")
	}
	mu.Unlock()
	w.write(1)
	// The handler is done but its last progress is not written yet.
	if waits := w.awaitWaits(2); waits[1] != 2 {
		t.Fatalf("the result waited for %v, want the last progress sent (2)", waits)
	}
	(<-late)(workspace.Progress{Done: 3, Total: 3, Message: "after the result"})
	select {
	case err := <-returned:
		t.Fatalf("the result came before its last progress was written (%v)", err)
	default:
	}
	w.write(2)
	if err := <-returned; err != nil {
		t.Fatal(err)
	}
	if waits := w.awaitWaits(2); len(waits) != 2 {
		t.Errorf("waited for %v, want 1 then 2", waits)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range seen {
		if p > 2 {
			t.Errorf("progress %v reported after the result was sent", p)
		}
	}
}
