package resources

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/mcpproxy"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/containerd/errdefs"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// MCPLogsTemplate is the stderr of one of the bot's own MCP servers.
const MCPLogsTemplate = "berth://bots/{bot_id}/mcp-servers/{name}/logs{?lines}"

// Caps and pace of subscriptions.
const (
	// MaxSubscriptionsPerSession bounds the resources one session (or one
	// subscriptions/listen stream) follows.
	MaxSubscriptionsPerSession = 64
	// notifyInterval is the shortest time between two
	// notifications/resources/updated of one session: changes in between
	// are coalesced, each URI named once.
	notifyInterval = 200 * time.Millisecond
	// retryInterval paces new tries of a notification that could not be
	// delivered.
	retryInterval = time.Second
	// How often the state of what has no change events of its own is
	// looked at while someone follows it.
	pollOutput    = 500 * time.Millisecond
	pollLogs      = time.Second
	pollWorkspace = 2 * time.Second
	// unreachableFor drops the subscriptions of a session that berth has
	// not been able to reach for that long (an HTTP session that never
	// opened its notification stream, or went away without ending).
	unreachableFor = 15 * time.Minute
)

// Live makes berth's resources subscribable (resources/subscribe, and the
// resource subscriptions of a 2026-07-28 subscriptions/listen stream): a
// file, as the workspace's agent sees it change (inotify); a background
// process's or terminal's output; the workspace's state; an MCP server's
// log. Each subscription is checked like a read of the resource, and
// notifications/resources/updated goes to exactly the sessions that
// subscribed, coalesced.
//
// mcp-go v1.2.1 only acknowledges resources/subscribe: it tracks nothing
// and routes no notifications/resources/updated (not even to 2026
// listeners: no session type of it implements
// SessionWithResourceSubscriptions). So Live does both, through hooks.
type Live struct {
	s   *server.MCPServer
	m   *workspace.Manager
	mcp *mcpproxy.Supervisor
	log *slog.Logger

	mu      sync.Mutex
	subs    map[subKey]*subscriber
	sources map[string]*source
}

// subKey names a subscriber: a session, or one subscriptions/listen
// stream of it.
type subKey struct {
	session string
	// For a listen stream: the request's id, and the session object that
	// serves it. Over HTTP on 2026-07-28 every request has a session of
	// its own, all without an id, so only the object tells two clients'
	// streams apart.
	listen string
	conn   server.ClientSession
}

type subscriber struct {
	key      subKey
	cs       server.ClientSession
	listenID any
	uris     map[string]*source
	pending  []string
	wake     chan struct{}
	stop     context.CancelFunc
	// unreachable is when a notification first could not be delivered,
	// zero while it can.
	unreachable time.Time
}

// source is one thing followed, shared by every URI and session that
// names it.
type source struct {
	key    string
	ready  chan struct{} // closed once started (or failed: err)
	err    error
	cancel context.CancelFunc
	subs   map[*subscriber]map[string]bool
}

// RegisterLive adds the MCP server log template (when sup is not nil) and
// makes resources subscribable. hooks must be the hooks s was built with,
// and s must declare the subscribe capability.
func RegisterLive(s *server.MCPServer, hooks *server.Hooks, m *workspace.Manager, sup *mcpproxy.Supervisor, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	l := &Live{s: s, m: m, mcp: sup, log: log.With("component", "subscriptions"),
		subs: map[subKey]*subscriber{}, sources: map[string]*source{}}
	if sup != nil {
		s.AddResourceTemplate(
			mcp.NewResourceTemplate(MCPLogsTemplate, "mcp-server-logs",
				mcp.WithTemplateDescription("The last lines (default 100, at most 1000) of one of the bot's MCP servers' stderr, with berth's notes of its starts and exits, as mcp_server_logs returns them. Subscribe to hear of new lines."),
				mcp.WithTemplateMIMEType("text/plain"),
			),
			l.readLogs,
		)
	}
	// resources/subscribe is answered by mcp-go, which cannot refuse one;
	// a request hook can, before it gets there.
	hooks.AddOnRequestInitialization(l.onRequest)
	hooks.AddAfterUnsubscribe(func(ctx context.Context, _ any, req *mcp.UnsubscribeRequest, _ *mcp.EmptyResult) {
		if cs := server.ClientSessionFromContext(ctx); cs != nil && req != nil {
			l.unsubscribe(subKey{session: cs.SessionID()}, req.Params.URI)
		}
	})
	hooks.AddBeforeSubscriptionsListen(l.onListen)
	hooks.AddAfterSubscriptionsListen(func(ctx context.Context, id any, _ *mcp.SubscriptionsListenRequest, _ *mcp.SubscriptionsListenResult) {
		l.endListen(ctx, id)
	})
	hooks.AddOnError(func(ctx context.Context, id any, method mcp.MCPMethod, _ any, _ error) {
		if method == mcp.MethodSubscriptionsListen {
			l.endListen(ctx, id)
		}
	})
	hooks.AddOnUnregisterSession(func(_ context.Context, cs server.ClientSession) {
		l.dropSession(cs.SessionID())
	})
}

// onRequest subscribes for a resources/subscribe request of the session
// protocols, or refuses it with the reason.
func (l *Live) onRequest(ctx context.Context, _ any, message any) error {
	raw, ok := message.(json.RawMessage)
	// Every request passes here, fs_write's megabytes too: a byte search
	// keeps the others from being decoded twice.
	if !ok || !bytes.Contains(raw, []byte(mcp.MethodResourcesSubscribe)) {
		return nil
	}
	var req struct {
		Method string `json:"method"`
		Params struct {
			URI  string    `json:"uri"`
			Meta *mcp.Meta `json:"_meta"`
		} `json:"params"`
	}
	if json.Unmarshal(raw, &req) != nil || req.Method != string(mcp.MethodResourcesSubscribe) || req.Params.URI == "" {
		return nil
	}
	if mcp.IsModernProtocol(req.Params.Meta.ProtocolVersion()) {
		// Removed in 2026-07-28 (subscriptions/listen replaces it); mcp-go
		// answers that.
		return nil
	}
	cs := server.ClientSessionFromContext(ctx)
	if cs == nil {
		return nil
	}
	if err := l.subscribe(ctx, subKey{session: cs.SessionID()}, cs, nil, req.Params.URI); err != nil {
		return fmt.Errorf("cannot subscribe to %s: %w", req.Params.URI, err)
	}
	return nil
}

// onListen subscribes a subscriptions/listen stream to the resources it
// asks for and leaves out of its request those it may not follow, so the
// stream's acknowledgement shows what was established.
func (l *Live) onListen(ctx context.Context, id any, req *mcp.SubscriptionsListenRequest) {
	cs := server.ClientSessionFromContext(ctx)
	if cs == nil || req == nil || id == nil {
		return
	}
	key := listenKey(cs, id)
	var kept []string
	for _, uri := range req.Params.Notifications.ResourceSubscriptions {
		if err := l.subscribe(ctx, key, cs, id, uri); err != nil {
			l.log.Info("resource subscription refused", "uri", uri, "err", err)
			continue
		}
		kept = append(kept, uri)
	}
	req.Params.Notifications.ResourceSubscriptions = kept
}

func listenKey(cs server.ClientSession, id any) subKey {
	return subKey{session: cs.SessionID(), listen: fmt.Sprint(id), conn: cs}
}

func (l *Live) endListen(ctx context.Context, id any) {
	if cs := server.ClientSessionFromContext(ctx); cs != nil && id != nil {
		key := listenKey(cs, id)
		l.drop(func(k subKey) bool { return k == key })
	}
}

// dropSession ends the subscriptions of a session that ended, its listen
// streams' included.
func (l *Live) dropSession(session string) {
	if session != "" {
		l.drop(func(k subKey) bool { return k.session == session })
	}
}

// subject is what a subscribable URI names.
type subject struct {
	key   string // the source's identity
	bot   string
	scope auth.Scope
	// start follows it, calling changed on every change, until ctx ends;
	// it returns once following, or why it cannot.
	start func(ctx context.Context, changed func()) error
}

// The templates a subscription's URI is matched against, parsed once.
var (
	filesTemplate    = parseTemplate(FilesTemplate)
	processTemplate  = parseTemplate(ProcessOutputTemplate)
	terminalTemplate = parseTemplate(TerminalOutputTemplate)
	wsTemplate       = parseTemplate(WorkspaceTemplate)
	logsTemplate     = parseTemplate(MCPLogsTemplate)
)

func parseTemplate(t string) *mcp.URITemplate {
	return mcp.NewResourceTemplate(t, "").URITemplate
}

// subjectOf parses a URI that can be subscribed to.
func (l *Live) subjectOf(uri string) (subject, error) {
	match := func(t *mcp.URITemplate) (func(string) string, bool) {
		vals := t.Match(uri)
		if vals == nil {
			return nil, false
		}
		return func(name string) string { return vals.Get(name).String() }, true
	}
	if v, ok := match(filesTemplate); ok {
		bot, file := v("bot_id"), path.Clean("/"+v("path"))
		return subject{key: "file\x00" + bot + "\x00" + file, bot: bot, scope: auth.ScopeRead,
			start: func(ctx context.Context, changed func()) error { return l.m.WatchFile(ctx, bot, file, changed) }}, nil
	}
	if v, ok := match(processTemplate); ok {
		bot, id, stream := v("bot_id"), v("process_id"), v("stream")
		if stream != "stdout" && stream != "stderr" {
			return subject{}, fmt.Errorf("%w: stream %q: stdout or stderr", errdefs.ErrInvalidArgument, stream)
		}
		return subject{key: "process\x00" + bot + "\x00" + id + "\x00" + stream, bot: bot, scope: auth.ScopeExec,
			start: l.poll(pollOutput, func(ctx context.Context) (string, error) {
				p, err := workspace.Ask(ctx, l.m, bot, func(a *client.Client) (wire.ProcessInfo, error) { return a.Process(ctx, id) })
				total := p.StdoutTotal
				if stream == "stderr" {
					total = p.StderrTotal
				}
				return fmt.Sprint(total, p.Running), err
			})}, nil
	}
	if v, ok := match(terminalTemplate); ok {
		bot, id := v("bot_id"), v("terminal_id")
		return subject{key: "terminal\x00" + bot + "\x00" + id, bot: bot, scope: auth.ScopeExec,
			start: l.poll(pollOutput, func(ctx context.Context) (string, error) {
				t, err := workspace.Ask(ctx, l.m, bot, func(a *client.Client) (wire.TerminalInfo, error) { return a.Terminal(ctx, id) })
				return fmt.Sprint(t.OutputTotal, t.Running), err
			})}, nil
	}
	if v, ok := match(wsTemplate); ok {
		bot := v("bot_id")
		if err := workspace.ValidateBotID(bot); err != nil {
			return subject{}, err
		}
		return subject{key: "workspace\x00" + bot, bot: bot, scope: auth.ScopeRead,
			start: l.poll(pollWorkspace, func(ctx context.Context) (string, error) {
				ws, err := l.m.Get(ctx, bot)
				if errdefs.IsNotFound(err) {
					// Following a workspace that does not exist (yet) is
					// fine: its creation is a change.
					return "none", nil
				}
				data, _ := json.Marshal(ws)
				return string(data), err
			})}, nil
	}
	if v, ok := match(logsTemplate); ok && l.mcp != nil {
		bot, name := v("bot_id"), v("name")
		return subject{key: "logs\x00" + bot + "\x00" + name, bot: bot, scope: auth.ScopeRead,
			start: l.poll(pollLogs, func(context.Context) (string, error) {
				last, total, err := l.mcp.Logs(bot, name, 1)
				return fmt.Sprint(total, last), err
			})}, nil
	}
	return subject{}, fmt.Errorf("%w: only files, process and terminal output, the workspace and MCP server logs can be subscribed to (%s, %s, %s, %s, %s)",
		errdefs.ErrInvalidArgument, FilesTemplate, ProcessOutputTemplate, TerminalOutputTemplate, WorkspaceTemplate, MCPLogsTemplate)
}

// poll follows what has no change events of its own by looking at its
// state every interval; a change of state is a change. The first look
// must succeed: it is what a subscriber is told when it cannot.
func (l *Live) poll(every time.Duration, state func(context.Context) (string, error)) func(context.Context, func()) error {
	return func(ctx context.Context, changed func()) error {
		last, err := state(ctx)
		if err != nil {
			return err
		}
		go func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				cur, err := state(ctx)
				if err != nil {
					// The process was forgotten, the workspace stopped:
					// one notification, and a read tells why.
					cur = "error: " + err.Error()
				}
				if cur != last {
					last = cur
					changed()
				}
			}
		}()
		return nil
	}
}

// subscribe makes key follow uri, after the checks a read of it passes.
func (l *Live) subscribe(ctx context.Context, key subKey, cs server.ClientSession, listenID any, uri string) error {
	subj, err := l.subjectOf(uri)
	if err != nil {
		return err
	}
	if err := auth.FromContext(ctx).Allow(subj.scope, subj.bot); err != nil {
		return err
	}
	if err := workspace.ValidateBotID(subj.bot); err != nil {
		return err
	}

	l.mu.Lock()
	sub := l.subs[key]
	if sub != nil && sub.uris[uri] != nil {
		l.mu.Unlock()
		return nil
	}
	if sub != nil && len(sub.uris) >= MaxSubscriptionsPerSession {
		l.mu.Unlock()
		return fmt.Errorf("%w: this session follows %d resources already, the most it may; unsubscribe from one first", errdefs.ErrResourceExhausted, MaxSubscriptionsPerSession)
	}
	src := l.sources[subj.key]
	starter := src == nil
	if starter {
		srcCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		src = &source{key: subj.key, ready: make(chan struct{}), cancel: cancel, subs: map[*subscriber]map[string]bool{}}
		l.sources[subj.key] = src
		l.mu.Unlock()
		src.err = subj.start(srcCtx, func() { l.changed(src) })
		l.mu.Lock()
		if src.err != nil {
			cancel()
			delete(l.sources, subj.key)
		}
		close(src.ready)
	} else {
		l.mu.Unlock()
		select {
		case <-src.ready:
		case <-ctx.Done():
			return ctx.Err()
		}
		l.mu.Lock()
		if src.err == nil && l.sources[subj.key] != src {
			// Ended meanwhile by its last subscriber: start anew.
			l.mu.Unlock()
			return l.subscribe(ctx, key, cs, listenID, uri)
		}
	}
	defer l.mu.Unlock()
	if src.err != nil {
		return src.err
	}
	sub = l.subs[key]
	if sub == nil {
		sub = l.newSubscriber(key, cs, listenID)
	}
	if sub.uris[uri] != nil {
		return nil
	}
	if len(sub.uris) >= MaxSubscriptionsPerSession {
		l.release(src, sub, uri)
		return fmt.Errorf("%w: this session follows %d resources already, the most it may; unsubscribe from one first", errdefs.ErrResourceExhausted, MaxSubscriptionsPerSession)
	}
	l.log.Debug("resource subscribed", "session", key.session, "listen", key.listen, "uri", uri)
	sub.uris[uri] = src
	if src.subs[sub] == nil {
		src.subs[sub] = map[string]bool{}
	}
	src.subs[sub][uri] = true
	return nil
}

// newSubscriber registers one and starts its sender; l.mu is held.
func (l *Live) newSubscriber(key subKey, cs server.ClientSession, listenID any) *subscriber {
	ctx, stop := context.WithCancel(context.Background())
	sub := &subscriber{key: key, cs: cs, listenID: listenID, uris: map[string]*source{}, wake: make(chan struct{}, 1), stop: stop}
	l.subs[key] = sub
	go l.send(ctx, sub)
	return sub
}

func (l *Live) unsubscribe(key subKey, uri string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sub := l.subs[key]
	if sub == nil {
		return
	}
	if src := sub.uris[uri]; src != nil {
		delete(sub.uris, uri)
		l.release(src, sub, uri)
	}
	if len(sub.uris) == 0 {
		delete(l.subs, key)
		sub.stop()
	}
}

// release takes sub's uri off src, and ends src once nobody follows it;
// l.mu is held.
func (l *Live) release(src *source, sub *subscriber, uri string) {
	if uris := src.subs[sub]; uris != nil {
		delete(uris, uri)
		if len(uris) == 0 {
			delete(src.subs, sub)
		}
	}
	if len(src.subs) == 0 && l.sources[src.key] == src {
		delete(l.sources, src.key)
		src.cancel()
	}
}

// drop ends every subscriber whose key matches.
func (l *Live) drop(match func(subKey) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, sub := range l.subs {
		if !match(key) {
			continue
		}
		for uri, src := range sub.uris {
			l.release(src, sub, uri)
		}
		delete(l.subs, key)
		sub.stop()
	}
}

// changed queues a notification of src's URIs for each of its
// subscribers.
func (l *Live) changed(src *source) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for sub, uris := range src.subs {
		for uri := range uris {
			if !containsURI(sub.pending, uri) {
				sub.pending = append(sub.pending, uri)
			}
		}
		select {
		case sub.wake <- struct{}{}:
		default:
		}
	}
}

func containsURI(list []string, uri string) bool {
	for _, u := range list {
		if u == uri {
			return true
		}
	}
	return false
}

// send delivers sub's notifications, at most one per URI per
// notifyInterval. One that cannot be delivered yet (an HTTP session whose
// client has not opened its stream yet, a full channel) is tried again.
func (l *Live) send(ctx context.Context, sub *subscriber) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.wake:
		}
		l.mu.Lock()
		pending := sub.pending
		sub.pending = nil
		l.mu.Unlock()
		var failed []string
		for _, uri := range pending {
			err := l.notify(sub, uri)
			l.log.Debug("resource updated", "session", sub.key.session, "uri", uri, "err", err)
			if l.unreachable(sub, err) {
				return
			}
			if err != nil {
				failed = append(failed, uri)
			}
		}
		wait := notifyInterval
		if len(failed) > 0 {
			l.mu.Lock()
			for _, uri := range failed {
				if !containsURI(sub.pending, uri) {
					sub.pending = append(sub.pending, uri)
				}
			}
			l.mu.Unlock()
			wait = retryInterval
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if len(failed) > 0 {
			select {
			case sub.wake <- struct{}{}:
			default:
			}
		}
	}
}

func (l *Live) notify(sub *subscriber, uri string) error {
	if sub.listenID == nil {
		// The session's own stream: over HTTP, the one its client opened
		// with GET; a session without one cannot be told (ErrSessionNotFound).
		return l.s.SendNotificationToSpecificClient(sub.key.session, string(mcp.MethodNotificationResourceUpdated), map[string]any{"uri": uri})
	}
	// A subscriptions/listen stream: tagged with its id, as 2026-07-28
	// asks, on the stream's session.
	n := mcp.JSONRPCNotification{
		JSONRPC: mcp.JSONRPC_VERSION,
		Notification: mcp.Notification{
			Method: string(mcp.MethodNotificationResourceUpdated),
			Params: mcp.NotificationParams{
				Meta:             map[string]any{mcp.MetaKeySubscriptionID: sub.listenID},
				AdditionalFields: map[string]any{"uri": uri},
			},
		},
	}
	select {
	case sub.cs.NotificationChannel() <- n:
		return nil
	default:
		return server.ErrNotificationChannelBlocked
	}
}

// unreachable notes a failed delivery and says whether sub is to be
// dropped: it has not been reachable for unreachableFor.
func (l *Live) unreachable(sub *subscriber, err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil || !errors.Is(err, server.ErrSessionNotFound) {
		sub.unreachable = time.Time{}
		return false
	}
	if sub.unreachable.IsZero() {
		sub.unreachable = time.Now()
		return false
	}
	if time.Since(sub.unreachable) < unreachableFor {
		return false
	}
	for uri, src := range sub.uris {
		l.release(src, sub, uri)
	}
	if l.subs[sub.key] == sub {
		delete(l.subs, sub.key)
	}
	sub.stop()
	return true
}

func (l *Live) readLogs(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
	bot, _ := argument(req, "bot_id")
	name, _ := argument(req, "name")
	if err := auth.FromContext(ctx).Allow(auth.ScopeRead, bot); err != nil {
		return nil, err
	}
	n, err := queryInt(req, "lines", 0, mcpproxy.MaxLogLines)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		n = 100
	}
	lines, _, err := l.mcp.Logs(bot, name, int(n))
	if err != nil {
		return nil, err
	}
	return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "text/plain", Text: strings.Join(lines, "\n")}}, nil
}
