package mcpserver

import (
	"context"
	"fmt"
	"sync"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// DefaultMaxCallsPerToken is how many tool calls and resource reads one
// caller may have in flight at once.
const DefaultMaxCallsPerToken = 8

// callLimiter bounds the tool calls and resource reads each caller has in
// flight. An answer is held in berth's memory, several times over, while it
// is built and sent (an exec's output, a file's content), so without a
// bound per caller one token could make berth hold gigabytes and starve
// every other tenant.
type callLimiter struct {
	max      int
	mu       sync.Mutex
	inflight map[string]int
}

func newCallLimiter(max int) *callLimiter {
	return &callLimiter{max: max, inflight: map[string]int{}}
}

// acquire takes a slot for caller, or reports that it has none left.
func (l *callLimiter) acquire(caller string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inflight[caller] >= l.max {
		return false
	}
	l.inflight[caller]++
	return true
}

func (l *callLimiter) release(caller string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inflight[caller]--; l.inflight[caller] <= 0 {
		delete(l.inflight, caller)
	}
}

func (l *callLimiter) busy() string {
	return fmt.Sprintf("too many calls in flight for this token: at most %d at once; wait for one to finish (or raise --max-calls-per-token)", l.max)
}

func (l *callLimiter) tools() server.ToolHandlerMiddleware {
	return func(next server.ToolHandlerFunc) server.ToolHandlerFunc {
		return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			if isTaskRun(ctx) {
				// A task's call is bounded by --max-tasks-per-token
				// instead: it would hold a slot for as long as it runs.
				return next(ctx, req)
			}
			caller := principalID(auth.FromContext(ctx))
			if !l.acquire(caller) {
				return mcp.NewToolResultError(l.busy()), nil
			}
			defer l.release(caller)
			return next(ctx, req)
		}
	}
}

func (l *callLimiter) resources() server.ResourceHandlerMiddleware {
	return func(next server.ResourceHandlerFunc) server.ResourceHandlerFunc {
		return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			caller := principalID(auth.FromContext(ctx))
			if !l.acquire(caller) {
				return nil, fmt.Errorf("%s", l.busy())
			}
			defer l.release(caller)
			return next(ctx, req)
		}
	}
}
