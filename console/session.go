package console

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/auth"
)

// Limits of the session store and the login.
const (
	// maxSessions bounds the store; past it logins are refused until
	// sessions expire or log out.
	maxSessions = 4096
	// maxSessionsPerToken bounds one credential's sessions; its oldest
	// goes when it logs in once more, so one token cannot fill the store.
	maxSessionsPerToken = 32
	// maxStreamsPerSession bounds the event streams of one session (a
	// few tabs); each costs a workspace listing every 2 s.
	maxStreamsPerSession = 4
	// loginFailuresPerMinute bounds the token guesses of one address.
	loginFailuresPerMinute = 10
	// maxLimitedAddrs bounds the addresses the login limit remembers.
	maxLimitedAddrs = 4096
	maxLoginBody    = 4 << 10
)

// session is one login. The cookie holds a random id; the store keys
// sessions by its hash, so neither the store nor a lookup's timing gives
// an id away, and the token itself is never stored nor sent back.
type session struct {
	key       [sha256.Size]byte
	principal *auth.Principal
	csrf      string
	created   time.Time
	expires   time.Time
	streams   int // open event streams; guarded by sessions.mu
}

type sessions struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[[sha256.Size]byte]*session
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, m: map[[sha256.Size]byte]*session{}}
}

var errTooManySessions = errors.New("too many console sessions are open; log out of some or wait until they expire")

// add starts a session for p and returns the cookie's value.
func (ss *sessions) add(p *auth.Principal) (id string, s *session, err error) {
	id, csrf := randomToken(), randomToken()
	now := time.Now()
	s = &session{key: sha256.Sum256([]byte(id)), principal: p, csrf: csrf, created: now, expires: now.Add(ss.ttl)}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var oldest *session
	mine := 0
	for k, o := range ss.m {
		if now.After(o.expires) {
			delete(ss.m, k)
			continue
		}
		if o.principal.ID == p.ID {
			mine++
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
	}
	if mine >= maxSessionsPerToken {
		delete(ss.m, oldest.key)
	} else if len(ss.m) >= maxSessions {
		return "", nil, errTooManySessions
	}
	ss.m[s.key] = s
	return id, s, nil
}

// get returns the live session of a cookie value, or nil.
func (ss *sessions) get(id string) *session {
	key := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[key]
	if s != nil && time.Now().After(s.expires) {
		delete(ss.m, key)
		return nil
	}
	return s
}

func (ss *sessions) remove(s *session) {
	ss.mu.Lock()
	delete(ss.m, s.key)
	ss.mu.Unlock()
}

// openStream counts a new event stream of s, false past the cap.
func (ss *sessions) openStream(s *session) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s.streams >= maxStreamsPerSession {
		return false
	}
	s.streams++
	return true
}

func (ss *sessions) closeStream(s *session) {
	ss.mu.Lock()
	s.streams--
	ss.mu.Unlock()
}

// alive says whether s is still in the store and unexpired: a stream ends
// when its session does.
func (ss *sessions) alive(s *session) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.m[s.key] == s && time.Now().Before(s.expires)
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// failureLimit counts failed logins per client address in fixed windows.
type failureLimit struct {
	max    int
	window time.Duration
	mu     sync.Mutex
	m      map[string]*failures
}

type failures struct {
	n     int
	start time.Time
}

func newFailureLimit(max int, window time.Duration) *failureLimit {
	return &failureLimit{max: max, window: window, m: map[string]*failures{}}
}

// limited says whether addr used up its failures; retry is when it may
// try again.
func (l *failureLimit) limited(addr string) (retry time.Duration, limited bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.m[addr]
	if f == nil || time.Since(f.start) >= l.window {
		return 0, false
	}
	return l.window - time.Since(f.start), f.n >= l.max
}

// fail counts a failure of addr. When the table is full of live windows a
// new address starts limited: a flood of addresses must not buy guesses.
func (l *failureLimit) fail(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	f := l.m[addr]
	if f == nil || now.Sub(f.start) >= l.window {
		if f == nil && len(l.m) >= maxLimitedAddrs {
			for a, o := range l.m {
				if now.Sub(o.start) >= l.window {
					delete(l.m, a)
				}
			}
		}
		n := 0
		if len(l.m) >= maxLimitedAddrs {
			n = l.max
		}
		f = &failures{n: n, start: now}
		l.m[addr] = f
	}
	f.n++
}

// clientAddr is the address a login is counted against: the peer's IP
// (forwarding headers are the client's to write).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// login turns a berth token into a session cookie.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	// Only JSON: a cross-site HTML form can post urlencoded, multipart or
	// text bodies, never this type.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		jsonError(w, http.StatusUnsupportedMediaType, `send the token as JSON {"token":"..."} with Content-Type: application/json`)
		return
	}
	addr := clientAddr(r)
	if retry, limited := c.failures.limited(addr); limited {
		w.Header().Set("Retry-After", strconv.Itoa(int(retry.Seconds())+1))
		jsonError(w, http.StatusTooManyRequests, "too many failed logins from this address; try again in a minute")
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, maxLoginBody)).Decode(&body); err != nil {
		jsonError(w, http.StatusBadRequest, `the body must be JSON {"token":"..."}`)
		return
	}
	var p *auth.Principal
	if body.Token != "" && c.o.Login != nil {
		p = c.o.Login(body.Token)
	}
	if p == nil {
		c.failures.fail(addr)
		jsonError(w, http.StatusUnauthorized, "invalid token: use berth's admin token (its token file) or a token of the --tokens-file")
		return
	}
	id, s, err := c.sessions.add(p)
	if err != nil {
		jsonError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	c.o.Logger.Info("console login", "token", p.ID, "addr", addr)
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: id, Path: "/", MaxAge: int(time.Until(s.expires).Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	w.WriteHeader(http.StatusNoContent)
}

// logout forgets the session and clears the cookie.
func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	c.sessions.remove(s)
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	w.WriteHeader(http.StatusNoContent)
}
