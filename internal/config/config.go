// Package config owns berth's settings: their defaults, and how flags,
// environment variables and an optional YAML file combine into one Config.
// It knows nothing about what the settings drive.
//
// Every setting is declared once, as a flag. Its environment variable
// (BERTH_ plus the flag name in upper snake case) and its config-file key
// (the flag name) are derived from it, so the three can never drift apart.
// Precedence: command-line flag, then environment, then file, then default.
// The file is DefaultFile unless --config or BERTH_CONFIG names another.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultFile is the config file every berth command reads when neither
// --config nor BERTH_CONFIG names one. `make run` and `make install` write it,
// so a plain `berth serve --stdio` in an MCP client's config finds the same
// containerd, namespace and state directory as the HTTP server they started.
const DefaultFile = "/etc/berth/config.yaml"

// Config is the resolved configuration of one berth process.
type Config struct {
	// ConfigFile is the file the settings were read from; after Resolve it
	// is empty when none was read (DefaultFile absent, or --config '').
	ConfigFile string

	ContainerdAddress string
	Namespace         string
	Snapshotter       string
	StateDir          string
	DefaultImage      string
	RegistryConfigDir string
	CDISpecDirs       []string
	AgentBinary       string
	AgentTimeout      time.Duration
	StopGrace         time.Duration

	// Workspace limits and devices (see workspace.NewLimitPolicy): zero or
	// empty derives the value from the host.
	DefaultPids, MaxPids     int64
	DefaultMemory, MaxMemory string
	DefaultCPUs, MaxCPUs     float64
	AllowedDevices           []string
	ContainerdTimeout        time.Duration

	ExecTimeout         time.Duration
	ExecMaxOutput       int
	TerminalIdleTimeout time.Duration
	SkillRoots          []string

	MCPStartTimeout time.Duration
	MCPCallTimeout  time.Duration
	MCPResultMax    int

	Stdio          bool
	Bot            string
	HTTPAddr       string
	Token          string
	TokenFile      string
	TokensFile     string
	NoAuth         bool
	AllowedOrigins []string
	SessionIdleTTL time.Duration
	UISessionTTL   time.Duration // web console sessions' lifetime
	// AllowedRegistries bound the pulls of tokens without the admin scope;
	// ExportQuota the bytes of data_export archives kept per bot.
	AllowedRegistries []string
	ExportQuota       int64
	AuditLog          string
	MaxCallsPerToken  int
	// ConfirmDestructive says whether destructive tools ask the person
	// behind the client first: off, ask or require (see tools.ConfirmAsk).
	ConfirmDestructive string

	// Tasks (long tool calls over HTTP): how many one token may hold, and
	// how long a finished one's result is kept.
	MaxTasksPerToken int
	TaskTTL          time.Duration

	// The bots' exposed ports (see workspace.PortPolicy).
	PreviewDomain, PublicURL      string
	PortLinkTTL, PortLinkMaxTTL   time.Duration
	MaxExposedPorts, MaxPortConns int
	PortIdleTimeout               time.Duration
	PortMaxBody                   int64

	// Workspace networking (see workspace.NetworkOptions).
	NetworkBridge, NetworkSubnet string
	CNIPluginDirs, DNSUpstreams  []string
	DefaultNetwork               string

	LogLevel string
}

// Defaults returns the configuration used when nothing else is said.
func Defaults() Config {
	return Config{
		ConfigFile:          DefaultFile,
		ContainerdAddress:   "/run/containerd/containerd.sock",
		Namespace:           "berth",
		Snapshotter:         "overlayfs",
		StateDir:            "/var/lib/berth",
		DefaultImage:        "docker.io/library/debian:bookworm-slim",
		RegistryConfigDir:   "/etc/containerd/certs.d",
		CDISpecDirs:         []string{"/etc/cdi", "/var/run/cdi"},
		AgentTimeout:        30 * time.Second,
		StopGrace:           10 * time.Second,
		MaxPids:             32768,
		ContainerdTimeout:   30 * time.Second,
		ExecTimeout:         60 * time.Second,
		ExecMaxOutput:       64 << 10,
		TerminalIdleTimeout: time.Hour,
		SkillRoots:          []string{"/data/.agents/skills"},
		SessionIdleTTL:      30 * time.Minute,
		UISessionTTL:        12 * time.Hour,
		AllowedRegistries:   []string{"docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "mcr.microsoft.com", "public.ecr.aws"},
		ExportQuota:         4 << 30,
		MCPStartTimeout:     2 * time.Minute,
		MCPCallTimeout:      10 * time.Minute,
		MCPResultMax:        1 << 20,
		LogLevel:            "info",
		AuditLog:            "stderr",
		ConfirmDestructive:  "off",
		PortLinkTTL:         24 * time.Hour,
		PortLinkMaxTTL:      30 * 24 * time.Hour,
		MaxExposedPorts:     16,
		MaxPortConns:        64,
		PortIdleTimeout:     10 * time.Minute,
		PortMaxBody:         64 << 20,
		MaxCallsPerToken:    8,
		MaxTasksPerToken:    16,
		TaskTTL:             time.Hour,
		NetworkBridge:       "berth0",
		NetworkSubnet:       "10.213.0.0/16",
	}
}

// EnvName is the environment variable that sets the flag called name.
func EnvName(name string) string {
	return "BERTH_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Register declares every setting of cfg as a flag on fs, with cfg's
// current values as defaults. serve selects the serving flags too.
func Register(fs *flag.FlagSet, cfg *Config, serve bool) {
	fs.StringVar(&cfg.ConfigFile, "config", cfg.ConfigFile, "YAML config file whose keys are these flag names; the default file is skipped when absent, '' reads none")
	fs.StringVar(&cfg.ContainerdAddress, "containerd", cfg.ContainerdAddress, "containerd socket")
	fs.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "containerd namespace that holds berth's workspaces and images")
	fs.StringVar(&cfg.Snapshotter, "snapshotter", cfg.Snapshotter, "default containerd snapshotter for new workspaces")
	fs.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "directory for agent sockets, logs, the token file and data that outlives a workspace")
	fs.StringVar(&cfg.DefaultImage, "default-image", cfg.DefaultImage, "image for workspace_create when none is given")
	fs.StringVar(&cfg.RegistryConfigDir, "registry-config-dir", cfg.RegistryConfigDir, "containerd-style hosts.toml directory for registry mirrors and TLS")
	fs.Var((*listValue)(&cfg.CDISpecDirs), "cdi-spec-dirs", "comma-separated CDI spec directories for device injection")
	fs.StringVar(&cfg.AgentBinary, "agent-binary", cfg.AgentBinary, "static berth binary mounted into workspaces as their init (default: this executable)")
	fs.DurationVar(&cfg.AgentTimeout, "agent-timeout", cfg.AgentTimeout, "how long to wait for a workspace's agent to answer after start")
	fs.DurationVar(&cfg.StopGrace, "stop-grace", cfg.StopGrace, "time between SIGTERM and SIGKILL when stopping a workspace")
	fs.DurationVar(&cfg.ExecTimeout, "exec-timeout", cfg.ExecTimeout, "default timeout of the exec tool (0 = none)")
	fs.IntVar(&cfg.ExecMaxOutput, "exec-max-output", cfg.ExecMaxOutput, "default cap in bytes on each of stdout and stderr that exec returns")
	fs.DurationVar(&cfg.TerminalIdleTimeout, "terminal-idle-timeout", cfg.TerminalIdleTimeout, "close terminals nobody used for this long (0 = never)")
	fs.Var((*listValue)(&cfg.SkillRoots), "skill-roots", "comma-separated read-only skill roots inside workspaces, after the user root /data/skills")
	fs.DurationVar(&cfg.MCPStartTimeout, "mcp-start-timeout", cfg.MCPStartTimeout, "how long a bot's MCP server may take to start and list its tools (npx may download it first)")
	fs.DurationVar(&cfg.MCPCallTimeout, "mcp-call-timeout", cfg.MCPCallTimeout, "timeout of one call of a federated tool of a bot's MCP server")
	fs.IntVar(&cfg.MCPResultMax, "mcp-result-max", cfg.MCPResultMax, "cap in bytes on a federated tool's result; larger ones are cut with a marker")
	fs.Int64Var(&cfg.DefaultPids, "default-pids", cfg.DefaultPids, "process limit of a workspace whose create names none (default 1024, at most --max-pids)")
	fs.Int64Var(&cfg.MaxPids, "max-pids", cfg.MaxPids, "most processes any workspace may ask for")
	fs.StringVar(&cfg.DefaultMemory, "default-memory", cfg.DefaultMemory, "memory limit of a workspace whose create names none, e.g. 2G (default 2G, at most --max-memory)")
	fs.StringVar(&cfg.MaxMemory, "max-memory", cfg.MaxMemory, "most memory any workspace may ask for (default: the host's memory)")
	fs.Float64Var(&cfg.DefaultCPUs, "default-cpus", cfg.DefaultCPUs, "CPU limit in cores of a workspace whose create names none (default: --max-cpus)")
	fs.Float64Var(&cfg.MaxCPUs, "max-cpus", cfg.MaxCPUs, "most CPU cores any workspace may ask for (default: the host's CPUs)")
	fs.Var((*listValue)(&cfg.AllowedDevices), "allowed-devices", "comma-separated CDI device patterns (e.g. example.com/gpu=*) that tokens without the admin scope may inject; admins may inject any")
	fs.DurationVar(&cfg.ContainerdTimeout, "containerd-timeout", cfg.ContainerdTimeout, "longest wait for containerd's answer to a call that is not long by nature (then: containerd is not responding)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error (logs go to stderr)")
	if !serve {
		return
	}
	fs.BoolVar(&cfg.Stdio, "stdio", cfg.Stdio, "serve MCP over stdin/stdout for one local client")
	fs.StringVar(&cfg.Bot, "bot", cfg.Bot, "with --stdio: the bot whose MCP servers' tools join the tool list as <server>__<tool>")
	fs.StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "serve MCP over streamable HTTP at ADDR/mcp, e.g. 127.0.0.1:8080")
	fs.StringVar(&cfg.Token, "token", cfg.Token, "bearer token for HTTP clients (default: read or create the token file)")
	fs.StringVar(&cfg.TokenFile, "token-file", cfg.TokenFile, "file holding the HTTP bearer token (default: STATE_DIR/token)")
	fs.StringVar(&cfg.TokensFile, "tokens-file", cfg.TokensFile, "YAML file of more HTTP tokens, each limited to some bots and scopes (see README)")
	fs.BoolVar(&cfg.NoAuth, "no-auth", cfg.NoAuth, "serve HTTP without a token; refused unless the address is loopback")
	fs.Var((*listValue)(&cfg.AllowedOrigins), "allowed-origins", "comma-separated browser origins allowed to call /mcp (requests without Origin are always allowed)")
	fs.DurationVar(&cfg.SessionIdleTTL, "session-idle-ttl", cfg.SessionIdleTTL, "forget HTTP sessions idle for this long")
	fs.DurationVar(&cfg.UISessionTTL, "ui-session-ttl", cfg.UISessionTTL, "how long a login to the web console at /ui lasts")
	fs.Var((*listValue)(&cfg.AllowedRegistries), "allowed-registries", "comma-separated registries (host or host:port as in image names; * for any) that tokens without the admin scope may pull from")
	fs.Int64Var(&cfg.ExportQuota, "export-quota", cfg.ExportQuota, "bytes of data_export archives berth keeps per bot (0 = no quota)")
	fs.IntVar(&cfg.MaxCallsPerToken, "max-calls-per-token", cfg.MaxCallsPerToken, "tool calls and resource reads one token may have in flight at once (each holds its answer in berth's memory)")
	fs.IntVar(&cfg.MaxTasksPerToken, "max-tasks-per-token", cfg.MaxTasksPerToken, "tasks (long tool calls run as MCP tasks over HTTP) one token may hold, running or finished; the oldest finished one makes room")
	fs.DurationVar(&cfg.TaskTTL, "task-ttl", cfg.TaskTTL, "how long a finished task's result is kept (tasks live in memory: a restart forgets them)")
	fs.StringVar(&cfg.PreviewDomain, "preview-domain", cfg.PreviewDomain, "serve each exposed port also on host {port}-{bot}.DOMAIN (point *.DOMAIN at berth; localhost works locally), for apps that use absolute paths")
	fs.StringVar(&cfg.PublicURL, "public-url", cfg.PublicURL, "berth's HTTP address as people reach it, e.g. https://berth.example.com; port_expose then answers whole URLs")
	fs.DurationVar(&cfg.PortLinkTTL, "port-link-ttl", cfg.PortLinkTTL, "lifetime of a port link when port_expose names none")
	fs.DurationVar(&cfg.PortLinkMaxTTL, "port-link-max-ttl", cfg.PortLinkMaxTTL, "longest lifetime port_expose may give a link")
	fs.IntVar(&cfg.MaxExposedPorts, "max-exposed-ports", cfg.MaxExposedPorts, "most ports one bot may expose")
	fs.IntVar(&cfg.MaxPortConns, "max-port-conns", cfg.MaxPortConns, "most connections to one bot's exposed ports open at once (WebSockets and kept-alive ones included)")
	fs.DurationVar(&cfg.PortIdleTimeout, "port-idle-timeout", cfg.PortIdleTimeout, "close a connection to an exposed port (a WebSocket too) that carried nothing for this long")
	fs.Int64Var(&cfg.PortMaxBody, "port-max-body", cfg.PortMaxBody, "cap in bytes on a request body sent to an exposed port")
	fs.StringVar(&cfg.NetworkBridge, "network-bridge", cfg.NetworkBridge, "name of berth's own bridge for bridge-mode workspaces (also names its nftables tables and CNI network; two berths on one host need two)")
	fs.StringVar(&cfg.NetworkSubnet, "network-subnet", cfg.NetworkSubnet, "IPv4 prefix bridge-mode workspaces get addresses from; its first address is the gateway and DNS resolver")
	fs.Var((*listValue)(&cfg.CNIPluginDirs), "cni-plugin-dir", "comma-separated directories searched for the CNI plugins bridge, host-local and loopback (default /usr/lib/cni, /opt/cni/bin)")
	fs.Var((*listValue)(&cfg.DNSUpstreams), "dns-upstreams", "comma-separated resolvers (host or host:port) berth's DNS resolver forwards allowed names to (default: the host's /etc/resolv.conf)")
	fs.StringVar(&cfg.DefaultNetwork, "default-network", cfg.DefaultNetwork, "network mode of a workspace_create that names none: none, bridge or host (default bridge where available, else none)")
	fs.StringVar(&cfg.ConfirmDestructive, "confirm-destructive", cfg.ConfirmDestructive, "ask the person behind the client (elicitation) before workspace_delete, snapshot_rollback, snapshot_delete, a recursive fs_delete and a data_import that replaces files: off; ask (clients that cannot be asked get the tools as before); require (such clients are refused)")
	fs.StringVar(&cfg.AuditLog, "audit-log", cfg.AuditLog, "where the audit log's JSON lines go (one per tool call, resource read and HTTP endpoint use): stderr, off, or a file path")
}

// Resolve parses args into cfg: flags first, then fills every flag not
// given on the command line from the environment, then from the config file.
func Resolve(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	fromEnv := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok && !explicit[f.Name] {
			fromEnv[f.Name] = v
		}
	})
	if v, ok := fromEnv["config"]; ok {
		if err := fs.Set("config", v); err != nil {
			return err
		}
	}
	_, namedInEnv := fromEnv["config"]
	fromFile, err := readFile(fs.Lookup("config").Value.String())
	if errors.Is(err, os.ErrNotExist) && !explicit["config"] && !namedInEnv {
		// Only the default file may be missing: a host without
		// make install runs on the defaults. A file someone named
		// must exist, or a typo would silently drop every setting in it.
		// Clearing the flag records that no file was read.
		err = fs.Set("config", "")
		fromFile = nil
	}
	if err != nil {
		return err
	}
	// One file serves every subcommand, so a key only `berth serve` knows
	// (tokens-file, say) is fine for `berth doctor`; a key no subcommand
	// knows is a typo.
	every := flag.NewFlagSet("every", flag.ContinueOnError)
	Register(every, &Config{}, true)
	for name := range fromFile {
		if every.Lookup(name) == nil {
			return fmt.Errorf("config file: unknown key %q (keys are the flag names, see berth --help)", name)
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if explicit[f.Name] || f.Name == "config" {
			return
		}
		source, value, ok := "", "", false
		if v, found := fromEnv[f.Name]; found {
			source, value, ok = EnvName(f.Name), v, true
		} else if v, found := fromFile[f.Name]; found {
			source, value, ok = "config file key "+f.Name, v, true
		}
		if ok {
			if err := fs.Set(f.Name, value); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", source, err))
			}
		}
	})
	return errors.Join(errs...)
}

// readFile loads the YAML config file as flag-name → flag-syntax value.
func readFile(path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch v := v.(type) {
		case []any:
			parts := make([]string, len(v))
			for i, p := range v {
				parts[i] = fmt.Sprint(p)
			}
			out[k] = strings.Join(parts, ",")
		case nil:
			out[k] = ""
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out, nil
}

// Validate checks the settings that every subcommand relies on.
func (c *Config) Validate() error {
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("--state-dir must be an absolute path, got %q", c.StateDir)
	}
	if c.Namespace == "" {
		return errors.New("--namespace must not be empty")
	}
	if c.MaxCallsPerToken < 1 || c.MaxCallsPerToken > 1024 {
		return fmt.Errorf("--max-calls-per-token must be between 1 and 1024, got %d", c.MaxCallsPerToken)
	}
	if c.MaxTasksPerToken < 1 || c.MaxTasksPerToken > 1024 {
		return fmt.Errorf("--max-tasks-per-token must be between 1 and 1024, got %d", c.MaxTasksPerToken)
	}
	if c.TaskTTL < time.Second || c.TaskTTL > 7*24*time.Hour {
		return fmt.Errorf("--task-ttl must be between 1s and 168h, got %s", c.TaskTTL)
	}
	if c.ExecMaxOutput < 1 || c.ExecMaxOutput > 1<<20 {
		return fmt.Errorf("--exec-max-output must be between 1 and 1048576 (1 MiB), got %d", c.ExecMaxOutput)
	}
	if c.MCPResultMax < 1024 || c.MCPResultMax > 16<<20 {
		return fmt.Errorf("--mcp-result-max must be between 1024 and 16777216, got %d", c.MCPResultMax)
	}
	if c.MCPStartTimeout <= 0 || c.MCPCallTimeout <= 0 {
		return errors.New("--mcp-start-timeout and --mcp-call-timeout must be positive")
	}
	if c.ContainerdTimeout <= 0 {
		return errors.New("--containerd-timeout must be positive")
	}
	if c.ExecTimeout < 0 || c.TerminalIdleTimeout < 0 {
		return errors.New("--exec-timeout and --terminal-idle-timeout must not be negative")
	}
	switch c.ConfirmDestructive {
	case "off", "ask", "require":
	default:
		return fmt.Errorf("--confirm-destructive must be off, ask or require, got %q", c.ConfirmDestructive)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level must be debug, info, warn or error, got %q", c.LogLevel)
	}
	return nil
}

// Usage writes the flags of fs with their environment variables.
func Usage(fs *flag.FlagSet) string {
	var lines []string
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			def = " (default " + f.DefValue + ")"
		}
		lines = append(lines, fmt.Sprintf("  --%s\n      %s%s\n      env %s", f.Name, f.Usage, def, EnvName(f.Name)))
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// listValue is a comma-separated list flag; setting it replaces the list.
type listValue []string

func (l *listValue) String() string { return strings.Join(*l, ",") }

func (l *listValue) Set(s string) error {
	*l = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}
