package transports

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/berth-dev/berth/tools"
	"github.com/coder/websocket"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errhttp"
)

// botRoutes serves the per-bot HTTP endpoints for what does not fit MCP
// messages: streamed file downloads and uploads of any size, and a
// terminal WebSocket for people. They use the same auth as /mcp.
type botRoutes struct {
	m       *workspace.Manager
	origins []string
}

func (b botRoutes) register(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	mux.Handle("GET /bots/{bot_id}/files", wrap(http.HandlerFunc(b.download)))
	mux.Handle("PUT /bots/{bot_id}/files", wrap(http.HandlerFunc(b.upload)))
	mux.Handle("GET /bots/{bot_id}/terminal/ws", wrap(http.HandlerFunc(b.terminal)))
	mux.Handle("GET /bots/{bot_id}/data/export", wrap(http.HandlerFunc(b.exportData)))
	mux.Handle("PUT /bots/{bot_id}/data/import", wrap(http.HandlerFunc(b.importData)))
}

// allow authorizes the caller for scope on the request's bot, or writes
// the refusal.
func allow(w http.ResponseWriter, r *http.Request, scope auth.Scope) (string, bool) {
	bot := r.PathValue("bot_id")
	if err := auth.FromContext(r.Context()).Allow(scope, bot); err != nil {
		httpError(w, statusOf(err), err)
		return "", false
	}
	return bot, true
}

// download streams a file out of the workspace without buffering it.
func (b botRoutes) download(w http.ResponseWriter, r *http.Request) {
	bot, ok := allow(w, r, auth.ScopeRead)
	if !ok {
		return
	}
	ctx, path := r.Context(), r.URL.Query().Get("path")
	var fi wire.FileInfo
	rc, err := workspace.Ask(ctx, b.m, bot, func(a *client.Client) (rc io.ReadCloser, err error) {
		rc, fi, err = a.ReadRange(ctx, path, 0, -1)
		return rc, err
	})
	if err != nil {
		httpError(w, statusOf(err), err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size, 10))
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", fi.Name))
	if _, err := io.Copy(w, rc); err != nil {
		// Headers are gone; the short body tells the client.
		return
	}
}

// upload streams a request body into a file, atomically.
func (b botRoutes) upload(w http.ResponseWriter, r *http.Request) {
	bot, ok := allow(w, r, auth.ScopeWrite)
	if !ok {
		return
	}
	ctx, q := r.Context(), r.URL.Query()
	res, err := workspace.Ask(ctx, b.m, bot, func(a *client.Client) (wire.WriteResult, error) {
		return a.Write(ctx, wire.WriteRequest{
			Path: q.Get("path"), Mode: q.Get("mode"), ExpectedRevision: q.Get("expected_revision"), MakeParents: true,
		}, r.Body)
	})
	if err != nil {
		httpError(w, statusOf(err), err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// exportData sends a saved export (export_id from data_export) or, without
// one, streams a fresh tar.gz of ?path= (default /data) straight from the
// agent. Neither is ever held in memory.
func (b botRoutes) exportData(w http.ResponseWriter, r *http.Request) {
	bot := r.PathValue("bot_id")
	if err := auth.FromContext(r.Context()).Allow(auth.ScopeRead, bot); err != nil {
		httpError(w, statusOf(err), err)
		return
	}
	var body io.ReadCloser
	name := bot + "-data.tar.gz"
	if id := r.URL.Query().Get("export_id"); id != "" {
		f, err := b.m.OpenExport(bot, id)
		if err != nil {
			httpError(w, statusOf(err), err)
			return
		}
		if st, err := f.Stat(); err == nil {
			w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
		}
		body, name = f, bot+"-"+id+".tar.gz"
	} else {
		live, err := b.m.ExportData(r.Context(), bot, r.URL.Query().Get("path"))
		if err != nil {
			httpError(w, statusOf(err), err)
			return
		}
		body = live
	}
	defer body.Close()
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
	_, _ = io.Copy(w, body)
}

// importData extracts the streamed request body into ?path= (default /data).
func (b botRoutes) importData(w http.ResponseWriter, r *http.Request) {
	bot := r.PathValue("bot_id")
	if err := auth.FromContext(r.Context()).Allow(auth.ScopeWrite, bot); err != nil {
		httpError(w, statusOf(err), err)
		return
	}
	q := r.URL.Query()
	res, err := b.m.ImportData(r.Context(), bot, q.Get("path"), q.Get("format"), r.Body)
	if err != nil {
		httpError(w, statusOf(err), err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// terminalResize is the JSON text frame a WebSocket client sends to resize.
type terminalResize struct {
	Type string `json:"type"`
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// terminal bridges a WebSocket to a terminal: binary frames carry bytes
// both ways, JSON text frames carry resizes.
func (b botRoutes) terminal(w http.ResponseWriter, r *http.Request) {
	bot, ok := allow(w, r, auth.ScopeExec)
	if !ok {
		return
	}
	q := r.URL.Query()
	id := q.Get("terminal_id")
	// The agent's client stays in use after the attach: it resizes.
	var agent *client.Client
	pty, err := workspace.Ask(r.Context(), b.m, bot, func(a *client.Client) (io.ReadWriteCloser, error) {
		if id == "" {
			return nil, fmt.Errorf("%w: terminal_id is required (terminal_open returns it)", errdefs.ErrInvalidArgument)
		}
		agent = a
		if !q.Has("offset") {
			return a.AttachTerminal(r.Context(), id)
		}
		offset, err := strconv.ParseInt(q.Get("offset"), 10, 64)
		if err != nil || offset < 0 {
			return nil, fmt.Errorf("%w: offset must be a byte offset, 0 or more (next_offset of terminal_read)", errdefs.ErrInvalidArgument)
		}
		return a.AttachTerminalFrom(r.Context(), id, offset)
	})
	if err != nil {
		httpError(w, statusOf(err), err)
		return
	}
	defer pty.Close()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: originPatterns(b.origins)})
	if err != nil {
		return // Accept wrote the error
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		defer cancel()
		buf := make([]byte, 32<<10)
		for {
			n, err := pty.Read(buf)
			if n > 0 {
				if werr := ws.Write(ctx, websocket.MessageBinary, buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				ws.Close(websocket.StatusNormalClosure, "terminal closed")
				return
			}
		}
	}()
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			if _, err := pty.Write(data); err != nil {
				return
			}
			continue
		}
		var msg terminalResize
		if json.Unmarshal(data, &msg) != nil || msg.Type != "resize" {
			ws.Close(websocket.StatusUnsupportedData, `text frames must be {"type":"resize","rows":R,"cols":C}`)
			return
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		err = agent.ResizeTerminal(rctx, id, msg.Rows, msg.Cols)
		rcancel()
		if err != nil {
			ws.Close(websocket.StatusPolicyViolation, "resize: "+err.Error())
			return
		}
	}
}

// originPatterns turns allowed origins into coder/websocket host patterns;
// same-host requests are always allowed by it.
func originPatterns(origins []string) []string {
	var out []string
	for _, o := range origins {
		if u, err := parseOrigin(o); err == nil {
			out = append(out, u)
		}
	}
	return out
}

// statusOf is the HTTP status of err's errdefs class: the agent's
// answers, refusals and the Manager's errors all carry one.
func statusOf(err error) int { return errhttp.ToHTTP(err) }

func httpError(w http.ResponseWriter, status int, err error) {
	http.Error(w, tools.Explain(err), status)
}
