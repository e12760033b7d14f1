package mcpproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/workspace"
)

// State is where a registered server is in its life.
type State string

const (
	StateStarting   State = "starting"   // process starting or initializing
	StateReady      State = "ready"      // initialized, tools listed, serving calls
	StateRestarting State = "restarting" // exited; waiting out the backoff
	StateWaiting    State = "waiting"    // the workspace is not running
	StateFailed     State = "failed"     // crashed too often; restarted with the workspace or a new mcp_server_add
	StateStopped    State = "stopped"    // removed, or berth is shutting down
)

// Restart policy: a crashed server is started again after a backoff that
// doubles from restartBackoff up to maxRestartBackoff. After maxRestarts
// crashes in a row it is left failed. A run that lasted stableRun resets
// the count.
const (
	restartBackoff    = 500 * time.Millisecond
	maxRestartBackoff = 30 * time.Second
	maxRestarts       = 5
	stableRun         = time.Minute
	// waitingPoll re-checks a workspace that is not running, in case its
	// start was missed.
	waitingPoll = 30 * time.Second
	// maxToolsPerServer bounds the federated tools of one server.
	maxToolsPerServer = 512
	maxToolPages      = 64
)

// server is the long-lived shared process of one registered server: it
// serves the federated tools of every session.
type server struct {
	sup    *Supervisor
	bot    string
	spec   workspace.MCPServerSpec
	stderr *stderrTail
	log    *slog.Logger
	label  string

	cancel context.CancelFunc
	wake   chan struct{} // the workspace started, or a re-add asks for a fresh try
	ended  chan struct{}

	mu          sync.Mutex
	state       State
	reason      string // why the state is not ready, for people
	pid         int
	startedAt   time.Time
	restarts    int
	consecutive int
	lastExit    *exitInfo
	rpc         *rpcClient
	tools       []remoteTool
	serverInfo  json.RawMessage
	// relisting and relistAgain serialise tools/list after list_changed.
	relisting, relistAgain bool
}

// remoteTool is a tool as the bot's server listed it.
type remoteTool struct {
	Name string
	Raw  json.RawMessage // the whole tool object, passed through
}

func (s *server) setState(st State, reason string) {
	s.mu.Lock()
	s.state, s.reason = st, reason
	s.mu.Unlock()
}

// workspaceStarted gives the server a fresh start in a (re)started
// workspace: its end when the workspace stopped was not its own fault.
func (s *server) workspaceStarted() {
	s.mu.Lock()
	s.consecutive = 0
	s.mu.Unlock()
	s.kick()
}

// kick wakes a waiting or failed server.
func (s *server) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run keeps the server's process running until ctx ends.
func (s *server) run(ctx context.Context) {
	defer close(s.ended)
	defer s.setState(StateStopped, "removed")
	for ctx.Err() == nil {
		client, err := s.sup.mgr.Agent(ctx, s.bot)
		if err != nil {
			if !s.sup.stillRegistered(s.bot, s.spec.Name) {
				s.sup.forget(s)
				return
			}
			s.setState(StateWaiting, err.Error())
			s.sleep(ctx, waitingPoll)
			continue
		}
		s.setState(StateStarting, "")
		rpc := newRPCClient()
		p, err := startProc(ctx, client, s.label, s.spec, s.stderr, s.log)
		if err != nil {
			s.crashed(ctx, exitInfo{Err: err, At: time.Now()}, time.Time{})
			continue
		}
		rpc.p = p
		p.serve(func(m *message, _ []byte) { s.onMessage(rpc, m) })
		// The end of the process ends every call waiting on it, the
		// handshake included.
		go func() {
			<-p.done
			rpc.fail(p.exitError())
		}()
		started := time.Now()
		s.mu.Lock()
		s.pid, s.startedAt, s.rpc = p.pid(), started, rpc
		s.mu.Unlock()
		s.stderr.note("started pid %d", p.pid())
		if err := s.initialize(ctx, rpc); err != nil {
			if ctx.Err() != nil { // removed while starting
				p.stop()
				return
			}
			s.log.Warn("MCP server did not initialize", "server", s.label, "err", err)
			select {
			case <-p.done:
				s.stderr.note("process %s before it finished initializing", p.exit)
				s.crashed(ctx, p.exit, started)
			default:
				s.stderr.note("initialize failed: %v", err)
				rpc.fail(fmt.Errorf("MCP server %s did not initialize: %w", s.label, err))
				p.stop()
				s.crashed(ctx, exitInfo{Err: fmt.Errorf("initialize: %w", err), At: time.Now()}, started)
			}
			continue
		}
		s.setState(StateReady, "")
		s.sup.toolsChanged(s.bot)
		select {
		case <-p.done:
		case <-ctx.Done():
			rpc.fail(fmt.Errorf("MCP server %s was removed", s.label))
			p.stop()
			return
		}
		s.stderr.note("process %s", p.exit)
		if p.exit.Err != nil {
			// The connection to the agent broke: the workspace stopped
			// or restarts. Not the server's fault.
			if _, err := s.sup.mgr.Agent(ctx, s.bot); err != nil {
				s.setState(StateWaiting, "the workspace stopped")
				continue
			}
		}
		s.crashed(ctx, p.exit, started)
	}
}

// crashed records an unwanted end and waits out the backoff, or leaves the
// server failed after too many crashes in a row.
func (s *server) crashed(ctx context.Context, exit exitInfo, started time.Time) {
	s.mu.Lock()
	if !started.IsZero() && exit.At.Sub(started) >= stableRun {
		s.consecutive = 0
	}
	s.consecutive++
	s.restarts++
	s.lastExit = &exit
	n := s.consecutive
	s.mu.Unlock()
	msg := fmt.Sprintf("MCP server %s %s%s", s.label, exit, s.stderr.suffix())
	s.log.Warn("MCP server ended", "server", s.label, "exit", exit.String(), "crashes_in_a_row", n)
	if n > maxRestarts {
		s.setState(StateFailed, fmt.Sprintf("%s; gave up after %d crashes in a row (adding the server again, or restarting the workspace, retries)", msg, maxRestarts))
		s.sup.toolsChanged(s.bot)
		select {
		case <-s.wake:
			s.mu.Lock()
			s.consecutive = 0
			s.mu.Unlock()
		case <-ctx.Done():
		}
		return
	}
	backoff := min(restartBackoff<<(n-1), maxRestartBackoff)
	s.setState(StateRestarting, fmt.Sprintf("%s; restarting in %s (crash %d of at most %d in a row)", msg, backoff, n, maxRestarts))
	s.sleep(ctx, backoff)
}

func (s *server) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.wake:
	case <-ctx.Done():
	}
}

// initialize performs the MCP handshake and lists the tools.
func (s *server) initialize(ctx context.Context, rpc *rpcClient) error {
	ictx, cancel := context.WithTimeout(ctx, s.sup.opts.InitTimeout)
	defer cancel()
	res, err := rpc.call(ictx, "initialize", map[string]any{
		"protocolVersion": initProtocolVersion,
		// berth passes the server's own requests on to the client of the
		// call that is running (see answer).
		"capabilities": map[string]any{"sampling": map[string]any{}, "elicitation": map[string]any{}, "roots": map[string]any{}},
		"clientInfo":   map[string]any{"name": "berth", "version": s.sup.opts.Version},
	}, nil, nil)
	if err != nil {
		return err
	}
	var init struct {
		ServerInfo json.RawMessage `json:"serverInfo"`
	}
	_ = json.Unmarshal(res, &init)
	if err := rpc.notify("notifications/initialized", nil); err != nil {
		return err
	}
	tools, err := listTools(ictx, rpc)
	if err != nil {
		return fmt.Errorf("tools/list: %w", err)
	}
	s.mu.Lock()
	s.tools, s.serverInfo = tools, init.ServerInfo
	s.mu.Unlock()
	return nil
}

// initProtocolVersion is what berth asks the bot's servers for: a version
// every current server speaks.
const initProtocolVersion = "2025-06-18"

// listTools reads every page of tools/list, up to the caps.
func listTools(ctx context.Context, rpc *rpcClient) ([]remoteTool, error) {
	var tools []remoteTool
	cursor := ""
	for page := 0; page < maxToolPages; page++ {
		params := map[string]any{}
		if cursor != "" {
			params["cursor"] = cursor
		}
		res, err := rpc.call(ctx, "tools/list", params, nil, nil)
		if err != nil {
			return nil, err
		}
		var list struct {
			Tools      []json.RawMessage `json:"tools"`
			NextCursor string            `json:"nextCursor"`
		}
		if err := json.Unmarshal(res, &list); err != nil {
			return nil, fmt.Errorf("malformed tools/list answer: %w", err)
		}
		for _, raw := range list.Tools {
			var t struct {
				Name string `json:"name"`
			}
			if json.Unmarshal(raw, &t) != nil || t.Name == "" || len(tools) >= maxToolsPerServer {
				continue
			}
			tools = append(tools, remoteTool{Name: t.Name, Raw: raw})
		}
		if list.NextCursor == "" {
			break
		}
		cursor = list.NextCursor
	}
	return tools, nil
}

// onMessage handles what the shared process sends besides answers.
func (s *server) onMessage(rpc *rpcClient, m *message) {
	if rpc.handle(m) {
		return
	}
	switch {
	case m.Method == "notifications/tools/list_changed":
		s.toolsListChanged(rpc)
	case m.Method == "notifications/message":
		s.log.Info("MCP server log", "server", s.label, "params", preview(m.Params))
	case m.isRequest():
		go s.answer(rpc, m)
	}
}

// answer responds to the server's own requests: ping itself, anything else
// (sampling, elicitation, roots) by asking the client of the call in
// flight. With no call in flight there is no client to ask.
func (s *server) answer(rpc *rpcClient, m *message) {
	if m.Method == "ping" {
		_ = rpc.respond(m.ID, map[string]any{}, nil)
		return
	}
	ask := rpc.asker()
	if ask == nil {
		if m.Method == "roots/list" {
			_ = rpc.respond(m.ID, map[string]any{"roots": []any{}}, nil)
			return
		}
		_ = rpc.respond(m.ID, nil, &rpcError{Code: codeMethodNotFound, Message: fmt.Sprintf(
			"%s reaches a client only during one of its tool calls; for a session of your own, connect to /bots/%s/mcp/%s", m.Method, s.bot, s.spec.Name)})
		return
	}
	res, err := ask(m.Method, m.Params)
	if err != nil {
		_ = rpc.respond(m.ID, nil, &rpcError{Code: codeServerGone, Message: err.Error()})
		return
	}
	_ = rpc.respond(m.ID, res, nil)
}

// toolsListChanged re-lists the tools. One listing runs at a time and a
// change announced during it is listed again afterwards, so an older
// listing can never overwrite a newer one.
func (s *server) toolsListChanged(rpc *rpcClient) {
	s.mu.Lock()
	if s.relisting {
		s.relistAgain = true
		s.mu.Unlock()
		return
	}
	s.relisting = true
	s.mu.Unlock()
	go func() {
		for {
			s.refreshTools(rpc)
			s.mu.Lock()
			again := s.relistAgain
			s.relistAgain, s.relisting = false, again
			s.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

func (s *server) refreshTools(rpc *rpcClient) {
	ctx, cancel := context.WithTimeout(context.Background(), s.sup.opts.InitTimeout)
	defer cancel()
	tools, err := listTools(ctx, rpc)
	if err != nil {
		s.log.Warn("could not re-list the tools of an MCP server", "server", s.label, "err", err)
		return
	}
	s.mu.Lock()
	if s.rpc != rpc {
		s.mu.Unlock()
		return
	}
	s.tools = tools
	s.mu.Unlock()
	s.sup.toolsChanged(s.bot)
}

// callTool calls a tool on the shared process.
func (s *server) callTool(ctx context.Context, tool string, args json.RawMessage, onProgress func(json.RawMessage), onRequest RequestHandler) (json.RawMessage, error) {
	s.mu.Lock()
	state, reason, rpc, lastExit := s.state, s.reason, s.rpc, s.lastExit
	s.mu.Unlock()
	if state != StateReady {
		switch {
		case reason == "" && state == StateStarting && lastExit != nil:
			// Starting again after a crash: the crash says why the
			// call cannot run, whether the call came during the
			// backoff or just after it.
			reason = fmt.Sprintf("it last %s, %s ago", lastExit, time.Since(lastExit.At).Round(time.Millisecond))
		case reason == "":
			reason = "it is " + string(state)
		}
		return nil, fmt.Errorf("%w: %s is %s: %s", errServerGone, s.label, state, reason)
	}
	params := map[string]any{"name": tool}
	if len(args) > 0 {
		params["arguments"] = args
	}
	return rpc.call(ctx, "tools/call", params, onProgress, onRequest)
}

// Info describes a registered server for mcp_server_list.
type Info struct {
	Name      string          `json:"name"`
	Command   string          `json:"command"`
	Args      []string        `json:"args,omitempty"`
	Cwd       string          `json:"cwd,omitempty"`
	EnvNames  []string        `json:"env_names,omitempty"`
	State     State           `json:"state"`
	Reason    string          `json:"reason,omitempty"`
	PID       int             `json:"pid,omitempty"`
	StartedAt *time.Time      `json:"started_at,omitempty"`
	Restarts  int             `json:"restarts"`
	LastExit  *ExitSummary    `json:"last_exit,omitempty"`
	ToolCount int             `json:"tool_count"`
	Tools     []string        `json:"tools,omitempty"`
	Server    json.RawMessage `json:"server_info,omitempty"`
	Stderr    []string        `json:"stderr_tail,omitempty"`
}

// ExitSummary is how the last process ended.
type ExitSummary struct {
	Code   int       `json:"code"`
	Signal string    `json:"signal,omitempty"`
	Error  string    `json:"error,omitempty"`
	At     time.Time `json:"at"`
}

func (s *server) info(stderrLines int) Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := Info{
		Name: s.spec.Name, Command: s.spec.Command, Args: s.spec.Args, Cwd: s.spec.Cwd,
		State: s.state, Reason: s.reason, Restarts: s.restarts, ToolCount: len(s.tools), Server: s.serverInfo,
	}
	for k := range s.spec.Env {
		in.EnvNames = append(in.EnvNames, k)
	}
	sort.Strings(in.EnvNames)
	if s.state == StateReady {
		in.PID = s.pid
		at := s.startedAt.UTC()
		in.StartedAt = &at
	}
	if e := s.lastExit; e != nil {
		in.LastExit = &ExitSummary{Code: e.Code, Signal: e.Signal, At: e.At.UTC()}
		if e.Err != nil {
			in.LastExit.Error = e.Err.Error()
		}
	}
	names := make([]string, 0, len(s.tools))
	for _, t := range s.tools {
		names = append(names, t.Name)
	}
	federated := federatedNames(s.spec.Name, names)
	for _, n := range names {
		if f, ok := federated[n]; ok {
			in.Tools = append(in.Tools, f)
		}
	}
	in.Stderr, _ = s.stderr.lines(stderrLines)
	return in
}

// federated returns the server's tools under their federated names; none
// while it is failed or stopped.
func (s *server) federated() []FederatedTool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == StateFailed || s.state == StateStopped {
		return nil
	}
	names := make([]string, 0, len(s.tools))
	for _, t := range s.tools {
		names = append(names, t.Name)
	}
	fed := federatedNames(s.spec.Name, names)
	out := make([]FederatedTool, 0, len(s.tools))
	for _, t := range s.tools {
		name, ok := fed[t.Name]
		if !ok {
			continue
		}
		out = append(out, FederatedTool{Name: name, Bot: s.bot, Server: s.spec.Name, Tool: t.Name, Definition: t.Raw})
	}
	return out
}

// FederatedTool is a bot's server's tool as it appears in berth's list.
type FederatedTool struct {
	Name   string // federated name
	Bot    string
	Server string
	Tool   string // the server's own name for it
	// Definition is the tool object the server listed, unchanged.
	Definition json.RawMessage
}
