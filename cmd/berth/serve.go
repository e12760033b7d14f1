package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/console"
	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/mcpproxy"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/nslock"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/skills"
	"github.com/berth-dev/berth/internal/stdiobridge"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/tools"
	"github.com/berth-dev/berth/transports"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, _, err := loadConfig("serve", args, true, nil)
	if err != nil {
		return err
	}
	if cfg.Stdio == (cfg.HTTPAddr != "") {
		return errors.New("serve needs exactly one of --stdio or --http ADDR")
	}
	// Warnings about a bot's work also reach the MCP sessions of that bot.
	botLog := mcpserver.NewBotLog()
	log := slog.New(botLog.Handler(newLogger(stderr, cfg.LogLevel).Handler()))
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := workspace.CheckStateDir(cfg.StateDir); err != nil {
		return err
	}

	httpOpts := transports.HTTPOptions{
		Addr: cfg.HTTPAddr, NoAuth: cfg.NoAuth, AllowedOrigins: cfg.AllowedOrigins,
		SessionIdleTTL: cfg.SessionIdleTTL, Logger: log,
	}
	if cfg.HTTPAddr != "" && !cfg.NoAuth {
		if httpOpts.Token, err = httpToken(cfg, log.Info); err != nil {
			return err
		}
		if cfg.TokensFile != "" {
			if httpOpts.ScopedTokens, err = auth.LoadTokensFile(cfg.TokensFile); err != nil {
				return err
			}
			log.Info("loaded scoped HTTP tokens", "tokens_file", cfg.TokensFile, "count", len(httpOpts.ScopedTokens))
		}
	}
	if cfg.HTTPAddr != "" {
		if err := transports.CheckHTTPOptions(httpOpts); err != nil {
			return err
		}
	}
	auditLog, err := audit.Open(cfg.AuditLog, stderr, log)
	if err != nil {
		return err
	}
	defer auditLog.Close()
	httpOpts.Audit = auditLog

	// Before anything reconciles: a second berth on this namespace would
	// undo the first's work in progress.
	holder := holderRecord(cfg)
	nsLock, err := nslock.Acquire(nslock.DefaultDir, cfg.ContainerdAddress, cfg.Namespace, holder)
	if held, ok := stdiobridge.Bridgeable(err); ok && cfg.Stdio {
		// The service has the namespace: relay this client to it instead.
		return stdiobridge.Serve(ctx, held, stdiobridge.Options{
			Token: cfg.Token, Bot: cfg.Bot, ValidateBot: workspace.ValidateBotID, Logger: log,
		}, os.Stdin, os.Stdout)
	}
	if err != nil {
		return err
	}
	defer nsLock.Release()

	rt, err := newRuntime(cfg)
	if err != nil {
		return err
	}
	defer rt.Close()
	mopts := managerOptions(cfg, log)
	if mopts.Limits, err = workspace.NewLimitPolicy(workspace.LimitSettings{
		DefaultPids: cfg.DefaultPids, MaxPids: cfg.MaxPids, DefaultMemory: cfg.DefaultMemory, MaxMemory: cfg.MaxMemory,
		DefaultCPUs: cfg.DefaultCPUs, MaxCPUs: cfg.MaxCPUs,
	}); err != nil {
		return err
	}
	if err := workspace.CheckDevicePatterns(cfg.AllowedDevices); err != nil {
		return err
	}
	log.Info("workspace limits", "default", mopts.Limits.Default, "max", mopts.Limits.Max, "allowed_devices", cfg.AllowedDevices)
	if err := mopts.Ports.Validate(); err != nil {
		return err
	}
	netOpts, closeNet, err := setupNetwork(cfg, log)
	if err != nil {
		return err
	}
	defer closeNet()
	mopts.Network = netOpts
	mgr := workspace.NewManager(rt, mopts)
	go func() {
		// containerd may be down now; tools then say so, and it heals itself.
		if err := mgr.Reconcile(ctx); err != nil {
			log.Warn("could not reconcile workspaces at start", "err", err)
		}
	}()

	if cfg.Bot != "" && !cfg.Stdio {
		return errors.New("--bot is for --stdio; over HTTP a session sees the MCP server tools of the one bot its token or /mcp?bot=ID names")
	}
	if cfg.Bot != "" {
		if err := workspace.ValidateBotID(cfg.Bot); err != nil {
			return fmt.Errorf("--bot: %w", err)
		}
	}
	mcpSup := mcpproxy.NewSupervisor(ctx, mcpproxy.Options{
		Manager: mgr, Logger: log, Version: version,
		InitTimeout: cfg.MCPStartTimeout, CallTimeout: cfg.MCPCallTimeout, MaxResultBytes: cfg.MCPResultMax,
	})
	defer mcpSup.Close()
	if err := mcpSup.Start(); err != nil {
		log.Warn("could not bring back the bots' MCP servers", "err", err)
	}

	reg := metrics.New(log)
	srv := mcpserver.New(version, tools.Deps{
		Manager: mgr,
		Logger:  log,
		Limits: tools.Limits{
			ExecTimeout: cfg.ExecTimeout, ExecMaxOutput: cfg.ExecMaxOutput, TerminalIdleTimeout: cfg.TerminalIdleTimeout,
			ExportQuota: cfg.ExportQuota,
		},
		Skills:            skills.Config{ReadOnlyRoots: cfg.SkillRoots},
		MCP:               mcpSup,
		Metrics:           reg,
		AllowedRegistries: cfg.AllowedRegistries,
		Confirm:           cfg.ConfirmDestructive,
	}, cfg.Bot, mcpserver.WithAudit(auditLog), mcpserver.WithCallLimit(cfg.MaxCallsPerToken), mcpserver.WithBotLog(botLog),
		mcpserver.WithTasks(httpTasks(cfg, &httpOpts)))
	if cfg.Stdio {
		log.Info("serving MCP on stdio", "version", version, "containerd", cfg.ContainerdAddress, "namespace", cfg.Namespace,
			"state_dir", cfg.StateDir, "config", cmp.Or(cfg.ConfigFile, "none"))
		return transports.ServeStdio(ctx, srv, os.Stdin, os.Stdout)
	}
	httpOpts.Ready = rt.Ping
	httpOpts.Manager = mgr
	httpOpts.MCPProxy = mcpproxy.NewEndpoint(mcpSup, mcpproxy.EndpointOptions{IdleTTL: cfg.SessionIdleTTL})
	defer httpOpts.MCPProxy.Close()
	registerGauges(reg, rt, mgr, mcpSup, httpOpts.MCPProxy)
	httpOpts.Metrics = reg
	httpOpts.Console = console.Options{MCPServers: mcpSup, SessionTTL: cfg.UISessionTTL, AuditFile: auditFile(cfg.AuditLog)}
	return transports.ServeHTTP(ctx, srv, httpOpts, func(addr string) {
		// Where a stdio berth refused the namespace finds this one.
		holder.HTTPAddr, holder.Listening = addr, true
		if err := nsLock.Update(holder); err != nil {
			log.Warn("could not record the HTTP address in the namespace lock", "err", err)
		}
		log.Info("serving MCP over streamable HTTP", "url", "http://"+addr+"/mcp", "version", version,
			"containerd", cfg.ContainerdAddress, "namespace", cfg.Namespace, "state_dir", cfg.StateDir, "config", cmp.Or(cfg.ConfigFile, "none"))
	})
}

// httpTasks serves long tool calls as tasks over HTTP; nil on stdio, whose
// tasks would end with its one client.
func httpTasks(cfg config.Config, o *transports.HTTPOptions) *mcpserver.Tasks {
	if cfg.Stdio {
		return nil
	}
	t := mcpserver.NewTasks(mcpserver.TaskOptions{MaxPerToken: cfg.MaxTasksPerToken, TTL: cfg.TaskTTL})
	o.Tasks = t.Handler
	return t
}

// auditFile is the file the audit log goes to, "" when it goes elsewhere.
func auditFile(spec string) string {
	switch spec {
	case "off", "none", "", "stderr", "-":
		return ""
	}
	return spec
}

// holderRecord says who holds a namespace lock: for the berth refused it,
// and, for HTTP, where its token is, so a stdio berth can bridge to it.
func holderRecord(cfg config.Config) nslock.Holder {
	host, _ := os.Hostname()
	h := nslock.Holder{PID: os.Getpid(), Host: host, Transport: "stdio", StateDir: cfg.StateDir, Since: time.Now().UTC()}
	if cfg.HTTPAddr != "" {
		h.Transport, h.HTTPAddr, h.NoAuth = "http", cfg.HTTPAddr, cfg.NoAuth
		if !cfg.NoAuth && cfg.Token == "" {
			h.TokenFile = cmp.Or(cfg.TokenFile, filepath.Join(cfg.StateDir, "token"))
			if abs, err := filepath.Abs(h.TokenFile); err == nil {
				h.TokenFile = abs
			}
		}
	}
	return h
}

// registerGauges exposes berth's state on /metrics, read at each scrape.
func registerGauges(reg *metrics.Metrics, rt *runtime.Containerd, mgr *workspace.Manager, sup *mcpproxy.Supervisor, proxy *mcpproxy.Endpoint) {
	reg.GaugesFunc("berth_containerd_up", "1 when containerd answers, else 0.", "", func(ctx context.Context) (map[string]float64, error) {
		if rt.Ping(ctx) != nil {
			return map[string]float64{"": 0}, nil
		}
		return map[string]float64{"": 1}, nil
	})
	reg.GaugesFunc("berth_workspaces", "Workspaces by status.", "status", func(ctx context.Context) (map[string]float64, error) {
		counts := map[string]float64{}
		after := ""
		for {
			page, more, err := mgr.List(ctx, after, 1000)
			if err != nil {
				return nil, err
			}
			for _, w := range page {
				counts[w.Status]++
			}
			if !more || len(page) == 0 {
				return counts, nil
			}
			after = page[len(page)-1].BotID
		}
	})
	reg.GaugesFunc("berth_mcp_servers", "The bots' own registered MCP servers by state.", "state", func(context.Context) (map[string]float64, error) {
		counts := map[string]float64{}
		for state, n := range sup.CountByState() {
			counts[string(state)] = float64(n)
		}
		return counts, nil
	})
	reg.GaugesFunc("berth_mcp_proxy_sessions", "Open sessions of the MCP proxy endpoints (each a process in a workspace).", "", func(context.Context) (map[string]float64, error) {
		return map[string]float64{"": float64(proxy.Sessions())}, nil
	})
}

func managerOptions(cfg config.Config, log *slog.Logger) workspace.Options {
	return workspace.Options{
		StateDir: cfg.StateDir, DefaultImage: cfg.DefaultImage, Snapshotter: cfg.Snapshotter,
		AgentBinary: cfg.AgentBinary, AgentTimeout: cfg.AgentTimeout, StopGrace: cfg.StopGrace,
		Version: version, Logger: log, AllowedDevices: cfg.AllowedDevices,
		Ports: workspace.PortPolicy{MaxPorts: cfg.MaxExposedPorts, MaxTunnels: cfg.MaxPortConns, LinkTTL: cfg.PortLinkTTL, MaxLinkTTL: cfg.PortLinkMaxTTL,
			IdleTimeout: cfg.PortIdleTimeout, MaxBodyBytes: cfg.PortMaxBody, PreviewDomain: cfg.PreviewDomain, PublicURL: cfg.PublicURL},
	}
}

func newRuntime(cfg config.Config) (*runtime.Containerd, error) {
	return runtime.NewContainerd(runtime.Options{
		Address: cfg.ContainerdAddress, Namespace: cfg.Namespace,
		RegistryConfigDir: cfg.RegistryConfigDir, CDISpecDirs: cfg.CDISpecDirs, CallTimeout: cfg.ContainerdTimeout,
	})
}

// httpToken returns the token from --token/BERTH_TOKEN, else from the
// token file, creating it on first start.
func httpToken(cfg config.Config, info func(string, ...any)) (auth.Token, error) {
	if cfg.Token != "" {
		if len(cfg.Token) < 16 {
			return "", errors.New("--token must be at least 16 characters")
		}
		return auth.Token(cfg.Token), nil
	}
	path := cfg.TokenFile
	if path == "" {
		path = filepath.Join(cfg.StateDir, "token")
	}
	tok, created, err := auth.LoadOrCreateToken(path)
	if err != nil {
		return "", err
	}
	if created {
		info("created a new HTTP bearer token", "token_file", path)
	} else {
		info("using the HTTP bearer token", "token_file", path)
	}
	return tok, nil
}
