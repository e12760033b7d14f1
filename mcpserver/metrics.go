package mcpserver

import (
	"context"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/metrics"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// instrument records each tool call in m. The tools of bots' own servers
// share one label: their names are the bots' to choose, and a label per
// name would let bots grow berth's metrics without bound.
func instrument(m *metrics.Metrics) server.ToolHandlerMiddleware {
	return func(next server.ToolHandlerFunc) server.ToolHandlerFunc {
		return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			name := req.Params.Name
			if strings.Contains(name, "__") {
				name = "federated"
			}
			start := time.Now()
			res, err := next(ctx, req)
			m.ObserveToolCall(name, time.Since(start), err != nil || res == nil || res.IsError)
			return res, err
		}
	}
}
