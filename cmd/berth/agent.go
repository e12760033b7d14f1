package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/agent/server"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/runtime"
)

// runAgent is the workspace's init. berth starts it; people don't.
func runAgent(args []string) error {
	fs := flag.NewFlagSet("berth agent", flag.ContinueOnError)
	socket := fs.String("socket", filepath.Join(wire.ContainerDir, wire.SocketName), "unix socket to serve the host on")
	dataDir := fs.String("data-dir", wire.DefaultDataDir, "the bot's work directory: default cwd and base of relative paths")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The image's user arrives in the environment; commands must not inherit it.
	user, err := parseCredential(os.Getenv(runtime.ImageUserEnv))
	if err != nil {
		return err
	}
	os.Unsetenv(runtime.ImageUserEnv)
	return server.Run(context.Background(), server.Options{
		SocketPath:   *socket,
		BerthVersion: version,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, nil)),
		User:         user,
		DataDir:      *dataDir,
	})
}

// parseCredential reads "uid:gid[:g1,g2]"; empty or uid 0 means nil (root).
func parseCredential(s string) (*server.Credential, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.SplitN(s, ":", 3)
	if len(parts) < 2 {
		return nil, fmt.Errorf("%s=%q: want uid:gid[:groups]", runtime.ImageUserEnv, s)
	}
	num := func(v string) (uint32, error) {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%s=%q: %w", runtime.ImageUserEnv, s, err)
		}
		return uint32(n), nil
	}
	cred := &server.Credential{}
	var err error
	if cred.UID, err = num(parts[0]); err != nil {
		return nil, err
	}
	if cred.GID, err = num(parts[1]); err != nil {
		return nil, err
	}
	if len(parts) == 3 && parts[2] != "" {
		for _, g := range strings.Split(parts[2], ",") {
			n, err := num(g)
			if err != nil {
				return nil, err
			}
			cred.Groups = append(cred.Groups, n)
		}
	}
	if cred.UID == 0 { // root keeps root's own groups
		return nil, nil
	}
	return cred, nil
}
