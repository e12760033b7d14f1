package skills

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
)

// memFS is an in-memory workspace with the agent's file semantics as far
// as this package relies on them: lstat for Stat and list entries,
// symlinks followed in parents (and at the end for reads and writes),
// windows of lines for ReadText, atomic whole-file writes with revisions,
// recursive Delete and Copy. It records every mutation, so tests can
// assert that reads never write.
type memFS struct {
	mu        sync.Mutex
	nodes     map[string]*memNode
	mutations []string
	// pageSize, if set, caps a List page below what was asked, to
	// exercise paging.
	pageSize int
	// readErr, keyed by the path as asked, replaces a ReadText answer.
	readErr map[string]error
	// beforeWrite runs (unlocked) before every Write.
	beforeWrite func(p string)
	reads       int
}

type memNode struct {
	kind   string // wire.FileTypeFile, FileTypeDir or FileTypeSymlink
	data   string
	target string
}

func newMemFS() *memFS {
	return &memFS{nodes: map[string]*memNode{"/": {kind: wire.FileTypeDir}}, readErr: map[string]error{}}
}

func remoteErr(status int, code, format string, args ...any) error {
	return &client.RemoteError{StatusCode: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func errNotFound(p string) error {
	return remoteErr(http.StatusNotFound, wire.CodeNotFound, "%s does not exist", p)
}

// --- setup helpers (tests call these before the code under test runs) ---

func (m *memFS) addFile(p, data string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.mkdirAllLocked(path.Dir(p)); err != nil {
		panic(err)
	}
	m.nodes[path.Clean(p)] = &memNode{kind: wire.FileTypeFile, data: data}
}

func (m *memFS) addDir(p string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.mkdirAllLocked(p); err != nil {
		panic(err)
	}
}

func (m *memFS) addLink(p, target string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.mkdirAllLocked(path.Dir(p)); err != nil {
		panic(err)
	}
	m.nodes[path.Clean(p)] = &memNode{kind: wire.FileTypeSymlink, target: target}
}

// content returns the file at p, not following symlinks.
func (m *memFS) content(p string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodes[p]
	if n == nil || n.kind != wire.FileTypeFile {
		return "", false
	}
	return n.data, true
}

func (m *memFS) exists(p string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nodes[p] != nil
}

func (m *memFS) mutationCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mutations)
}

// --- path resolution ---

// resolve follows symlinks in every component of p but the last, and in
// the last too with follow. The result may name nothing (the last
// component missing); a missing parent is an error, as in the agent.
func (m *memFS) resolve(p string, follow bool) (string, error) {
	if !path.IsAbs(p) {
		return "", remoteErr(http.StatusBadRequest, wire.CodeInvalid, "path %q is not absolute", p)
	}
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	if parts[0] == "" {
		return "/", nil
	}
	cur, hops := "/", 0
	for i := 0; i < len(parts); i++ {
		next := path.Join(cur, parts[i])
		n := m.nodes[next]
		last := i == len(parts)-1
		if n == nil {
			if last {
				return next, nil
			}
			return "", errNotFound(p)
		}
		if n.kind == wire.FileTypeSymlink && (!last || follow) {
			if hops++; hops > 40 {
				return "", remoteErr(http.StatusBadRequest, wire.CodeInvalid, "%s: too many levels of symbolic links", p)
			}
			t := n.target
			if !path.IsAbs(t) {
				t = path.Join(cur, t)
			}
			rest := path.Join(append([]string{t}, parts[i+1:]...)...)
			if rest == "/" {
				return "/", nil
			}
			parts = strings.Split(strings.TrimPrefix(rest, "/"), "/")
			cur, i = "/", -1
			continue
		}
		if !last && n.kind != wire.FileTypeDir {
			return "", remoteErr(http.StatusBadRequest, wire.CodeNotDirectory, "%s: a parent of it is not a directory", p)
		}
		cur = next
	}
	return cur, nil
}

func (m *memFS) mkdirAllLocked(p string) error {
	p = path.Clean(p)
	if p == "/" {
		return nil
	}
	if err := m.mkdirAllLocked(path.Dir(p)); err != nil {
		return err
	}
	r, err := m.resolve(p, true)
	if err != nil {
		return err
	}
	switch n := m.nodes[r]; {
	case n == nil:
		m.nodes[r] = &memNode{kind: wire.FileTypeDir}
	case n.kind != wire.FileTypeDir:
		return remoteErr(http.StatusBadRequest, wire.CodeNotDirectory, "%s is not a directory", p)
	}
	return nil
}

func (m *memFS) children(dir string) []string {
	var out []string
	for p := range m.nodes {
		if p != "/" && path.Dir(p) == dir {
			out = append(out, path.Base(p))
		}
	}
	sort.Strings(out)
	return out
}

func (m *memFS) info(asked string, n *memNode) wire.FileInfo {
	fi := wire.FileInfo{Path: asked, Name: path.Base(asked), Type: n.kind, Mode: "0644", ModTime: time.Unix(0, 0)}
	switch n.kind {
	case wire.FileTypeFile:
		fi.Size = int64(len(n.data))
	case wire.FileTypeDir:
		fi.Mode = "0755"
	case wire.FileTypeSymlink:
		fi.Mode, fi.LinkTarget = "0777", n.target
	}
	return fi
}

// --- FS ---

func (m *memFS) Stat(_ context.Context, p string) (wire.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.resolve(p, false)
	if err != nil {
		return wire.FileInfo{}, err
	}
	n := m.nodes[r]
	if n == nil {
		return wire.FileInfo{}, errNotFound(p)
	}
	return m.info(path.Clean(p), n), nil
}

func (m *memFS) List(_ context.Context, req wire.ListRequest) (wire.ListResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.resolve(req.Path, true)
	if err != nil {
		return wire.ListResult{}, err
	}
	n := m.nodes[r]
	switch {
	case n == nil:
		return wire.ListResult{}, errNotFound(req.Path)
	case n.kind != wire.FileTypeDir:
		return wire.ListResult{}, remoteErr(http.StatusBadRequest, wire.CodeNotDirectory, "%s is not a directory", req.Path)
	}
	names := m.children(r)
	limit := req.Limit
	if limit <= 0 {
		limit = wire.ListDefaultLimit
	}
	limit = min(limit, wire.ListMaxLimit)
	if m.pageSize > 0 {
		limit = min(limit, m.pageSize)
	}
	asked := path.Clean(req.Path)
	res := wire.ListResult{Path: asked, Entries: []wire.FileInfo{}, Total: len(names)}
	end := min(req.Offset+limit, len(names))
	for i := req.Offset; i < end; i++ {
		res.Entries = append(res.Entries, m.info(path.Join(asked, names[i]), m.nodes[path.Join(r, names[i])]))
	}
	if end < len(names) {
		res.NextOffset = end
	}
	return res, nil
}

func (m *memFS) ReadText(_ context.Context, req wire.ReadTextRequest) (wire.ReadTextResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	if err := m.readErr[req.Path]; err != nil {
		return wire.ReadTextResult{}, err
	}
	r, err := m.resolve(req.Path, true)
	if err != nil {
		return wire.ReadTextResult{}, err
	}
	n := m.nodes[r]
	switch {
	case n == nil:
		return wire.ReadTextResult{}, errNotFound(req.Path)
	case n.kind == wire.FileTypeDir:
		return wire.ReadTextResult{}, remoteErr(http.StatusBadRequest, wire.CodeIsDirectory, "%s is a directory", r)
	}
	sum := sha256.Sum256([]byte(n.data))
	res := wire.ReadTextResult{Path: r, Size: int64(len(n.data)), Revision: hex.EncodeToString(sum[:]), MIMEType: "text/plain; charset=utf-8"}
	if !utf8.ValidString(n.data) || strings.IndexByte(n.data, 0) >= 0 {
		res.Binary, res.TotalLines = true, -1
		return res, nil
	}
	lines := strings.SplitAfter(n.data, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	limit := req.Limit
	if limit <= 0 {
		limit = wire.ReadDefaultLimit
	}
	limit = min(limit, wire.ReadMaxLimit)
	maxBytes := req.MaxBytes
	if maxBytes <= 0 {
		maxBytes = wire.ReadDefaultMaxBytes
	}
	maxBytes = min(maxBytes, wire.ReadMaxBytes)
	start := min(req.Offset, len(lines))
	end := start
	var b strings.Builder
	cut := false
	for end < len(lines) && end < start+limit {
		l := lines[end]
		if b.Len()+len(l) > maxBytes {
			if b.Len() == 0 {
				b.WriteString(l[:maxBytes])
				end++
			}
			cut = true
			break
		}
		b.WriteString(l)
		end++
	}
	res.Text, res.StartLine, res.EndLine, res.TotalLines = b.String(), start, end, len(lines)
	res.Truncated = cut || end < len(lines)
	if end < len(lines) {
		res.NextOffset = end
	}
	return res, nil
}

func (m *memFS) Write(_ context.Context, req wire.WriteRequest, body io.Reader) (wire.WriteResult, error) {
	if m.beforeWrite != nil {
		m.beforeWrite(req.Path)
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return wire.WriteResult{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	parent := path.Dir(path.Clean(req.Path))
	if req.MakeParents {
		if err := m.mkdirAllLocked(parent); err != nil {
			return wire.WriteResult{}, err
		}
	}
	rp, err := m.resolve(parent, true)
	if err != nil {
		return wire.WriteResult{}, err
	}
	switch n := m.nodes[rp]; {
	case n == nil:
		return wire.WriteResult{}, errNotFound(parent)
	case n.kind != wire.FileTypeDir:
		return wire.WriteResult{}, remoteErr(http.StatusBadRequest, wire.CodeNotDirectory, "%s is not a directory", parent)
	}
	target, err := m.resolve(path.Join(rp, path.Base(req.Path)), true)
	if err != nil {
		return wire.WriteResult{}, err
	}
	old := m.nodes[target]
	if old != nil && old.kind == wire.FileTypeDir {
		return wire.WriteResult{}, remoteErr(http.StatusBadRequest, wire.CodeIsDirectory, "%s is a directory", target)
	}
	if req.ExpectedRevision != "" {
		if old == nil {
			return wire.WriteResult{}, remoteErr(http.StatusConflict, wire.CodeConflict, "%s does not exist", target)
		}
		sum := sha256.Sum256([]byte(old.data))
		if hex.EncodeToString(sum[:]) != req.ExpectedRevision {
			return wire.WriteResult{}, remoteErr(http.StatusConflict, wire.CodeConflict, "%s changed; re-read it", target)
		}
	}
	m.nodes[target] = &memNode{kind: wire.FileTypeFile, data: string(data)}
	m.mutations = append(m.mutations, "write "+target)
	sum := sha256.Sum256(data)
	return wire.WriteResult{Path: target, Size: int64(len(data)), Revision: hex.EncodeToString(sum[:]), Created: old == nil}, nil
}

func (m *memFS) Delete(_ context.Context, p string, recursive bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.resolve(p, false)
	if err != nil {
		return err
	}
	n := m.nodes[r]
	if n == nil {
		return errNotFound(p)
	}
	if n.kind == wire.FileTypeDir && len(m.children(r)) > 0 && !recursive {
		return remoteErr(http.StatusConflict, wire.CodeNotEmpty, "directory %s is not empty", r)
	}
	for q := range m.nodes {
		if q == r || strings.HasPrefix(q, r+"/") {
			delete(m.nodes, q)
		}
	}
	m.mutations = append(m.mutations, "delete "+r)
	return nil
}

func (m *memFS) Copy(_ context.Context, src, dst string, overwrite bool) (wire.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rs, err := m.resolve(src, false)
	if err != nil {
		return wire.FileInfo{}, err
	}
	n := m.nodes[rs]
	if n == nil {
		return wire.FileInfo{}, errNotFound(src)
	}
	parent := path.Dir(path.Clean(dst))
	rp, err := m.resolve(parent, true)
	if err != nil {
		return wire.FileInfo{}, err
	}
	if pn := m.nodes[rp]; pn == nil || pn.kind != wire.FileTypeDir {
		return wire.FileInfo{}, errNotFound(parent)
	}
	rd := path.Join(rp, path.Base(dst))
	if m.nodes[rd] != nil {
		if !overwrite {
			return wire.FileInfo{}, remoteErr(http.StatusConflict, wire.CodeExists, "%s already exists", dst)
		}
		for q := range m.nodes {
			if q == rd || strings.HasPrefix(q, rd+"/") {
				delete(m.nodes, q)
			}
		}
	}
	copied := map[string]*memNode{}
	for q, qn := range m.nodes {
		if q == rs || (n.kind == wire.FileTypeDir && strings.HasPrefix(q, rs+"/")) {
			c := *qn
			copied[rd+strings.TrimPrefix(q, rs)] = &c
		}
	}
	for q, c := range copied {
		m.nodes[q] = c
	}
	m.mutations = append(m.mutations, "copy "+rs+" "+rd)
	return m.info(path.Clean(dst), m.nodes[rd]), nil
}

func (m *memFS) Mkdir(_ context.Context, p string, parents bool) (wire.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if parents {
		if err := m.mkdirAllLocked(p); err != nil {
			return wire.FileInfo{}, err
		}
	} else {
		r, err := m.resolve(p, false)
		if err != nil {
			return wire.FileInfo{}, err
		}
		if m.nodes[r] != nil {
			return wire.FileInfo{}, remoteErr(http.StatusConflict, wire.CodeExists, "%s already exists", p)
		}
		if pn := m.nodes[path.Dir(r)]; pn == nil || pn.kind != wire.FileTypeDir {
			return wire.FileInfo{}, errNotFound(path.Dir(p))
		}
		m.nodes[r] = &memNode{kind: wire.FileTypeDir}
	}
	m.mutations = append(m.mutations, "mkdir "+p)
	r, _ := m.resolve(p, true)
	return m.info(path.Clean(p), m.nodes[r]), nil
}

var _ FS = (*memFS)(nil)
