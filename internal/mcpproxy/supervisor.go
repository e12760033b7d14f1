package mcpproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/remedy"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/containerd/errdefs"
	"github.com/mark3labs/mcp-go/mcp"
)

// Options configure a Supervisor.
type Options struct {
	Manager Workspaces
	Logger  *slog.Logger
	Version string // berth's, sent as clientInfo
	// InitTimeout bounds a server's start: initialize and tools/list
	// (npx may download the server first).
	InitTimeout time.Duration
	// CallTimeout bounds one federated tool call.
	CallTimeout time.Duration
	// MaxResultBytes caps a federated call's result; larger ones are cut
	// with a marker.
	MaxResultBytes int
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.InitTimeout <= 0 {
		o.InitTimeout = 2 * time.Minute
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 10 * time.Minute
	}
	if o.MaxResultBytes <= 0 {
		o.MaxResultBytes = 1 << 20
	}
}

// Supervisor runs the registered stdio MCP servers of every workspace as
// long-lived shared processes and federates their tools. A server's
// registration lives with its workspace (workspace.Manager keeps it), so a
// new berth brings every server back.
type Supervisor struct {
	mgr  Workspaces
	opts Options
	log  *slog.Logger
	ctx  context.Context

	mu        sync.Mutex
	servers   map[string]map[string]*server // bot → name → server
	listeners []func(bot string)
}

// NewSupervisor returns a Supervisor whose servers live until ctx ends.
// Start brings back the registered servers.
func NewSupervisor(ctx context.Context, opts Options) *Supervisor {
	opts.setDefaults()
	s := &Supervisor{mgr: opts.Manager, opts: opts, log: opts.Logger, ctx: ctx, servers: map[string]map[string]*server{}}
	opts.Manager.OnStarted(s.workspaceStarted)
	return s
}

// Start starts the registered servers of every workspace. Servers of
// workspaces that are not running wait for them.
func (s *Supervisor) Start() error {
	bots, err := s.mgr.MCPServerBots()
	if err != nil {
		return err
	}
	for _, bot := range bots {
		specs, err := s.mgr.MCPServers(bot)
		if err != nil {
			s.log.Error("cannot read MCP server registrations", "bot", bot, "err", err)
			continue
		}
		for _, spec := range specs {
			s.launch(bot, spec)
		}
	}
	return nil
}

// OnToolsChanged registers fn to be called whenever the federated tools of
// a bot may have changed.
func (s *Supervisor) OnToolsChanged(fn func(bot string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, fn)
}

func (s *Supervisor) toolsChanged(bot string) {
	s.mu.Lock()
	fns := slices.Clone(s.listeners)
	s.mu.Unlock()
	for _, fn := range fns {
		fn(bot)
	}
}

// launch starts supervising spec, replacing a server of the same name.
func (s *Supervisor) launch(bot string, spec workspace.MCPServerSpec) *server {
	ctx, cancel := context.WithCancel(s.ctx)
	srv := &server{
		sup: s, bot: bot, spec: spec, stderr: newStderrTail(), log: s.log, label: bot + "/" + spec.Name,
		cancel: cancel, wake: make(chan struct{}, 1), ended: make(chan struct{}), state: StateStarting,
	}
	s.mu.Lock()
	old := s.servers[bot][spec.Name]
	if s.servers[bot] == nil {
		s.servers[bot] = map[string]*server{}
	}
	s.servers[bot][spec.Name] = srv
	s.mu.Unlock()
	if old != nil {
		old.cancel()
		<-old.ended
	}
	go srv.run(ctx)
	return srv
}

func (s *Supervisor) lookup(bot, name string) (*server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	srv := s.servers[bot][name]
	if srv == nil {
		return nil, remedy.With(remedy.ListMCPServers, fmt.Errorf("%w: workspace %s has no MCP server %q", errdefs.ErrNotFound, bot, name))
	}
	return srv, nil
}

func (s *Supervisor) stillRegistered(bot, name string) bool {
	specs, err := s.mgr.MCPServers(bot)
	if err != nil {
		return true // unreadable is not removed
	}
	return slices.ContainsFunc(specs, func(sp workspace.MCPServerSpec) bool { return sp.Name == name })
}

// forget drops a server whose registration went away with its workspace.
func (s *Supervisor) forget(srv *server) {
	s.mu.Lock()
	if s.servers[srv.bot][srv.spec.Name] == srv {
		delete(s.servers[srv.bot], srv.spec.Name)
		if len(s.servers[srv.bot]) == 0 {
			delete(s.servers, srv.bot)
		}
	}
	s.mu.Unlock()
	s.toolsChanged(srv.bot)
}

// workspaceStarted brings the bot's servers back after its workspace
// (re)started.
func (s *Supervisor) workspaceStarted(bot string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, srv := range s.servers[bot] {
		srv.workspaceStarted()
	}
}

// Add registers spec with the bot's workspace and starts it, replacing a
// server of the same name. It waits for the first start to succeed or fail.
func (s *Supervisor) Add(ctx context.Context, bot string, spec workspace.MCPServerSpec) (Info, bool, error) {
	spec.AddedAt = time.Now().UTC()
	replaced, err := s.mgr.PutMCPServer(ctx, bot, spec)
	if err != nil {
		return Info{}, false, err
	}
	srv := s.launch(bot, spec)
	s.toolsChanged(bot)
	wait := time.NewTimer(s.opts.InitTimeout)
	defer wait.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		srv.mu.Lock()
		st := srv.state
		srv.mu.Unlock()
		if st != StateStarting {
			break
		}
		select {
		case <-tick.C:
		case <-wait.C:
			return srv.info(defaultStderrLines), replaced, nil
		case <-ctx.Done():
			return srv.info(defaultStderrLines), replaced, nil
		}
	}
	return srv.info(defaultStderrLines), replaced, nil
}

// defaultStderrLines is how much stderr a list entry carries.
const defaultStderrLines = 5

// Remove stops the named server and unregisters it.
func (s *Supervisor) Remove(ctx context.Context, bot, name string) error {
	if err := s.mgr.RemoveMCPServer(ctx, bot, name); err != nil {
		return err
	}
	s.mu.Lock()
	srv := s.servers[bot][name]
	delete(s.servers[bot], name)
	if len(s.servers[bot]) == 0 {
		delete(s.servers, bot)
	}
	s.mu.Unlock()
	if srv != nil {
		srv.cancel()
		<-srv.ended
	}
	s.toolsChanged(bot)
	return nil
}

// List describes the bot's servers, sorted by name.
func (s *Supervisor) List(bot string) ([]Info, error) {
	if err := workspace.ValidateBotID(bot); err != nil {
		return nil, err
	}
	s.mu.Lock()
	servers := make([]*server, 0, len(s.servers[bot]))
	for _, srv := range s.servers[bot] {
		servers = append(servers, srv)
	}
	s.mu.Unlock()
	out := make([]Info, 0, len(servers))
	for _, srv := range servers {
		out = append(out, srv.info(defaultStderrLines))
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// MaxLogLines caps one mcp_server_logs answer.
const MaxLogLines = 1000

// Logs returns up to lines of the server's last stderr lines (with berth's
// own notes of starts and exits) and how many bytes it wrote in all.
func (s *Supervisor) Logs(bot, name string, lines int) ([]string, int64, error) {
	srv, err := s.lookup(bot, name)
	if err != nil {
		return nil, 0, err
	}
	out, total := srv.stderr.lines(min(lines, MaxLogLines))
	return out, total, nil
}

// Spec returns the registration of the named server, for the proxy
// endpoint (which starts a process of its own per session).
func (s *Supervisor) Spec(bot, name string) (workspace.MCPServerSpec, error) {
	srv, err := s.lookup(bot, name)
	if err != nil {
		return workspace.MCPServerSpec{}, err
	}
	return srv.spec, nil
}

// Tools returns the federated tools of the bot's servers, sorted by name.
func (s *Supervisor) Tools(bot string) []FederatedTool {
	s.mu.Lock()
	servers := make([]*server, 0, len(s.servers[bot]))
	for _, srv := range s.servers[bot] {
		servers = append(servers, srv)
	}
	s.mu.Unlock()
	var out []FederatedTool
	for _, srv := range servers {
		out = append(out, srv.federated()...)
	}
	slices.SortFunc(out, func(a, b FederatedTool) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Progress is one progress notification of a federated call, as the
// server sent it (its token replaced by the caller).
type Progress struct {
	Progress float64  `json:"progress"`
	Total    *float64 `json:"total,omitempty"`
	Message  string   `json:"message,omitempty"`
}

// CallTool calls the federated tool name of bot on its shared server.
// onProgress receives the call's progress; onRequest answers the server's
// own requests (sampling, elicitation, roots) made during the call. Both
// may be nil.
func (s *Supervisor) CallTool(ctx context.Context, bot, name string, args json.RawMessage, onProgress func(Progress), onRequest RequestHandler) (*mcp.CallToolResult, error) {
	server, _, _ := strings.Cut(name, separator)
	srv, err := s.lookup(bot, server)
	if err != nil {
		return nil, err
	}
	var tool string
	for _, t := range srv.federated() {
		if t.Name == name {
			tool = t.Tool
		}
	}
	if tool == "" {
		return nil, fmt.Errorf("%w: MCP server %s of %s has no tool %s now (its tool list changed; list tools again)", errdefs.ErrNotFound, server, bot, name)
	}
	var progress func(json.RawMessage)
	if onProgress != nil {
		progress = func(raw json.RawMessage) {
			var p Progress
			if json.Unmarshal(raw, &p) == nil {
				onProgress(p)
			}
		}
	}
	cctx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
	defer cancel()
	raw, err := srv.callTool(cctx, tool, args, progress, onRequest)
	if err != nil {
		if ctx.Err() == nil && cctx.Err() != nil {
			return nil, fmt.Errorf("%s/%s did not answer within %s", srv.label, tool, s.opts.CallTimeout)
		}
		return nil, err
	}
	return capResult(raw, s.opts.MaxResultBytes, srv.label+"/"+tool)
}

// capResult decodes a tools/call result, cutting it to max bytes of text
// with a marker that says so when it is larger.
func capResult(raw json.RawMessage, max int, what string) (*mcp.CallToolResult, error) {
	if len(raw) <= max {
		res, err := mcp.ParseCallToolResult(&raw)
		if err != nil {
			return nil, fmt.Errorf("%s answered with a malformed result: %w", what, err)
		}
		return res, nil
	}
	var r struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		IsError bool `json:"isError"`
	}
	_ = json.Unmarshal(raw, &r)
	var b strings.Builder
	for _, c := range r.Content {
		if c.Type == "text" {
			b.WriteString(c.Text)
		}
		if b.Len() >= max {
			break
		}
	}
	text := b.String()
	if len(text) > max {
		text = strings.ToValidUTF8(text[:max], "")
	}
	marker := fmt.Sprintf("\n[berth: the result of %s was %d bytes, over the cap of %d; it was cut here and non-text content was dropped]", what, len(raw), max)
	return &mcp.CallToolResult{Content: []mcp.Content{mcp.NewTextContent(text + marker)}, IsError: r.IsError}, nil
}

// CountByState counts the registered servers of every bot by state.
func (s *Supervisor) CountByState() map[State]int {
	s.mu.Lock()
	var all []*server
	for _, m := range s.servers {
		for _, srv := range m {
			all = append(all, srv)
		}
	}
	s.mu.Unlock()
	counts := map[State]int{}
	for _, srv := range all {
		srv.mu.Lock()
		counts[srv.state]++
		srv.mu.Unlock()
	}
	return counts
}

// Close stops every server.
func (s *Supervisor) Close() {
	s.mu.Lock()
	var all []*server
	for _, m := range s.servers {
		for _, srv := range m {
			all = append(all, srv)
		}
	}
	s.servers = map[string]map[string]*server{}
	s.mu.Unlock()
	for _, srv := range all {
		srv.cancel()
		<-srv.ended
	}
}
