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
// by guessing its JSON-RPC id) and the tasks a tasks/list shows. So berth
// serves each modern request with a modernSession: the id is the caller's
// credential (what it shares with its own later requests, and with no
// other token's), and the per-session state lives in the request only.

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

// maxShimBytes bounds the messages modernShim reads: a
// notifications/cancelled or a server/discover is a few hundred bytes.
const maxShimBytes = 64 << 10

// modernShim adjusts two modern messages before mcp-go sees them; any other
// message passes as it came.
//
//   - The go-sdk's notifications/cancelled carries the protocol version in
//     the Mcp-Protocol-Version header but not in _meta, which mcp-go
//     requires of a modern message (it answers 400 and the call runs on).
//     The header is checked like any other; berth copies it into _meta.
//   - A server/discover from a client that can be asked (elicitation or
//     sampling) is answered with the session versions only, so the client
//     falls back to initialize: berth asks (network approvals, the bots'
//     own servers' sampling and elicitation) with server-initiated
//     requests, which 2026-07-28 removed, and berth does not speak its
//     multi round-trip replacement yet.
func modernShim(next http.Handler) http.Handler {
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
		var msg shimMessage
		if json.Unmarshal(body, &msg) == nil {
			switch {
			case msg.Method == string(mcp.MethodNotificationCancelled) && msg.ID == nil:
				body = withMetaVersion(body, version)
			case msg.Method == string(mcp.MethodServerDiscover) && msg.ID != nil && msg.askable():
				res := mcp.UnsupportedProtocolVersionError{Version: version, Supported: sessionProtocolVersions()}.JSONRPCError()
				res.ID = mcp.NewRequestId(msg.ID)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(res)
				return
			}
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// shimMessage is what modernShim reads of a message.
type shimMessage struct {
	ID     any    `json:"id"`
	Method string `json:"method"`
	Params struct {
		Meta map[string]json.RawMessage `json:"_meta"`
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

// withMetaVersion returns body with version in its params' _meta, or body
// unchanged where it names one already or is not an object.
func withMetaVersion(body []byte, version string) []byte {
	var msg map[string]json.RawMessage
	if json.Unmarshal(body, &msg) != nil {
		return body
	}
	params := map[string]json.RawMessage{}
	if p := msg["params"]; p != nil && json.Unmarshal(p, &params) != nil {
		return body
	}
	meta := map[string]json.RawMessage{}
	if m := params["_meta"]; m != nil && json.Unmarshal(m, &meta) != nil {
		return body
	}
	if _, ok := meta[mcp.MetaKeyProtocolVersion]; ok {
		return body
	}
	meta[mcp.MetaKeyProtocolVersion], _ = json.Marshal(version)
	params["_meta"], _ = json.Marshal(meta)
	msg["params"], _ = json.Marshal(params)
	out, err := json.Marshal(msg)
	if err != nil {
		return body
	}
	return out
}
