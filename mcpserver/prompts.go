package mcpserver

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/skills"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/berth-dev/berth/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"golang.org/x/sync/singleflight"
)

// skillPrompts serves a bot's effective skills as MCP prompts to the
// sessions limited to that bot (as for federated tools: on stdio the
// --bot flag's, over HTTP the one bot of the token or of /mcp?bot=), and
// tells those sessions when the list changed.
//
// mcp-go keeps prompts per server, not per session, so the server holds
// one handler per prompt name that some listed bot uses (the handler
// reads the skill of the caller's bot), and a filter shows each session
// only its bot's prompts, with its bot's descriptions. Two bots with a
// skill of the same name share the handler, never the skill. mcp-go tells
// every session when that set of names changes: a list_changed to a
// session of another bot only makes it list its own, unchanged, prompts.
type skillPrompts struct {
	d        tools.Deps
	stdioBot string
	s        *server.MCPServer

	// reads shares one reading of a bot's skills among the callers that
	// ask at the same time (many sessions listing at once).
	reads singleflight.Group

	mu         sync.Mutex
	sessions   map[string]string         // session id → its bot
	lists      map[string][]skills.Skill // bot whose prompts were listed → its effective skills, as last seen
	names      map[string]int            // prompt name → bots listing it
	registered map[string]bool           // prompt names s holds a handler for (see setLocked)
	// listeners are the subscriptions/listen streams of 2026-07-28
	// requests limited to one bot, which have no session: → their bot.
	listeners map[server.ClientSession]string
	// refreshing holds the bots whose prompts are being refreshed after a
	// command: true while one runs, false once a later command asked for
	// one more.
	refreshing map[string]bool
}

func newSkillPrompts(d tools.Deps, stdioBot string) *skillPrompts {
	return &skillPrompts{d: d, stdioBot: stdioBot, sessions: map[string]string{}, lists: map[string][]skills.Skill{}, names: map[string]int{},
		listeners: map[server.ClientSession]string{}, refreshing: map[string]bool{}, registered: map[string]bool{}}
}

// serverOptions declare prompts (with list_changed) and filter them per
// session.
func (p *skillPrompts) serverOptions() []server.ServerOption {
	return []server.ServerOption{
		server.WithPromptCapabilities(true),
		server.WithPromptFilter(p.filter),
		server.WithToolHandlerMiddleware(p.afterTools),
	}
}

// attach binds p to s and follows the sessions.
func (p *skillPrompts) attach(s *server.MCPServer, hooks *server.Hooks) {
	p.s = s
	hooks.AddOnRegisterSession(func(ctx context.Context, cs server.ClientSession) {
		if bot := p.botOf(ctx); bot != "" {
			p.mu.Lock()
			p.sessions[cs.SessionID()] = bot
			p.mu.Unlock()
		}
	})
	hooks.AddOnUnregisterSession(func(_ context.Context, cs server.ClientSession) {
		p.mu.Lock()
		delete(p.sessions, cs.SessionID())
		p.mu.Unlock()
	})
	hooks.AddBeforeAny(func(ctx context.Context, _ any, method mcp.MCPMethod, _ any) {
		cs := server.ClientSessionFromContext(ctx)
		bot := p.botOf(ctx)
		if method != mcp.MethodSubscriptionsListen || !server.IsModernRequest(ctx) || cs == nil || bot == "" {
			return
		}
		p.mu.Lock()
		p.listeners[cs] = bot
		p.mu.Unlock()
		go func() {
			<-ctx.Done() // the stream's end
			p.mu.Lock()
			delete(p.listeners, cs)
			p.mu.Unlock()
		}()
	})
}

// botOf is the one bot the caller is limited to, or "".
func (p *skillPrompts) botOf(ctx context.Context) string {
	if bot := sessionBot(auth.FromContext(ctx)); bot != "" {
		return bot
	}
	return p.stdioBot
}

// filter shows the caller its bot's prompts, read afresh (skills change
// inside the workspace too, by the bot's own commands); others see none.
func (p *skillPrompts) filter(ctx context.Context, _ []mcp.Prompt) []mcp.Prompt {
	bot := p.botOf(ctx)
	if bot == "" || auth.FromContext(ctx).Allow(auth.ScopeRead, bot) != nil {
		return nil
	}
	var self string
	if cs := server.ClientSessionFromContext(ctx); cs != nil {
		self = cs.SessionID()
	}
	list := p.refresh(ctx, bot, self)
	out := make([]mcp.Prompt, 0, len(list))
	for _, s := range list {
		out = append(out, mcp.NewPrompt(s.Name, mcp.WithPromptDescription(s.Description),
			mcp.WithArgument("task", mcp.ArgumentDescription("what to use the skill for (optional)"))))
	}
	return out
}

// refresh reads bot's effective skills; when they changed, it updates the
// prompts s serves and tells bot's sessions, but for except (the session
// that is listing them now). A bot without a running workspace has no
// prompts.
func (p *skillPrompts) refresh(ctx context.Context, bot, except string) []skills.Skill {
	list := p.effective(ctx, bot)
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, known := p.lists[bot]
	if known && slices.EqualFunc(prev, list, func(a, b skills.Skill) bool { return a.Name == b.Name && a.Description == b.Description }) {
		return list
	}
	announced := p.setLocked(bot, list)
	p.lists[bot] = list
	if announced {
		return list // s told every session and listen stream
	}
	for id, b := range p.sessions {
		if b == bot && id != except {
			_ = p.s.SendNotificationToSpecificClient(id, mcp.MethodNotificationPromptsListChanged, nil)
		}
	}
	for cs, b := range p.listeners {
		if b == bot {
			notifyStream(cs, mcp.MethodNotificationPromptsListChanged)
		}
	}
	return list
}

// effective reads bot's effective skills, sharing the reading with the
// callers that ask at the same time; a bot without a running workspace
// has none.
func (p *skillPrompts) effective(ctx context.Context, bot string) []skills.Skill {
	v, _, _ := p.reads.Do(bot, func() (any, error) {
		// Shared: one caller's cancel must not empty the others' list.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
		defer cancel()
		all, err := workspace.Ask(rctx, p.d.Manager, bot, func(a *client.Client) ([]skills.Skill, error) { return skills.List(rctx, a, p.d.Skills) })
		list := []skills.Skill{}
		if err != nil {
			return list, nil
		}
		for _, s := range all {
			if s.State == skills.StateEffective {
				list = append(list, s)
			}
		}
		return list, nil
	})
	return v.([]skills.Skill)
}

// maxIdlePrompts bounds the prompt names s keeps a handler for that no
// listed bot has any more.
const maxIdlePrompts = 1024

// setLocked makes bot's prompt names list. s needs a handler for every
// name some listed bot has, and tells every session (all bots') when it
// gains or loses one: so a name stays registered when its bots drop it
// (a skill switched off and on again, over and over, tells no one else),
// until maxIdlePrompts such names are dropped at once. It reports whether
// s told every session.
func (p *skillPrompts) setLocked(bot string, list []skills.Skill) (announced bool) {
	var add []server.ServerPrompt
	for _, s := range list {
		p.names[s.Name]++
		if !p.registered[s.Name] {
			p.registered[s.Name] = true
			add = append(add, server.ServerPrompt{Prompt: mcp.NewPrompt(s.Name), Handler: p.get})
		}
	}
	for _, s := range p.lists[bot] {
		if p.names[s.Name]--; p.names[s.Name] == 0 {
			delete(p.names, s.Name)
		}
	}
	if len(add) > 0 {
		p.s.AddPrompts(add...)
		announced = true
	}
	if len(p.registered)-len(p.names) > maxIdlePrompts {
		var idle []string
		for name := range p.registered {
			if p.names[name] == 0 {
				idle = append(idle, name)
				delete(p.registered, name)
			}
		}
		p.s.DeletePrompts(idle...)
		announced = true
	}
	return announced
}

// get is every skill prompt's handler: the SKILL.md of the caller's bot's
// skill of that name (the filter has checked the bot has it).
func (p *skillPrompts) get(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	bot, name := p.botOf(ctx), req.Params.Name
	if err := auth.FromContext(ctx).Allow(auth.ScopeRead, bot); err != nil {
		return nil, err
	}
	text, err := workspace.Ask(ctx, p.d.Manager, bot, func(a *client.Client) (string, error) { return skills.Read(ctx, a, p.d.Skills, name) })
	if err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("Use the skill %q of your workspace (bot %s). Its SKILL.md:\n\n%s", name, bot, text)
	if task := req.Params.Arguments["task"]; task != "" {
		msg += "\n\nThe task: " + task
	}
	return mcp.NewGetPromptResult("skill "+name+" of "+bot,
		[]mcp.PromptMessage{mcp.NewPromptMessage(mcp.RoleUser, mcp.NewTextContent(msg))}), nil
}

// skillTools are the tools after which a bot's skills may have changed.
var skillTools = []string{
	"skills_upsert", "skills_delete", "skills_action", "workspace_create", "workspace_start", "workspace_delete",
	"snapshot_rollback", "data_import", "data_restore", "fs_write", "fs_edit", "fs_delete", "fs_move", "fs_copy",
}

// commandTools run the bot's own commands, which may write its skills too
// (a bot often makes a skill with a shell command). Most do not, so the
// answer does not wait for the check: it runs after, in the background.
var commandTools = []string{"exec", "terminal_send"}

// afterTools refreshes the prompts of a bot whose prompts were listed after a call that may have
// changed its skills, so its sessions hear of it (before the call's answer, but for commands).
func (p *skillPrompts) afterTools(next server.ToolHandlerFunc) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		res, err := next(ctx, req)
		if err != nil {
			return res, err
		}
		bot, later := skillsMayHaveChanged(ctx, req, res)
		if bot == "" {
			return res, err
		}
		p.mu.Lock()
		_, listed := p.lists[bot]
		p.mu.Unlock()
		switch {
		case !listed:
		case later:
			p.refreshLater(context.WithoutCancel(ctx), bot)
		default:
			p.refresh(ctx, bot, "")
		}
		return res, err
	}
}

// skillsMayHaveChanged names the bot whose skills a finished call may have
// changed, or "", and whether to look later, in the background (after a
// command). A refused or failed call changed nothing (a command's own
// failure, a non-zero exit, is not an error of the call), and a caller
// that may not read the bot makes berth look at nothing of it.
func skillsMayHaveChanged(ctx context.Context, req mcp.CallToolRequest, res *mcp.CallToolResult) (bot string, later bool) {
	later = slices.Contains(commandTools, req.Params.Name)
	if res == nil || res.IsError || !(later || slices.Contains(skillTools, req.Params.Name)) {
		return "", false
	}
	var args struct {
		BotID string `json:"bot_id"`
	}
	raw := []byte(req.Params.RawArguments)
	if len(raw) == 0 {
		raw, _ = json.Marshal(req.Params.Arguments)
	}
	if json.Unmarshal(raw, &args) != nil || args.BotID == "" || auth.FromContext(ctx).Allow(auth.ScopeRead, args.BotID) != nil {
		return "", false
	}
	return args.BotID, later
}

// refreshLater refreshes bot's prompts in the background. Commands in
// quick succession share refreshes: one runs at a time per bot, and one
// more after it if a command ended meanwhile.
func (p *skillPrompts) refreshLater(ctx context.Context, bot string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, busy := p.refreshing[bot]; busy {
		p.refreshing[bot] = false
		return
	}
	p.refreshing[bot] = true
	go func() {
		for {
			p.refresh(ctx, bot, "")
			p.mu.Lock()
			if p.refreshing[bot] {
				delete(p.refreshing, bot)
				p.mu.Unlock()
				return
			}
			p.refreshing[bot] = true
			p.mu.Unlock()
			// A bot running commands in a loop gets its skills read at
			// most this often.
			time.Sleep(refreshPause)
		}
	}()
}

// refreshPause spaces the background refreshes of one bot.
const refreshPause = time.Second

// refreshTimeout bounds one reading of a bot's skills (an agent that
// stopped answering must not hold its readers for ever).
const refreshTimeout = time.Minute

// notifyStream sends method on a 2026-07-28 subscriptions/listen stream
// that asked for it; a stream too far behind misses it, as a session would.
func notifyStream(cs server.ClientSession, method string) {
	if fs, ok := cs.(server.SessionWithSubscriptionFilter); ok {
		filter, active := fs.SubscriptionFilter()
		if !active || (method == mcp.MethodNotificationPromptsListChanged && !filter.PromptsListChanged) {
			return
		}
	}
	select {
	case cs.NotificationChannel() <- mcp.JSONRPCNotification{JSONRPC: mcp.JSONRPC_VERSION, Notification: mcp.Notification{Method: method}}:
	default:
	}
}
