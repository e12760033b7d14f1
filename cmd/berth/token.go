package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// printToken prints the HTTP admin token of the berth that this host's
// config describes, so that a client's setup can say
// `Authorization: Bearer $(sudo berth token)` whether berth was started by
// make run, make install or by hand. It never creates a token: a missing file
// means this config is not the one the running server uses, or the server
// never started, and a fresh token would hide that.
func printToken(args []string, stdout io.Writer) error {
	cfg, _, err := loadConfig("token", args, true, nil)
	if err != nil {
		return err
	}
	if cfg.Token != "" {
		fmt.Fprintln(stdout, cfg.Token)
		return nil
	}
	path := cfg.TokenFile
	if path == "" {
		path = filepath.Join(cfg.StateDir, "token")
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		from := "the built-in defaults (no config file)"
		if cfg.ConfigFile != "" {
			from = cfg.ConfigFile
		}
		return fmt.Errorf("no token file at %s (settings from %s): `berth serve --http` creates it on its first start", path, from)
	}
	if err != nil {
		return fmt.Errorf("read token file: %w", err)
	}
	fmt.Fprintln(stdout, strings.TrimSpace(string(data)))
	return nil
}
