package transports

import (
	"context"
	"io"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/tools"
	"github.com/mark3labs/mcp-go/server"
)

// stdioWorkers bounds concurrent tool calls from the stdio client; long
// calls (image pulls) must not hold up quick ones.
const stdioWorkers = 16

// ServeStdio serves s to the one local client on in/out until ctx ends or
// the client closes its side. The local user is trusted with every scope.
func ServeStdio(ctx context.Context, s *server.MCPServer, in io.Reader, out io.Writer) error {
	stdio := server.NewStdioServer(s)
	server.WithWorkerPoolSize(stdioWorkers)(stdio)
	progress := newProgressLog()
	server.WithStdioContextFunc(func(ctx context.Context) context.Context {
		ctx = tools.WithProgressWriter(ctx, sessionProgress{log: progress})
		return auth.WithPrincipal(ctx, auth.Local("stdio"))
	})(stdio)
	return stdio.Listen(ctx, in, &stdioOut{w: out, log: progress})
}
