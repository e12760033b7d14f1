package transports

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
)

// progressLog records, per session and progress token, the highest
// progress notification written to a client's stream, so that a tool's
// result can wait for its last progress (tools.ProgressWriter).
type progressLog struct {
	mu      sync.Mutex
	written map[progressKey]float64
	changed chan struct{} // closed and replaced on every record
}

type progressKey struct{ session, token string }

// maxProgressEntries bounds the log: entries are removed when their call
// waits for them, so only notifications no call waited for (a wait that
// gave up) stay, and those are dropped wholesale past this many.
const maxProgressEntries = 10000

func newProgressLog() *progressLog {
	return &progressLog{written: map[progressKey]float64{}, changed: make(chan struct{})}
}

// tokenKey is a progress token as JSON, the same whether it was decoded
// from the request or from the written notification.
func tokenKey(token any) string {
	data, _ := json.Marshal(token)
	return string(data)
}

// record notes one message written to session's stream, if it is a
// progress notification.
func (l *progressLog) record(session string, msg []byte) {
	if !bytes.Contains(msg, []byte(`"notifications/progress"`)) {
		return
	}
	var n struct {
		Method string `json:"method"`
		Params struct {
			Token    json.RawMessage `json:"progressToken"`
			Progress float64         `json:"progress"`
		} `json:"params"`
	}
	if json.Unmarshal(msg, &n) != nil || n.Method != "notifications/progress" {
		return
	}
	var token any
	if json.Unmarshal(n.Params.Token, &token) != nil {
		return
	}
	k := progressKey{session, tokenKey(token)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.written) >= maxProgressEntries {
		clear(l.written)
	}
	if p, ok := l.written[k]; !ok || n.Params.Progress > p {
		l.written[k] = n.Params.Progress
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// waitWritten waits until session's stream carried progress of token
// (true), or ctx ends (false), and forgets the token.
func (l *progressLog) waitWritten(ctx context.Context, session string, token any, progress float64) bool {
	k := progressKey{session, tokenKey(token)}
	l.mu.Lock()
	defer func() {
		delete(l.written, k)
		l.mu.Unlock()
	}()
	for {
		if p, ok := l.written[k]; ok && p >= progress {
			return true
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
		}
		l.mu.Lock()
		if ctx.Err() != nil {
			return false
		}
	}
}

// sessionProgress is a progressLog seen from one session.
type sessionProgress struct {
	log     *progressLog
	session string
}

func (s sessionProgress) WaitWritten(ctx context.Context, token any, progress float64) bool {
	return s.log.waitWritten(ctx, s.session, token, progress)
}

// stdioOut is the stdio server's stdout. mcp-go writes each message in one
// Write; this records the progress notifications among them. It also
// serialises writes: mcp-go's stdio session writes its server-to-client
// requests without the lock it takes for responses and notifications.
type stdioOut struct {
	mu  sync.Mutex
	w   io.Writer
	log *progressLog
}

func (o *stdioOut) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, err := o.w.Write(p)
	if err == nil {
		o.log.record("", p)
	}
	return n, err
}

// sseRecorder watches an /mcp response for the progress notifications it
// carries in its server-sent events, for the session of the request. A
// notification counts as written once it is flushed to the connection, not
// when it enters the response's buffer: only then can the client have it.
type sseRecorder struct {
	http.ResponseWriter
	log     *progressLog
	session string
	line    []byte   // an event's data line not yet complete
	pending [][]byte // complete data lines written but not yet flushed
}

func (r *sseRecorder) Write(p []byte) (int, error) {
	n, err := r.ResponseWriter.Write(p)
	if n > 0 && r.session != "" && strings.HasPrefix(r.ResponseWriter.Header().Get("Content-Type"), "text/event-stream") {
		r.scan(p[:n])
	}
	return n, err
}

// scan records each complete "data:" line of the stream.
func (r *sseRecorder) scan(p []byte) {
	r.line = append(r.line, p...)
	consumed := 0
	for {
		i := bytes.IndexByte(r.line[consumed:], '\n')
		if i < 0 {
			break
		}
		line := r.line[consumed : consumed+i]
		consumed += i + 1
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok && bytes.Contains(data, []byte(`"notifications/progress"`)) {
			r.pending = append(r.pending, bytes.Clone(bytes.TrimSpace(data)))
		}
	}
	r.line = append(r.line[:0], r.line[consumed:]...)
	if len(r.line) > 1<<20 {
		// Not a stream of lines after all; stop buffering it.
		r.line = r.line[:0]
	}
}

func (r *sseRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	r.recordPending()
}

// recordPending records the progress notifications flushed to the client.
func (r *sseRecorder) recordPending() {
	for _, data := range r.pending {
		r.log.record(r.session, data)
	}
	r.pending = r.pending[:0]
}

func (r *sseRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// recordProgress wraps /mcp so that the progress notifications written on
// a request's streams are recorded in log, under the request's progress
// stream (progressStreamOf): a session's id, whose notifications may leave
// on any of its streams (its POST responses and its GET stream alike), or,
// for a request without a session (2026-07-28), a key of its own, as its
// notifications leave on its own response only.
func recordProgress(log *progressLog, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stream := r.Header.Get("Mcp-Session-Id")
		if stream == "" && r.Method == http.MethodPost {
			stream = "request " + rand.Text()
		}
		rec := &sseRecorder{ResponseWriter: w, log: log, session: stream}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), progressStreamKey{}, stream)))
		// What is still unflushed goes out as the handler returns.
		rec.recordPending()
	})
}

type progressStreamKey struct{}

// progressStreamOf is the progress stream recordProgress gave r, or "".
func progressStreamOf(r *http.Request) string {
	s, _ := r.Context().Value(progressStreamKey{}).(string)
	return s
}
