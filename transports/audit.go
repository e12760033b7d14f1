package transports

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/audit"
)

// The audit log is hooked in three places, each covering every member of
// its kind: a tool and a resource middleware (in mcpserver), and the HTTP
// middleware here around every route. No tool or handler logs for itself.

// httpAudit is the audit state of one HTTP request, filled in by the
// handlers it passes through (authenticate sets the token, guards mark a
// refusal).
type httpAudit struct {
	token  string
	denied bool
	reason string
}

type httpAuditKey struct{}

// markDenied records that r was refused for reason (a few fixed words,
// never a value from the request).
func markDenied(r *http.Request, reason string) {
	if st, ok := r.Context().Value(httpAuditKey{}).(*httpAudit); ok {
		st.denied, st.reason = true, reason
	}
}

func setAuditToken(r *http.Request, id string) {
	if st, ok := r.Context().Value(httpAuditKey{}).(*httpAudit); ok {
		st.token = id
	}
}

// auditHTTP records each request to a route: every one when all is set
// (the per-bot endpoints, /metrics), else only refused ones (/mcp, whose
// tool calls and resource reads have lines of their own). 401 and 403 are
// refusals; other statuses of 400 and above are failures.
func auditHTTP(a *audit.Logger, all bool, next http.Handler) http.Handler {
	if a == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		st := &httpAudit{}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), httpAuditKey{}, st)))
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		rec := audit.Record{
			Kind: audit.KindHTTP, Token: st.token, Bot: r.PathValue("bot_id"),
			Endpoint: r.Method + " " + routeOf(r), Status: status, Outcome: audit.Allowed,
		}
		switch {
		case st.denied:
			rec.Outcome, rec.Reason = audit.Denied, st.reason
		case status == http.StatusUnauthorized:
			rec.Outcome, rec.Reason = audit.Denied, "bad or missing token"
		case status == http.StatusForbidden:
			rec.Outcome, rec.Reason = audit.Denied, "not authorized"
		case status >= 400:
			rec.Outcome = audit.Failed
		}
		if !all && rec.Outcome != audit.Denied {
			return
		}
		rec.DurationMS = audit.Since(start)
		a.Log(rec)
	})
}

// routeOf is the pattern r matched, without its method: the route, not
// the path (which may carry a file's name).
func routeOf(r *http.Request) string {
	p := r.Pattern
	if i := strings.IndexByte(p, ' '); i >= 0 {
		p = p[i+1:]
	}
	if p == "" {
		p = r.URL.Path
	}
	return p
}

// statusWriter remembers the status of a response. It passes Flush (SSE
// streams) and Hijack (WebSockets) through.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the response cannot be hijacked")
	}
	if w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return hj.Hijack()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
