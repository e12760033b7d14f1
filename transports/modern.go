package transports

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Protocol version 2026-07-28 has no sessions: mcp-go serves every such
// request with a fresh session whose id is "". What mcp-go keys by session
// id would then be shared by every modern request of every token: the
// session's own tools (federation), the in-flight requests a
// notifications/cancelled may end (any token could cancel another's call
// by guessing its JSON-RPC id; berth answers those itself, see
// modernCalls) and the tasks a tasks/list shows. So berth serves each
// modern request with a modernSession: the id is the caller's credential
// (what it shares with its own later requests, and with no other token's),
// and the per-session state lives in the request only.

// modernPrefix starts the session id of every 2026-07-28 request; minted
// session ids (sessions.go) start otherwise, so the two never meet.
const modernPrefix = "modern:"

// isModern reports whether r speaks 2026-07-28 or later. mcp-go refuses a
// modern request whose header and _meta disagree before berth sees it.
func isModern(r *http.Request) bool {
	return mcp.IsModernProtocol(r.Header.Get(mcp.HeaderProtocolVersion))
}

// modernBase is what berth forwards to mcp-go's own session of a modern
// request: its notification stream, its subscription filter (that of a
// subscriptions/listen stream, which mcp-go fans out to), its client info
// from _meta.
type modernBase interface {
	server.SessionWithLogging
	server.SessionWithClientInfo
	server.SessionWithStreamableHTTPConfig
	server.SessionWithSubscriptionFilter
}

// modernSession is a modern request's session as berth's tools and mcp-go's
// handlers see it.
type modernSession struct {
	modernBase
	id string

	mu        sync.Mutex
	tools     map[string]server.ServerTool
	resources map[string]server.ServerResource
	templates map[string]server.ServerResourceTemplate
}

var (
	_ server.SessionWithTools             = (*modernSession)(nil)
	_ server.SessionWithResources         = (*modernSession)(nil)
	_ server.SessionWithResourceTemplates = (*modernSession)(nil)
)

func (m *modernSession) SessionID() string { return m.id }

func (m *modernSession) GetSessionTools() map[string]server.ServerTool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tools
}

func (m *modernSession) SetSessionTools(t map[string]server.ServerTool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tools = t
}

func (m *modernSession) GetSessionResources() map[string]server.ServerResource {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.resources
}

func (m *modernSession) SetSessionResources(r map[string]server.ServerResource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resources = r
}

func (m *modernSession) GetSessionResourceTemplates() map[string]server.ServerResourceTemplate {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.templates
}

func (m *modernSession) SetSessionResourceTemplates(t map[string]server.ServerResourceTemplate) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.templates = t
}

// modernContext gives a modern request of r's caller its modernSession.
// A session that lacks what berth forwards (another mcp-go) is replaced by
// none: the request then fails rather than share state across tokens.
func modernContext(s *server.MCPServer, ctx context.Context, r *http.Request) context.Context {
	base, ok := server.ClientSessionFromContext(ctx).(modernBase)
	if !ok {
		return s.WithContext(ctx, nil)
	}
	return s.WithContext(ctx, &modernSession{modernBase: base, id: modernPrefix + callerID(r)})
}

// maxShimBytes bounds the messages modernShim reads: a call, a
// notifications/cancelled or a server/discover is rarely more. A larger
// call (an fs_write of a big file) passes unread, and is cancelled by
// closing its stream.
const maxShimBytes = 64 << 10

// modernCalls are the 2026-07-28 calls in flight, by credential and
// JSON-RPC id, so that a notifications/cancelled ends the call it names.
// mcp-go would look the id up under the request's session, and modern
// requests have none: ids are per client, and clients of one token often
// count from 1 alike, so berth cancels a call only when its token has
// exactly one in flight with that id (the go-sdk also closes the call's
// stream, which ends it whatever the ids). Another token's calls are never
// found.
type modernCalls struct {
	mu    sync.Mutex
	calls map[callKey][]*context.CancelFunc
}

type callKey struct{ caller, id string }

func newModernCalls() *modernCalls {
	return &modernCalls{calls: map[callKey][]*context.CancelFunc{}}
}

func keyOf(r *http.Request, id json.RawMessage) callKey {
	var b bytes.Buffer
	if json.Compact(&b, id) != nil {
		return callKey{callerID(r), string(id)}
	}
	return callKey{callerID(r), b.String()}
}

// track makes r's call cancellable by its id until done is called.
func (c *modernCalls) track(r *http.Request, id json.RawMessage) (tracked *http.Request, done func()) {
	ctx, cancel := context.WithCancel(r.Context())
	k, entry := keyOf(r, id), &cancel
	c.mu.Lock()
	c.calls[k] = append(c.calls[k], entry)
	c.mu.Unlock()
	return r.WithContext(ctx), func() {
		cancel()
		c.mu.Lock()
		defer c.mu.Unlock()
		if rest := slices.DeleteFunc(c.calls[k], func(e *context.CancelFunc) bool { return e == entry }); len(rest) > 0 {
			c.calls[k] = rest
		} else {
			delete(c.calls, k)
		}
	}
}

// cancel ends the call of r's credential with id, if it has exactly one.
func (c *modernCalls) cancel(r *http.Request, id json.RawMessage) {
	c.mu.Lock()
	entries := c.calls[keyOf(r, id)]
	c.mu.Unlock()
	if len(entries) == 1 {
		(*entries[0])()
	}
}

// shim serves what berth does itself of the modern messages, before
// mcp-go sees them; any other message passes as it came.
//
//   - A call (a request with an id) is tracked for its cancellation.
//   - A notifications/cancelled is answered here (see modernCalls); the
//     go-sdk's, which lacks the protocol version in _meta, would otherwise
//     be refused by mcp-go with a 400, on which the go-sdk ends its whole
//     connection.
//   - A server/discover from a client that can be asked (elicitation or
//     sampling) is answered with the session versions only, so the client
//     falls back to initialize: the bots' own MCP servers ask with
//     server-initiated requests, which 2026-07-28 removed, and berth
//     relays them as such (its own questions are multi round-trip, and
//     work in both eras).
func (c *modernCalls) shim(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		version := r.Header.Get(mcp.HeaderProtocolVersion)
		if r.Method != http.MethodPost || !mcp.IsModernProtocol(version) || r.ContentLength > maxShimBytes {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxShimBytes+1))
		if err != nil {
			http.Error(w, "reading the request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(body) > maxShimBytes {
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
			next.ServeHTTP(w, r)
			return
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		var msg shimMessage
		if json.Unmarshal(body, &msg) != nil {
			next.ServeHTTP(w, r)
			return
		}
		hasID := len(msg.ID) > 0 && string(msg.ID) != "null"
		switch {
		case msg.Method == string(mcp.MethodNotificationCancelled) && !hasID:
			if len(msg.Params.RequestID) > 0 {
				c.cancel(r, msg.Params.RequestID)
			}
			w.WriteHeader(http.StatusAccepted)
		case msg.Method == string(mcp.MethodServerDiscover) && hasID && msg.askable():
			var id any
			_ = json.Unmarshal(msg.ID, &id)
			res := mcp.UnsupportedProtocolVersionError{Version: version, Supported: sessionProtocolVersions()}.JSONRPCError()
			res.ID = mcp.NewRequestId(id)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(res)
		case hasID && msg.Method != "":
			tracked, done := c.track(r, msg.ID)
			defer done()
			next.ServeHTTP(w, tracked)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// shimMessage is what the shim reads of a message.
type shimMessage struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		RequestID json.RawMessage            `json:"requestId"`
		Meta      map[string]json.RawMessage `json:"_meta"`
	} `json:"params"`
}

// askable reports whether the client declared it can be asked.
func (m shimMessage) askable() bool {
	var caps struct {
		Elicitation json.RawMessage `json:"elicitation"`
		Sampling    json.RawMessage `json:"sampling"`
	}
	raw := m.Params.Meta[mcp.MetaKeyClientCapabilities]
	return raw != nil && json.Unmarshal(raw, &caps) == nil && (caps.Elicitation != nil || caps.Sampling != nil)
}

// sessionProtocolVersions are the HTTP versions with sessions.
func sessionProtocolVersions() []string {
	return slices.DeleteFunc(slices.Clone(httpProtocolVersions), mcp.IsModernProtocol)
}
