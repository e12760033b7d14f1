package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/internal/agent"
)

// runAgent is the workspace's init. berth starts it; people don't.
func runAgent(args []string) error {
	fs := flag.NewFlagSet("berth agent", flag.ContinueOnError)
	socket := fs.String("socket", filepath.Join(agent.ContainerDir, agent.SocketName), "unix socket to serve the host on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return agent.Run(context.Background(), agent.ServerOptions{
		SocketPath:   *socket,
		BerthVersion: version,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
}
