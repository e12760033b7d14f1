// Package audit writes berth's audit log: one JSON line per tool call,
// resource read and use of an HTTP endpoint, saying who (the token), on
// what (the bot, the tool or endpoint), with what outcome (allowed, denied,
// failed) and how long it took. It never records argument values, file
// contents or error texts, which may carry both. It does not decide
// outcomes; the transports that call it do.
package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
	"unicode/utf8"
)

// Outcome is how a call ended.
type Outcome string

const (
	Allowed Outcome = "allowed" // authorized and succeeded
	Denied  Outcome = "denied"  // refused: bad or missing token, scope, bot, origin, another token's session
	Failed  Outcome = "failed"  // authorized, but it did not succeed
)

// Kinds of record.
const (
	KindTool     = "tool"
	KindResource = "resource"
	KindHTTP     = "http"
)

// Record is one line of the audit log.
type Record struct {
	Time time.Time `json:"time"`
	// Token names the credential ("admin token", "token:<name>"); empty
	// when none was presented or it was not valid.
	Token string `json:"token"`
	Bot   string `json:"bot,omitempty"`
	Kind  string `json:"kind"`
	// Tool is a tool's name, Resource a resource's kind (workspace,
	// files, ...; never its path), Endpoint an HTTP route ("GET
	// /bots/{bot_id}/files").
	Tool     string  `json:"tool,omitempty"`
	Resource string  `json:"resource,omitempty"`
	Endpoint string  `json:"endpoint,omitempty"`
	Outcome  Outcome `json:"outcome"`
	// Reason says why a call was denied, in a few fixed words.
	Reason     string  `json:"reason,omitempty"`
	Status     int     `json:"status,omitempty"`
	DurationMS float64 `json:"duration_ms"`
}

// Logger writes records as JSON lines. A nil *Logger writes nothing, so
// callers need no checks when auditing is off.
type Logger struct {
	log *slog.Logger

	mu     sync.Mutex
	w      io.Writer
	closer io.Closer
	broken bool
}

// Open returns the logger that spec names: "stderr", "off" (nil, nothing
// written) or the path of a file, appended to and created 0600 (the log
// says who did what).
func Open(spec string, stderr io.Writer, log *slog.Logger) (*Logger, error) {
	if log == nil {
		log = slog.Default()
	}
	switch spec {
	case "off", "none":
		return nil, nil
	case "", "stderr", "-":
		return &Logger{w: stderr, log: log}, nil
	}
	f, err := os.OpenFile(spec, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--audit-log: %w", err)
	}
	return &Logger{w: f, closer: f, log: log}, nil
}

// New returns a logger writing to w.
func New(w io.Writer) *Logger { return &Logger{w: w, log: slog.Default()} }

// Log writes r, stamping its time when unset. A write error is reported
// once in berth's log, not to the caller: auditing must not fail calls.
func (l *Logger) Log(r Record) {
	if l == nil {
		return
	}
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Time = r.Time.UTC()
	// Every text field but the fixed ones can come from the caller (a bot id
	// that is not one, a route's path), so each is cut to a length no
	// honest value needs: a line costs what berth chose, not the caller.
	for _, f := range []*string{&r.Token, &r.Bot, &r.Tool, &r.Resource, &r.Endpoint, &r.Reason} {
		*f = clip(*f)
	}
	line, err := json.Marshal(r)
	if err != nil {
		return
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.w.Write(line); err != nil && !l.broken {
		l.broken = true
		l.log.Error("cannot write the audit log", "err", err)
	}
}

// Since is the duration from start in milliseconds, as records carry it.
func Since(start time.Time) float64 {
	return float64(time.Since(start).Microseconds()) / 1000
}

// Close closes the file the logger writes to, if it opened one.
func (l *Logger) Close() error {
	if l == nil || l.closer == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closer.Close()
}

// maxField is the longest text field a record keeps; a longer one is cut and
// marked.
const maxField = 200

func clip(s string) string {
	if len(s) <= maxField {
		return s
	}
	cut := maxField
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
