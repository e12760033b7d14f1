package mcpproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errhttp"
)

// Endpoint serves a bot's registered server as a streamable HTTP MCP
// endpoint. A stdio server serves one client, so every session gets its own
// process of the server, started on initialize and killed when the session
// is deleted or idles out; JSON-RPC passes through unchanged both ways.
type Endpoint struct {
	sup  *Supervisor
	opts EndpointOptions

	mu       sync.Mutex
	sessions map[string]*session
	stop     chan struct{}
	once     sync.Once
}

// EndpointOptions configure an Endpoint.
type EndpointOptions struct {
	// IdleTTL ends sessions without requests for this long.
	IdleTTL time.Duration
	// MaxSessions caps sessions in all; MaxSessionsPerBot per bot (each
	// is a process in the bot's workspace).
	MaxSessions       int
	MaxSessionsPerBot int
}

// Header names of streamable HTTP.
const (
	headerSessionID = "Mcp-Session-Id"
	// newestSessionVersion is the newest protocol version the endpoint
	// lets a client negotiate: later ones drop the sessions a stdio
	// server's one-client-per-process model needs.
	newestSessionVersion = "2025-11-25"
	keepAliveInterval    = 25 * time.Second
)

// NewEndpoint returns the proxy endpoint for s's servers.
func NewEndpoint(s *Supervisor, o EndpointOptions) *Endpoint {
	if o.IdleTTL <= 0 {
		o.IdleTTL = 30 * time.Minute
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 256
	}
	if o.MaxSessionsPerBot <= 0 {
		o.MaxSessionsPerBot = 16
	}
	e := &Endpoint{sup: s, opts: o, sessions: map[string]*session{}, stop: make(chan struct{})}
	go e.reapIdle()
	return e
}

// Target is what a request to the endpoint is for, and who makes it.
type Target struct {
	Bot, Server string
	// Caller names the authenticated caller: a session belongs to the
	// caller that opened it.
	Caller string
}

// Serve answers one HTTP request for a bot's server. The caller has
// authenticated and authorized it.
func (e *Endpoint) Serve(w http.ResponseWriter, r *http.Request, t Target) {
	switch r.Method {
	case http.MethodPost:
		e.post(w, r, t)
	case http.MethodGet:
		e.get(w, r, t)
	case http.MethodDelete:
		sess, ok := e.session(w, r, t)
		if ok {
			e.close(sess)
			w.WriteHeader(http.StatusNoContent)
		}
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (e *Endpoint) post(w http.ResponseWriter, r *http.Request, t Target) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxMessageBytes))
	if err != nil {
		http.Error(w, fmt.Sprintf("request body: %v (at most %d bytes)", err, MaxMessageBytes), http.StatusRequestEntityTooLarge)
		return
	}
	msgs, err := parseBody(body)
	if err != nil {
		writeRPCError(w, http.StatusBadRequest, nil, codeParseError, "parse error: "+err.Error())
		return
	}
	var sess *session
	if r.Header.Get(headerSessionID) == "" {
		if len(msgs) != 1 || msgs[0].Method != "initialize" || !msgs[0].isRequest() {
			writeRPCError(w, http.StatusBadRequest, nil, codeInvalidRequest, "no "+headerSessionID+" header: the first message of a session must be an initialize request")
			return
		}
		msgs[0].Params = capProtocolVersion(msgs[0].Params)
		if sess, err = e.open(r.Context(), t); err != nil {
			writeRPCError(w, httpStatus(err), msgs[0].ID, codeServerGone, err.Error())
			return
		}
		w.Header().Set(headerSessionID, sess.id)
	} else {
		var ok bool
		if sess, ok = e.session(w, r, t); !ok {
			return
		}
	}
	defer sess.busy()()

	var requests []*message
	for _, m := range msgs {
		if m.isRequest() {
			requests = append(requests, m)
		}
	}
	if ended := sess.endedErr(); ended != nil {
		if len(requests) == 0 {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		writeRPCError(w, http.StatusOK, requests[0].ID, codeServerGone, ended.Error())
		return
	}
	if len(requests) == 0 {
		for _, m := range msgs {
			if err := sess.p.sendMessage(m); err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
		}
		w.WriteHeader(http.StatusAccepted)
		return
	}

	if id, reused := sess.reusedID(requests); reused {
		writeRPCError(w, http.StatusBadRequest, id, codeInvalidRequest, fmt.Sprintf("request id %s is already in use by an unanswered request of this session", id))
		return
	}
	st := newStream()
	sess.track(st, requests)
	for _, m := range msgs {
		if err := sess.p.sendMessage(m); err != nil {
			// The process is going away; its end answers the requests.
			break
		}
	}
	e.streamAnswers(w, r, sess, st)
}

// streamAnswers writes the stream's messages as SSE events until every
// request it carries is answered or the client goes away; then the server
// is told to cancel what is left unanswered.
func (e *Endpoint) streamAnswers(w http.ResponseWriter, r *http.Request, sess *session, st *stream) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	defer func() {
		close(st.gone)
		for _, id := range sess.untrack(st) {
			_ = sess.p.sendMessage(map[string]any{"jsonrpc": "2.0", "method": "notifications/cancelled",
				"params": map[string]any{"requestId": id, "reason": "the client's HTTP request ended"}})
		}
	}()
	for {
		select {
		case line := <-st.ch:
			if writeEvent(w, rc, line) != nil {
				return
			}
		case <-st.finished:
			for {
				select {
				case line := <-st.ch:
					if writeEvent(w, rc, line) != nil {
						return
					}
				default:
					return
				}
			}
		case <-r.Context().Done():
			return
		}
	}
}

func (e *Endpoint) get(w http.ResponseWriter, r *http.Request, t Target) {
	sess, ok := e.session(w, r, t)
	if !ok {
		return
	}
	if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		http.Error(w, "GET opens an event stream: send Accept: text/event-stream", http.StatusNotAcceptable)
		return
	}
	defer sess.busy()()
	st := newStream()
	if !sess.attachStandalone(st) {
		http.Error(w, "this session already has a GET stream open", http.StatusConflict)
		return
	}
	defer func() {
		close(st.gone)
		sess.untrack(st)
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	ping := time.NewTicker(keepAliveInterval)
	defer ping.Stop()
	for {
		select {
		case line := <-st.ch:
			if writeEvent(w, rc, line) != nil {
				return
			}
		case <-ping.C:
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case <-sess.endedCh:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// session finds the request's session, answering 404 (the client then
// starts a new one, as the protocol says) when there is none.
func (e *Endpoint) session(w http.ResponseWriter, r *http.Request, t Target) (*session, bool) {
	id := r.Header.Get(headerSessionID)
	e.mu.Lock()
	sess := e.sessions[id]
	e.mu.Unlock()
	if sess == nil || sess.target != t {
		http.Error(w, "session not found: it ended or idled out; initialize a new one", http.StatusNotFound)
		return nil, false
	}
	return sess, true
}

// open starts a process of the server for a new session.
func (e *Endpoint) open(ctx context.Context, t Target) (*session, error) {
	bot := t.Bot
	spec, err := e.sup.Spec(bot, t.Server)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	perBot := 0
	for _, s := range e.sessions {
		if s.target.Bot == bot {
			perBot++
		}
	}
	full := len(e.sessions) >= e.opts.MaxSessions || perBot >= e.opts.MaxSessionsPerBot
	e.mu.Unlock()
	if full {
		return nil, fmt.Errorf("%w: too many proxy sessions (at most %d per bot, %d in all); end idle ones with HTTP DELETE",
			errdefs.ErrResourceExhausted, e.opts.MaxSessionsPerBot, e.opts.MaxSessions)
	}
	client, err := e.sup.mgr.Agent(ctx, bot)
	if err != nil {
		return nil, err
	}
	id, err := newSessionID()
	if err != nil {
		return nil, err
	}
	sess := newSession(id, t)
	label := bot + "/" + t.Server + " (session " + id[:8] + ")"
	p, err := startProc(ctx, client, label, spec, newStderrTail(), e.sup.log)
	if err != nil {
		return nil, err
	}
	sess.p = p
	p.serve(sess.route)
	go func() {
		<-p.done
		sess.end(p.exitError())
	}()
	e.mu.Lock()
	e.sessions[id] = sess
	e.mu.Unlock()
	e.sup.log.Info("MCP proxy session started", "bot", bot, "server", t.Server, "caller", t.Caller, "session", id[:8], "pid", p.pid())
	return sess, nil
}

func (e *Endpoint) close(sess *session) {
	e.mu.Lock()
	delete(e.sessions, sess.id)
	e.mu.Unlock()
	sess.p.stop()
	e.sup.log.Info("MCP proxy session ended", "bot", sess.target.Bot, "server", sess.target.Server, "session", sess.id[:8])
}

// reapIdle ends sessions that have been idle too long.
func (e *Endpoint) reapIdle() {
	t := time.NewTicker(min(e.opts.IdleTTL/2, 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			e.mu.Lock()
			var idle []*session
			for _, s := range e.sessions {
				if s.idleSince(now) >= e.opts.IdleTTL {
					idle = append(idle, s)
				}
			}
			e.mu.Unlock()
			for _, s := range idle {
				e.close(s)
			}
		}
	}
}

// Sessions counts the open proxy sessions.
func (e *Endpoint) Sessions() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sessions)
}

// Close ends every session.
func (e *Endpoint) Close() {
	e.once.Do(func() { close(e.stop) })
	e.mu.Lock()
	all := make([]*session, 0, len(e.sessions))
	for _, s := range e.sessions {
		all = append(all, s)
	}
	e.mu.Unlock()
	for _, s := range all {
		e.close(s)
	}
}

// parseBody decodes one message or a batch.
func parseBody(body []byte) ([]*message, error) {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, err
		}
		if len(raws) == 0 {
			return nil, errors.New("empty batch")
		}
		out := make([]*message, 0, len(raws))
		for _, raw := range raws {
			m, err := parseMessage(raw)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	}
	m, err := parseMessage(body)
	if err != nil {
		return nil, err
	}
	return []*message{m}, nil
}

// capProtocolVersion lowers a requested protocol version newer than the
// endpoint serves; the client accepts the lower one the server answers.
func capProtocolVersion(params json.RawMessage) json.RawMessage {
	var p map[string]json.RawMessage
	if json.Unmarshal(params, &p) != nil {
		return params
	}
	var v string
	if json.Unmarshal(p["protocolVersion"], &v) != nil || v <= newestSessionVersion {
		return params
	}
	p["protocolVersion"], _ = json.Marshal(newestSessionVersion)
	out, err := json.Marshal(p)
	if err != nil {
		return params
	}
	return out
}

func writeEvent(w io.Writer, rc *http.ResponseController, line []byte) error {
	line = bytes.TrimRight(line, "\r\n")
	if _, err := fmt.Fprintf(w, "event: message\ndata: %s\n\n", line); err != nil {
		return err
	}
	return rc.Flush()
}

func writeRPCError(w http.ResponseWriter, status int, id json.RawMessage, code int, msg string) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": id, "error": rpcError{Code: code, Message: msg}})
}

// httpStatus maps an error of opening a session to an HTTP status: by its
// class, as every berth endpoint does; an error of no known class means the
// bot's server could not be reached, which is the gateway's failure.
func httpStatus(err error) int {
	if status := errhttp.ToHTTP(err); status != http.StatusInternalServerError {
		return status
	}
	return http.StatusBadGateway
}

func newSessionID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
