package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	mcpclient "github.com/mark3labs/mcp-go/client"
)

// BenchmarkMCPCall measures a tools/call round trip to a bot's stdio MCP
// server (the fixture's echo) through berth's proxy endpoint and through
// federation, against the same fixture binary spoken to directly over
// stdio by the same client library. scripts/bench.sh prints the ratios;
// the difference is what berth adds.
func BenchmarkMCPCall(b *testing.B) {
	e := newMCPEnv(b)
	srv := e.serveHTTP()
	const bot = "bench"
	admin := e.httpMcpgo(srv)
	mustCall(b, admin, "workspace_create", map[string]any{"bot_id": bot})
	if res := mustCall(b, admin, "mcp_server_add", map[string]any{"bot_id": bot, "name": "fx", "command": testenv.MCPFixturePath}); res.IsError {
		b.Fatal(res.Text)
	}
	fed := e.mcpgoAt(srv.botURL(bot), srv.Token, "")
	proxy := e.mcpgoAt(srv.proxyURL(bot, "fx"), srv.Token, "")

	c, err := mcpclient.NewStdioMCPClient(testenv.MCPFixtureBinary(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	direct := newMcpgoClient(b, c)

	echo := func(c mcpClient, tool string) func(b *testing.B) {
		return func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				res, err := c.call(ctx, tool, map[string]any{"text": "hi"}, nil)
				lat = append(lat, time.Since(start))
				if err != nil || res.IsError || res.Text != "hi" {
					b.Fatalf("%s: %+v %v", tool, res, err)
				}
			}
			reportPercentiles(b, lat)
		}
	}
	b.Run("proxy/berth", echo(proxy, "echo"))
	b.Run("proxy/direct", echo(direct, "echo"))
	b.Run("federation/berth", echo(fed, "fx__echo"))
	b.Run("federation/direct", echo(direct, "echo"))
}
