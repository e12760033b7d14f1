package console

import (
	"bytes"
	"embed"
	"errors"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// dist is the page's bundle, built by `make build` from web/. The
// repository holds only dist/.keep, so a build without the bundle still
// compiles and says how to get it.
//
//go:embed all:dist
var dist embed.FS

const notBuilt = `<!doctype html><meta charset="utf-8"><title>berth console</title>
<p>console not built: run <code>make build</code></p>
`

// static serves the bundle: its files by name, and index.html for /ui and
// every path without an extension (the page's own routes).
func (c *Console) static(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/ui")
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" || name == "." || !strings.Contains(path.Base(name), ".") {
		name = "index.html"
	}
	data, err := fs.ReadFile(dist, "dist/"+name)
	if errors.Is(err, fs.ErrNotExist) && name == "index.html" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(notBuilt))
		return
	}
	if err != nil || name == ".keep" {
		http.NotFound(w, r)
		return
	}
	if name == "index.html" {
		// It names the bundle's files; a new berth must not meet a cached one.
		w.Header().Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
}
