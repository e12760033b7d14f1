package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

const (
	// fsSniffBytes is how much of a file decides whether it is text, as
	// git and grep do it.
	fsSniffBytes = 8 << 10
	fsChunk      = 64 << 10
	// fsRecycleCap: line buffers larger than this are left to the garbage
	// collector instead of being reused, so a few long lines early in a
	// file do not pin their memory for the rest of a tail read.
	fsRecycleCap = 64 << 10
)

// fsLimit applies a request's default (for 0) and maximum.
func fsLimit(v, def, maxV int) int {
	if v <= 0 {
		return def
	}
	return min(v, maxV)
}

func fsNonNegative(fields map[string]int) error {
	for name, v := range fields {
		if v < 0 {
			return fsErrorf(wire.CodeInvalid, "%s must not be negative (got %d)", name, v)
		}
	}
	return nil
}

func (s *server) handleStat(w http.ResponseWriter, r *http.Request) {
	p, err := s.fsPath(r.URL.Query().Get("path"))
	if err != nil {
		s.fsWriteError(w, r, err)
		return
	}
	info, err := s.fsLstat(p)
	if err != nil {
		s.fsWriteError(w, r, err)
		return
	}
	fsWriteJSON(w, info)
}

// errFSWalkLimit reports that a walk met more entries than it may visit.
var errFSWalkLimit = errors.New("walk limit reached")

// fsWalker walks a tree depth first, names sorted, never following
// symlinks (a link to "/" would otherwise turn any walk into a walk of
// the whole container, or a loop).
type fsWalker struct {
	ctx context.Context
	// guard keeps the walk out of berth's directories: the root is
	// refused if it is one or inside one, and such a directory met below
	// it is passed over.
	guard   *fsProtect
	skip    map[string]bool
	max     int
	visited int
}

// fsVisit sees every entry below the root. Returning fs.SkipDir keeps the
// walk out of a directory; any other error ends the walk with it.
type fsVisit func(p string, d fs.DirEntry) error

func (w *fsWalker) walk(root string, visit fsVisit) error {
	d, err := fsOpenDir(root)
	if err != nil {
		return fsNotFound(root, err)
	}
	defer d.Close()
	prot, err := w.guard.within(d)
	if err != nil {
		return err
	}
	if prot != "" {
		return fsErrorf(wire.CodePermission, "refusing to read %s: %s belongs to berth (its agent's socket and binary live there)", root, prot)
	}
	entries, err := w.readDirFrom(d)
	if err != nil {
		return fsNotFound(root, err)
	}
	return w.walkEntries(root, entries, visit)
}

func (w *fsWalker) walkEntries(dir string, entries []fs.DirEntry, visit fsVisit) error {
	for _, d := range entries {
		w.visited++
		if w.visited > w.max {
			return errFSWalkLimit
		}
		if w.visited%1024 == 0 {
			if err := w.ctx.Err(); err != nil {
				return err
			}
		}
		p := fsJoin(dir, d.Name())
		err := visit(p, d)
		if err == fs.SkipDir {
			continue
		}
		if err != nil {
			return err
		}
		if !d.IsDir() || w.skip[p] {
			continue
		}
		sub, err := w.readDir(p)
		if err != nil {
			// Vanished, replaced or unreadable below the root: a walk
			// reports what it can see rather than failing on churn.
			continue
		}
		if err := w.walkEntries(p, sub, visit); err != nil {
			return err
		}
	}
	return nil
}

// readDir reads dir in batches and stops once it holds more entries than
// the walk may still visit: a directory with millions of entries must not
// be read into memory whole to report that it is too big.
func (w *fsWalker) readDir(dir string) ([]fs.DirEntry, error) {
	// Not following a final symlink: the walk saw a directory here, and
	// a symlink put in its place since must not lead it elsewhere.
	d, err := fsOpenDirAt(unix.AT_FDCWD, dir, false, dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if w.guard.is(d) != "" {
		return nil, nil
	}
	return w.readDirFrom(d)
}

func (w *fsWalker) readDirFrom(d *fsDir) ([]fs.DirEntry, error) {
	f := d.f
	room := w.max - w.visited + 1
	var out []fs.DirEntry
	for len(out) < room {
		batch, err := f.ReadDir(1024)
		out = append(out, batch...)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

func fsJoin(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// fsJSONSize bounds the encoded size of s in a JSON string: at most six
// bytes (\u00XX, \ufffd) for every byte that may need escaping.
func fsJSONSize(s string) int {
	n := 2
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			n += 6
		} else {
			n++
		}
	}
	return n
}

func fsInfoJSONSize(fi wire.FileInfo) int {
	return 160 + fsJSONSize(fi.Path) + fsJSONSize(fi.Name) + fsJSONSize(fi.LinkTarget)
}

func (s *server) fsList(ctx context.Context, req wire.ListRequest) (wire.ListResult, error) {
	p, err := s.fsPath(req.Path)
	if err != nil {
		return wire.ListResult{}, err
	}
	if err := fsNonNegative(map[string]int{"offset": req.Offset, "limit": req.Limit, "max_entries": req.MaxEntries}); err != nil {
		return wire.ListResult{}, err
	}
	limit := fsLimit(req.Limit, wire.ListDefaultLimit, wire.ListMaxLimit)
	maxEntries := wire.ListMaxEntries
	if req.Recursive {
		maxEntries = fsLimit(req.MaxEntries, wire.ListDefaultMaxEntries, wire.ListMaxEntries)
	}
	// The root is followed if it is a symlink, as ls does: naming a link
	// to a directory means that directory.
	fi, err := os.Stat(p)
	if err != nil {
		return wire.ListResult{}, fsNotFound(p, err)
	}
	if !fi.IsDir() {
		return wire.ListResult{}, fsErrorf(wire.CodeNotDirectory, "%s is not a directory", p)
	}

	var paths []string
	w := &fsWalker{ctx: ctx, guard: s.fsGuard(), skip: fsSkipDirs(p), max: maxEntries}
	err = w.walk(p, func(q string, d fs.DirEntry) error {
		paths = append(paths, q)
		if !req.Recursive {
			return fs.SkipDir
		}
		return nil
	})
	if errors.Is(err, errFSWalkLimit) {
		if req.Recursive {
			return wire.ListResult{}, fsErrorf(wire.CodeLimit,
				"%s has more than %d entries in its tree; narrow the path, list without recursion, or raise max_entries (at most %d)",
				p, maxEntries, wire.ListMaxEntries)
		}
		return wire.ListResult{}, fsErrorf(wire.CodeLimit,
			"directory %s has more than %d entries; use find with a pattern to pick some", p, maxEntries)
	}
	if err != nil {
		return wire.ListResult{}, err
	}
	sort.Strings(paths)

	res := wire.ListResult{Path: p, Entries: []wire.FileInfo{}, Total: len(paths)}
	end := min(req.Offset+limit, len(paths))
	budget := fsResponseBudget
	for i := req.Offset; i < end; i++ {
		info, err := s.fsLstat(paths[i])
		if err != nil {
			continue
		}
		size := fsInfoJSONSize(info)
		if size > budget && len(res.Entries) > 0 {
			end = i
			break
		}
		budget -= size
		res.Entries = append(res.Entries, info)
	}
	if end < len(paths) && end > req.Offset {
		res.NextOffset = end
	}
	return res, nil
}

// fsLooksBinary applies git's and grep's rule to the start of a file: a
// NUL byte or invalid UTF-8 means the file is not text. cut says the
// sample stops inside the file, where a multi-byte character may be split.
func fsLooksBinary(sample []byte, cut bool) bool {
	if bytes.IndexByte(sample, 0) >= 0 {
		return true
	}
	if cut {
		// Drop a possibly incomplete last character.
		for i := 0; i < utf8.UTFMax-1 && i < len(sample); i++ {
			if utf8.RuneStart(sample[len(sample)-1-i]) {
				if !utf8.FullRune(sample[len(sample)-1-i:]) {
					sample = sample[:len(sample)-1-i]
				}
				break
			}
		}
	}
	return !utf8.Valid(sample)
}

// fsCutUTF8 shortens b to at most n bytes and drops a character split at
// the end, whether split by this cut or by an earlier one.
func fsCutUTF8(b []byte, n int) []byte {
	if len(b) > n {
		b = b[:n]
	}
	for i := 0; i < utf8.UTFMax && i < len(b); i++ {
		if utf8.RuneStart(b[len(b)-1-i]) {
			if !utf8.FullRune(b[len(b)-1-i:]) {
				b = b[:len(b)-1-i]
			}
			break
		}
	}
	return b
}

// fsSuffixUTF8 keeps at most the last n bytes of b, starting at a
// character boundary.
func fsSuffixUTF8(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	b = b[len(b)-n:]
	for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.RuneStart(b[0]); i++ {
		b = b[1:]
	}
	return b
}

// fsLineSink collects a window of lines from a file fed in chunks.
type fsLineSink interface {
	feed(b []byte)
	// satisfied says the window is complete and whether more lines follow
	// is known, so a reader that does not count lines can stop.
	satisfied() bool
	// finish ends the input at EOF.
	finish()
	result(res *wire.ReadTextResult, eof bool)
}

// fsHeadLines collects lines [start, end) within maxBytes.
type fsHeadLines struct {
	start, end, maxBytes int
	line                 int // line of the next byte
	partial              bool
	text, cur            []byte
	done                 bool
	endLine              int
	cut                  bool // maxBytes ended the window
	moreAfter            bool // a byte of a line at or after endLine was seen
}

func (c *fsHeadLines) feed(b []byte) {
	for len(b) > 0 {
		seg, nl := b, false
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			seg, b, nl = b[:i+1], b[i+1:], true
		} else {
			b = nil
		}
		switch {
		case c.done:
			if c.line >= c.endLine {
				c.moreAfter = true
			}
		case c.line >= c.start:
			room := c.maxBytes - len(c.text) - len(c.cur)
			if len(seg) <= room {
				c.cur = append(c.cur, seg...)
				break
			}
			// The line does not fit. If it is the first, a cut part of it
			// is better than nothing; otherwise the window ends before it.
			if len(c.text) == 0 {
				c.cur = append(c.cur, seg[:room]...)
				c.text = append(c.text, fsCutUTF8(c.cur, c.maxBytes)...)
				c.endLine = c.line + 1
			} else {
				c.endLine = c.line
				c.moreAfter = true
			}
			c.cur = nil
			c.cut, c.done = true, true
		}
		if nl {
			c.endOfLine()
		} else {
			c.partial = true
		}
	}
}

func (c *fsHeadLines) endOfLine() {
	if !c.done && c.line >= c.start {
		c.text = append(c.text, c.cur...)
		c.cur = c.cur[:0]
		if c.line+1 >= c.end {
			c.done, c.endLine = true, c.end
		}
	}
	c.line++
	c.partial = false
}

func (c *fsHeadLines) satisfied() bool { return c.done && (c.moreAfter || c.cut) }

func (c *fsHeadLines) finish() {
	if c.partial {
		c.endOfLine()
	}
}

func (c *fsHeadLines) result(res *wire.ReadTextResult, eof bool) {
	res.Text = string(c.text)
	if eof {
		res.TotalLines = c.line
	}
	if c.done {
		res.StartLine, res.EndLine = c.start, c.endLine
	} else {
		// The file ended before the window did.
		res.StartLine = min(c.start, c.line)
		res.EndLine = max(res.StartLine, min(c.end, c.line))
	}
	res.Truncated = c.cut || c.moreAfter
	// A reader that stopped early (a file too large to read whole) does
	// not know whether a cut line was the last one; offering the next
	// offset costs at most an empty read.
	if c.moreAfter || (c.cut && !eof) {
		res.NextOffset = res.EndLine
	}
}

// fsTailLines keeps the last n lines within maxBytes in a ring.
type fsTailLines struct {
	n, maxBytes  int
	line         int
	partial      bool
	ring         [][]byte
	over         []bool // the line was longer than maxBytes and is cut
	first, count int
	size         int
	cur          []byte
	curOver      bool
}

func newFSTailLines(n, maxBytes int) *fsTailLines {
	return &fsTailLines{n: n, maxBytes: maxBytes, ring: make([][]byte, n), over: make([]bool, n)}
}

func (c *fsTailLines) feed(b []byte) {
	for len(b) > 0 {
		seg, nl := b, false
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			seg, b, nl = b[:i+1], b[i+1:], true
		} else {
			b = nil
		}
		if room := c.maxBytes - len(c.cur); len(seg) > room {
			seg = seg[:room]
			c.curOver = true
		}
		c.cur = append(c.cur, seg...)
		if nl {
			c.endOfLine()
		} else {
			c.partial = true
		}
	}
}

func (c *fsTailLines) pop() []byte {
	b := c.ring[c.first]
	c.ring[c.first] = nil
	c.size -= len(b)
	c.first = (c.first + 1) % c.n
	c.count--
	if cap(b) > fsRecycleCap {
		return nil
	}
	return b[:0]
}

func (c *fsTailLines) endOfLine() {
	var recycled []byte
	if c.count == c.n {
		recycled = c.pop()
	}
	i := (c.first + c.count) % c.n
	c.ring[i], c.over[i] = c.cur, c.curOver
	c.count++
	c.size += len(c.cur)
	c.cur, c.curOver = recycled, false
	for c.size > c.maxBytes && c.count > 1 {
		c.pop()
	}
	c.line++
	c.partial = false
}

func (c *fsTailLines) satisfied() bool { return false }

func (c *fsTailLines) finish() {
	if c.partial {
		c.endOfLine()
	}
}

func (c *fsTailLines) result(res *wire.ReadTextResult, _ bool) {
	var text []byte
	cut := false
	for k := range c.count {
		i := (c.first + k) % c.n
		line := c.ring[i]
		if c.over[i] {
			line = fsCutUTF8(line, len(line))
			cut = true
		}
		text = append(text, line...)
	}
	res.Text = string(text)
	res.TotalLines = c.line
	res.StartLine, res.EndLine = c.line-c.count, c.line
	res.Truncated = cut || c.count < min(c.n, c.line)
}

func (s *server) fsReadText(ctx context.Context, req wire.ReadTextRequest) (wire.ReadTextResult, error) {
	p, err := s.fsPath(req.Path)
	if err != nil {
		return wire.ReadTextResult{}, err
	}
	if err := fsNonNegative(map[string]int{"offset": req.Offset, "limit": req.Limit, "tail": req.Tail, "max_bytes": req.MaxBytes}); err != nil {
		return wire.ReadTextResult{}, err
	}
	limit := fsLimit(req.Limit, wire.ReadDefaultLimit, wire.ReadMaxLimit)
	tail := min(req.Tail, wire.ReadMaxLimit)
	maxBytes := fsLimit(req.MaxBytes, wire.ReadDefaultMaxBytes, wire.ReadMaxBytes)

	f, fi, err := s.fsOpenRegular(p)
	if err != nil {
		return wire.ReadTextResult{}, err
	}
	defer func() { _ = f.Close() }()
	res := wire.ReadTextResult{Path: p, Size: fi.Size(), TotalLines: -1}

	sample := make([]byte, fsSniffBytes)
	n, err := io.ReadFull(f, sample)
	eof := err == io.EOF || err == io.ErrUnexpectedEOF
	if err != nil && !eof {
		return wire.ReadTextResult{}, err
	}
	sample = sample[:n]
	res.MIMEType = http.DetectContentType(sample)
	res.Binary = fsLooksBinary(sample, !eof)

	// Whether the file is read to its end (to count lines and compute the
	// revision) is decided by its size up front, so that the answer's
	// shape does not depend on where the window happens to be.
	whole := fi.Size() <= wire.MaxRevisionBytes
	var h hash.Hash
	if whole {
		h = sha256.New()
		h.Write(sample)
	}
	read := int64(n)

	var sink fsLineSink
	switch {
	case res.Binary:
		// No text; only the revision needs the rest.
	case tail > 0 && !whole:
		return fsTailBackward(f, fi.Size(), tail, maxBytes, res)
	case tail > 0:
		sink = newFSTailLines(tail, maxBytes)
	default:
		sink = &fsHeadLines{start: req.Offset, end: req.Offset + limit, maxBytes: maxBytes}
	}
	if sink != nil {
		sink.feed(sample)
	}

	buf := make([]byte, fsChunk)
	for !eof && (whole || (sink != nil && !sink.satisfied())) {
		if err := ctx.Err(); err != nil {
			return wire.ReadTextResult{}, err
		}
		n, err := f.Read(buf)
		if n > 0 {
			read += int64(n)
			if h != nil {
				h.Write(buf[:n])
				if read > wire.MaxRevisionBytes {
					// The file grew while being read.
					h = nil
				}
			}
			if sink != nil {
				sink.feed(buf[:n])
			}
		}
		if err == io.EOF {
			eof = true
		} else if err != nil {
			return wire.ReadTextResult{}, err
		}
	}
	if eof {
		res.Size = read
		if h != nil {
			res.Revision = hex.EncodeToString(h.Sum(nil))
		}
	}
	if sink == nil {
		return res, nil
	}
	if eof {
		sink.finish()
	}
	sink.result(&res, eof)
	return res, nil
}

// fsTailBackward reads the last n lines of a file too large to read
// whole, from its end. Line numbers are unknown, so they are -1.
func fsTailBackward(f *os.File, size int64, n, maxBytes int, res wire.ReadTextResult) (wire.ReadTextResult, error) {
	res.StartLine, res.EndLine = -1, -1
	var chunks [][]byte // last chunk first
	collected := 0
	newlines := 0
	pos := size
	for pos > 0 && newlines <= n && collected <= maxBytes {
		sz := min(int64(fsChunk), pos)
		pos -= sz
		buf := make([]byte, sz)
		if _, err := f.ReadAt(buf, pos); err != nil && err != io.EOF {
			return wire.ReadTextResult{}, err
		}
		chunks = append(chunks, buf)
		collected += len(buf)
		newlines += bytes.Count(buf, []byte{'\n'})
	}
	data := make([]byte, 0, collected)
	for i := len(chunks) - 1; i >= 0; i-- {
		data = append(data, chunks[i]...)
	}
	// The terminator of the last line does not start another line.
	body := data
	if len(body) > 0 && body[len(body)-1] == '\n' {
		body = body[:len(body)-1]
	}
	start, k := -1, 0
	for i := len(body) - 1; i >= 0; i-- {
		if body[i] == '\n' {
			k++
			if k == n {
				start = i + 1
				break
			}
		}
	}
	cut := false
	if start < 0 {
		if pos == 0 {
			start = 0
		} else if i := bytes.IndexByte(data, '\n'); i >= 0 && i < len(body) {
			// Stopped by maxBytes: drop the partial first line.
			start, cut = i+1, true
		} else {
			start, cut = 0, true
		}
	}
	text := data[start:]
	if len(text) > maxBytes {
		cut = true
		from := len(text) - maxBytes
		if i := bytes.IndexByte(text[from-1:], '\n'); i >= 0 && from+i < len(text) {
			text = text[from+i:]
		} else {
			text = fsSuffixUTF8(text, maxBytes)
		}
	}
	res.Text = string(text)
	res.Truncated = cut
	return res, nil
}

func (s *server) handleReadRange(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, err := s.fsPath(q.Get("path"))
	if err != nil {
		s.fsWriteError(w, r, err)
		return
	}
	offset, err1 := fsQueryInt(q.Get("offset"))
	length, err2 := fsQueryInt(q.Get("length"))
	if err := errors.Join(err1, err2); err != nil {
		s.fsWriteError(w, r, err)
		return
	}
	if offset < 0 {
		s.fsWriteError(w, r, fsErrorf(wire.CodeInvalid, "offset must not be negative (got %d)", offset))
		return
	}
	f, fi, err := s.fsOpenRegular(p)
	if err != nil {
		s.fsWriteError(w, r, err)
		return
	}
	defer func() { _ = f.Close() }()
	var body io.Reader = f
	info := fsInfo(p, fi)
	start := min(offset, fi.Size())
	n := fi.Size() - start
	if length > 0 && length < n {
		n = length
	}
	if fi.Size() == 0 {
		// Files of /proc and /sys say 0 bytes and have content, made when
		// read: read it (up to the cap) to know how much there is.
		data, err := fsReadPseudo(f, offset, length)
		if err != nil {
			s.fsWriteError(w, r, err)
			return
		}
		body, n, info.Size = bytes.NewReader(data), int64(len(data)), offset+int64(len(data))
	} else if start > 0 {
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			s.fsWriteError(w, r, err)
			return
		}
	}
	hdr, err := fsASCIIJSON(info)
	if err != nil {
		s.fsWriteError(w, r, err)
		return
	}
	w.Header().Set(wire.FileInfoHeader, hdr)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead || n == 0 {
		return
	}
	// Straight from the file to the socket (sendfile where the kernel
	// can). If the file shrinks meanwhile, the body comes up short of
	// Content-Length and the client sees an unexpected EOF, not a silently
	// shorter file.
	if _, err := io.CopyN(w, body, n); err != nil {
		s.log.Debug("file download ended early", "path", p, "err", err)
	}
}

// fsPseudoMax caps what is read of a file whose size is not known (a
// /proc or /sys file that says 0 bytes).
const fsPseudoMax = 16 << 20

// fsReadPseudo reads length bytes (all, up to fsPseudoMax, for 0) from
// offset of a file that does not know its size.
func fsReadPseudo(f *os.File, offset, length int64) ([]byte, error) {
	if length <= 0 || length > fsPseudoMax {
		length = fsPseudoMax
	}
	if offset > 0 {
		// Many such files cannot seek; reading up to offset works for all.
		if _, err := io.CopyN(io.Discard, f, offset); err != nil && err != io.EOF {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, length))
}

func fsQueryInt(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fsErrorf(wire.CodeInvalid, "%q is not an integer", v)
	}
	return n, nil
}

// fsASCIIJSON encodes v as JSON with everything outside ASCII escaped, for
// an HTTP header: raw UTF-8 in header values is allowed but not reliably
// passed on, and file names can be anything.
func fsASCIIJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	for _, r := range string(b) {
		switch {
		case r < utf8.RuneSelf:
			sb.WriteRune(r)
		case r > 0xFFFF:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&sb, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&sb, `\u%04x`, r)
		}
	}
	return sb.String(), nil
}
