// Command berth is an MCP server that gives every bot its own long-lived
// Linux workspace on containerd. The same binary is the in-workspace agent.
//
// This file only turns the command line into options and calls the
// package that does the work.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/internal/config"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const usage = `berth — long-lived Linux workspaces for LLM agents, served over MCP.

Usage:
  berth serve --stdio                 serve one local MCP client on stdin/stdout
  berth serve --http 127.0.0.1:8080   serve MCP over streamable HTTP at /mcp
  berth doctor                        check containerd, runc, snapshotter, cgroups, agent binary
  berth image pack --rootfs DIR --ref REF --out FILE
                                      pack a root filesystem into an OCI image archive
  berth image import [--name REF] FILE
                                      import an OCI or docker archive into berth's namespace
  berth token                         print the HTTP bearer token (--token, or the token file)
  berth agent                         run as a workspace's init (berth starts this itself)
  berth version

Every setting is a flag, an environment variable, or a key of the YAML file
given by --config, /etc/berth/config.yaml by default (keys are the flag
names). Flags win over the environment, the environment over the file.

Settings:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return 2
	}
	cmd, rest := args[0], args[1:]
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, rest, stderr)
	case "doctor":
		err = doctor(ctx, rest, stdout)
	case "image":
		err = image(ctx, rest, stdout)
	case "token":
		err = printToken(rest, stdout)
	case "agent":
		stop() // as init, the agent handles signals itself
		err = runAgent(rest)
	case "version", "--version":
		fmt.Fprintln(stdout, "berth", version)
	case "help", "-h", "--help":
		printUsage(stdout)
	default:
		fmt.Fprintf(stderr, "berth: unknown command %q\n\n", cmd)
		printUsage(stderr)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "berth:", err)
		return 1
	}
	return 0
}

func printUsage(w io.Writer) {
	cfg := config.Defaults()
	fs := flag.NewFlagSet("berth", flag.ContinueOnError)
	config.Register(fs, &cfg, true)
	fmt.Fprint(w, usage+config.Usage(fs)+"\n")
}

// loadConfig parses the settings of a subcommand.
func loadConfig(name string, args []string, serve bool, extra func(*flag.FlagSet)) (config.Config, *flag.FlagSet, error) {
	cfg := config.Defaults()
	fs := flag.NewFlagSet("berth "+name, flag.ContinueOnError)
	config.Register(fs, &cfg, serve)
	if extra != nil {
		extra(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage of berth %s:\n%s\n", name, config.Usage(fs))
	}
	if err := config.Resolve(fs, args); err != nil {
		return cfg, fs, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fs, err
	}
	if cfg.AgentBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return cfg, fs, fmt.Errorf("find berth's own binary for the agent: %w (set --agent-binary)", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			cfg.AgentBinary = exe
		}
	}
	return cfg, fs, nil
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(strings.ToUpper(level)))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv}))
}
