package mcpproxy

import (
	"encoding/json"
	"sync"
	"time"
)

// session is one client's conversation with its own process of a bot's
// server, through the proxy endpoint. Messages pass through unchanged
// (ids included: the process serves this session only); the session only
// decides which HTTP stream carries each message of the server:
//
//   - an answer goes to the stream of the POST that sent the request;
//   - progress goes to the stream of the request that carries its token;
//   - anything else (server requests such as elicitation, logging,
//     list_changed) goes to the client's GET stream if it has one open,
//     else to the newest POST stream still waiting, else waits in a small
//     backlog for the next stream.
type session struct {
	id      string
	target  Target
	p       *proc
	created time.Time

	mu         sync.Mutex
	byID       map[string]*stream // request id → stream awaiting its answer
	byToken    map[string]*stream // progress token → stream of its request
	posts      []*stream          // open POST streams, oldest first
	standalone *stream            // the GET stream
	backlog    [][]byte
	lastActive time.Time
	open       int   // HTTP requests in progress
	ended      error // set once the process has ended
	endedCh    chan struct{}
}

// Caps of a proxy session.
const (
	streamBuffer   = 256
	maxBacklog     = 256
	deliverTimeout = 30 * time.Second
)

// stream is one HTTP response carrying server messages as SSE events.
type stream struct {
	ch     chan []byte
	gone   chan struct{} // the client went away
	ids    map[string]json.RawMessage
	tokens []string
	// waiting counts answers still due; when the last one has been
	// queued on ch, finished is closed and the response can end.
	waiting  int
	finished chan struct{}
}

func newStream() *stream {
	return &stream{ch: make(chan []byte, streamBuffer), gone: make(chan struct{}),
		ids: map[string]json.RawMessage{}, finished: make(chan struct{})}
}

// answered counts one answer as queued. Callers hold the session's lock.
func (st *stream) answeredLocked() {
	st.waiting--
	if st.waiting == 0 {
		close(st.finished)
	}
}

func newSession(id string, t Target) *session {
	return &session{
		id: id, target: t, created: time.Now(), lastActive: time.Now(),
		byID: map[string]*stream{}, byToken: map[string]*stream{}, endedCh: make(chan struct{}),
	}
}

// reusedID returns the id of a request among msgs that repeats another
// request's id in msgs or one still unanswered in the session. JSON-RPC
// forbids that; passing it on would leave one of the two unanswered.
func (s *session) reusedID(msgs []*message) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, m := range msgs {
		if !m.isRequest() {
			continue
		}
		k := idKey(m.ID)
		if seen[k] || s.byID[k] != nil {
			return m.ID, true
		}
		seen[k] = true
	}
	return nil, false
}

// track registers the requests among msgs on st before they are sent, so
// their answers cannot arrive unrouted.
func (s *session) track(st *stream, msgs []*message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		if !m.isRequest() {
			continue
		}
		k := idKey(m.ID)
		s.byID[k] = st
		st.ids[k] = m.ID
		st.waiting++
		if tok := progressToken(m.Params); tok != "" {
			s.byToken[tok] = st
			st.tokens = append(st.tokens, tok)
		}
	}
	s.posts = append(s.posts, st)
	s.flushBacklogLocked(st)
	if s.ended != nil {
		// The process ended after the caller checked endedErr and before
		// these requests were tracked: end has answered what was pending
		// then, so answer these now (off the lock, and not blocking the
		// caller, which has yet to start reading st).
		go s.answerPending(s.ended)
	}
}

// untrack forgets st; it returns the ids of requests still unanswered.
func (s *session) untrack(st *stream) []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var unanswered []json.RawMessage
	for k, id := range st.ids {
		if s.byID[k] == st {
			delete(s.byID, k)
			unanswered = append(unanswered, id)
		}
	}
	for _, tok := range st.tokens {
		if s.byToken[tok] == st {
			delete(s.byToken, tok)
		}
	}
	for i, p := range s.posts {
		if p == st {
			s.posts = append(s.posts[:i], s.posts[i+1:]...)
			break
		}
	}
	if s.standalone == st {
		s.standalone = nil
	}
	return unanswered
}

// route delivers a message of the server to the stream it belongs to.
func (s *session) route(m *message, line []byte) {
	s.mu.Lock()
	var st *stream
	switch {
	case m.isResponse():
		k := idKey(m.ID)
		st = s.byID[k]
		if st != nil {
			delete(s.byID, k)
			delete(st.ids, k)
		}
	case m.Method == "notifications/progress":
		st = s.byToken[progressToken(m.Params)]
	}
	if st == nil && !m.isResponse() {
		st = s.standalone
		if st == nil && len(s.posts) > 0 {
			st = s.posts[len(s.posts)-1]
		}
		if st == nil {
			if len(s.backlog) < maxBacklog {
				s.backlog = append(s.backlog, line)
			}
			s.mu.Unlock()
			return
		}
	}
	s.mu.Unlock()
	if st == nil {
		return
	}
	st.deliver(line)
	if m.isResponse() {
		s.mu.Lock()
		st.answeredLocked()
		s.mu.Unlock()
	}
}

// attachStandalone makes st the GET stream; false if one is open.
func (s *session) attachStandalone(st *stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.standalone != nil {
		return false
	}
	s.standalone = st
	s.flushBacklogLocked(st)
	return true
}

func (s *session) flushBacklogLocked(st *stream) {
	for _, line := range s.backlog {
		select {
		case st.ch <- line:
		default:
		}
	}
	s.backlog = nil
}

// deliver queues line on the stream, giving up on a client that stopped
// reading rather than holding up the whole session.
func (st *stream) deliver(line []byte) {
	t := time.NewTimer(deliverTimeout)
	defer t.Stop()
	select {
	case st.ch <- line:
	case <-st.gone:
	case <-t.C:
	}
}

// end records the end of the process and answers every request still
// waiting with the reason.
func (s *session) end(reason error) {
	s.mu.Lock()
	if s.ended != nil {
		s.mu.Unlock()
		return
	}
	s.ended = reason
	close(s.endedCh)
	s.mu.Unlock()
	s.answerPending(reason)
}

// answerPending answers every request still waiting with the reason the
// process ended.
func (s *session) answerPending(reason error) {
	type due struct {
		st *stream
		id json.RawMessage
	}
	var answers []due
	s.mu.Lock()
	for k, st := range s.byID {
		answers = append(answers, due{st, st.ids[k]})
		delete(st.ids, k)
	}
	s.byID = map[string]*stream{}
	s.mu.Unlock()
	for _, a := range answers {
		line, _ := encodeLine(errorResponse(a.id, codeServerGone, reason.Error()))
		a.st.deliver(line)
		s.mu.Lock()
		a.st.answeredLocked()
		s.mu.Unlock()
	}
}

func (s *session) endedErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// busy marks an HTTP request in progress (for the idle check); the
// returned func marks its end.
func (s *session) busy() func() {
	s.mu.Lock()
	s.open++
	s.lastActive = time.Now()
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.open--
		s.lastActive = time.Now()
		s.mu.Unlock()
	}
}

func (s *session) idleSince(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open > 0 {
		return 0
	}
	return now.Sub(s.lastActive)
}

// progressToken returns the key of params._meta.progressToken, or "".
func progressToken(params json.RawMessage) string {
	if len(params) == 0 {
		return ""
	}
	var p struct {
		Meta *struct {
			Token json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
		Token json.RawMessage `json:"progressToken"` // in notifications/progress
	}
	if json.Unmarshal(params, &p) != nil {
		return ""
	}
	switch {
	case len(p.Token) > 0:
		return idKey(p.Token)
	case p.Meta != nil && len(p.Meta.Token) > 0:
		return idKey(p.Meta.Token)
	}
	return ""
}
