package transports

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/mark3labs/mcp-go/server"
)

// sessionOwners binds every /mcp session to the credential that opened it.
// A session id is a bearer of the session's notifications (progress,
// sampling requests) and of its end, so a request with another
// credential's session id is answered as if the session did not exist,
// whatever its method: mcp-go itself validates ids only on POST.
//
// It is also mcp-go's session id manager, so an id is owned from the
// moment mcp-go mints it (on initialize, or on a GET without a session).
type sessionOwners struct {
	mu     sync.Mutex
	owners map[string]string // session id → principal ID
	counts map[string]int    // principal ID → sessions it owns
}

// maxSessionsPerCaller bounds the sessions one credential holds at once
// (each costs memory until it ends or idles out): past it, a new session
// is refused until one ends.
const maxSessionsPerCaller = 256

func newSessionOwners() *sessionOwners {
	return &sessionOwners{owners: map[string]string{}, counts: map[string]int{}}
}

// full reports whether caller holds as many sessions as it may.
func (s *sessionOwners) full(caller string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[caller] >= maxSessionsPerCaller
}

// errNoSession is what mcp-go answers 404 for.
var errNoSession = errors.New("session not found")

// owner returns the principal ID that owns id.
func (s *sessionOwners) owner(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.owners[id]
	return o, ok
}

// ResolveSessionIdManager returns a manager acting for r's caller; r is
// nil when mcp-go's idle sweeper or shutdown ends sessions.
func (s *sessionOwners) ResolveSessionIdManager(r *http.Request) server.SessionIdManager {
	m := ownedIDs{s: s}
	if r != nil {
		m.caller = callerID(r)
		m.forCaller = true
	}
	return m
}

// callerID is the credential ID of r's principal; "" when none.
func callerID(r *http.Request) string {
	if p := auth.FromContext(r.Context()); p != nil {
		return p.ID
	}
	return ""
}

// ownedIDs is sessionOwners seen by one caller.
type ownedIDs struct {
	s         *sessionOwners
	caller    string
	forCaller bool
}

func (m ownedIDs) Generate() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	id := "mcp-session-" + hex.EncodeToString(b)
	m.s.mu.Lock()
	m.s.owners[id] = m.caller
	m.s.counts[m.caller]++
	m.s.mu.Unlock()
	return id
}

func (m ownedIDs) Validate(id string) (isTerminated bool, err error) {
	owner, ok := m.s.owner(id)
	if !ok || (m.forCaller && owner != m.caller) {
		return false, errNoSession
	}
	return false, nil
}

func (m ownedIDs) Terminate(id string) (isNotAllowed bool, err error) {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	if owner, ok := m.s.owners[id]; ok && (!m.forCaller || owner == m.caller) {
		delete(m.s.owners, id)
		if m.s.counts[owner]--; m.s.counts[owner] <= 0 {
			delete(m.s.counts, owner)
		}
	}
	return false, nil
}

// guard answers 404 to any request naming a session that is unknown or
// belongs to another credential, before mcp-go sees it: mcp-go would open
// a GET stream on, replay events of, or end any session id it is given.
func (s *sessionOwners) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(server.HeaderKeySessionID)
		if id == "" {
			// A request without a session may open one (2026-07-28
			// requests never do).
			if !isModern(r) && s.full(callerID(r)) {
				markDenied(r, "too many sessions")
				http.Error(w, fmt.Sprintf("this token holds %d MCP sessions, the most it may: end one (DELETE /mcp with its Mcp-Session-Id) or let one idle out", maxSessionsPerCaller),
					http.StatusTooManyRequests)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		owner, ok := s.owner(id)
		if ok && owner == callerID(r) {
			next.ServeHTTP(w, r)
			return
		}
		if ok {
			// Someone holds another credential's session id: worth an
			// audit line, though the answer must not tell it apart.
			markDenied(r, "session of another token")
		}
		http.Error(w, "Invalid session ID", http.StatusNotFound)
	})
}
