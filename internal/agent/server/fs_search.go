package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"syscall"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/agent/wire"
)

const (
	// fsMaxPattern bounds globs and grep patterns; RE2 is linear in the
	// input, but its compile cost and memory grow with the pattern.
	fsMaxPattern = 4096
	// fsGrepMaxLine is the longest piece of a line grep matches at once;
	// a longer line (minified code, say) is searched in pieces of this
	// size, and a match across a piece boundary is missed.
	fsGrepMaxLine = 1 << 20
)

// errFSStop ends a walk early because a cap was reached; the result so far
// is the answer.
var errFSStop = errors.New("search stopped")

// Reasons for a truncated find or grep.
const (
	fsReasonMaxResults   = "max_results"
	fsReasonMaxMatches   = "max_matches"
	fsReasonMaxFiles     = "max_files"
	fsReasonMaxBytes     = "max_bytes"
	fsReasonMaxEntries   = "max_entries"
	fsReasonResponseSize = "response_size"
)

func fsCheckGlob(name, glob string) error {
	if len(glob) > fsMaxPattern {
		return fsErrorf(wire.CodeInvalid, "%s is %d bytes long; at most %d are allowed", name, len(glob), fsMaxPattern)
	}
	if _, err := path.Match(glob, ""); err != nil {
		return fsErrorf(wire.CodeInvalid, "%s %q is not a valid glob: %v", name, fsShort(glob), err)
	}
	return nil
}

func (s *server) fsFind(ctx context.Context, req wire.FindRequest) (wire.FindResult, error) {
	root, err := s.fsPath(req.Root)
	if err != nil {
		return wire.FindResult{}, err
	}
	if err := fsNonNegative(map[string]int{"max_results": req.MaxResults, "max_entries": req.MaxEntries}); err != nil {
		return wire.FindResult{}, err
	}
	pattern := req.Pattern
	if pattern == "" {
		pattern = "*"
	}
	if err := fsCheckGlob("pattern", pattern); err != nil {
		return wire.FindResult{}, err
	}
	switch req.Type {
	case "", wire.FileTypeFile, wire.FileTypeDir, wire.FileTypeSymlink:
	default:
		return wire.FindResult{}, fsErrorf(wire.CodeInvalid, "type %q is not one of \"file\", \"dir\", \"symlink\" (or empty for any)", fsShort(req.Type))
	}
	maxResults := fsLimit(req.MaxResults, wire.FindDefaultMaxResults, wire.FindMaxResults)
	maxEntries := fsLimit(req.MaxEntries, wire.FindDefaultMaxEntries, wire.FindMaxEntries)

	fi, err := os.Stat(root)
	if err != nil {
		return wire.FindResult{}, fsNotFound(root, err)
	}
	res := wire.FindResult{Matches: []wire.FileInfo{}}
	budget := fsResponseBudget
	visit := func(p string, m fs.FileMode) error {
		if req.Type != "" && fsType(m) != req.Type {
			return nil
		}
		if ok, _ := path.Match(pattern, path.Base(p)); !ok {
			return nil
		}
		if len(res.Matches) == maxResults {
			res.Truncated, res.Reason = true, fsReasonMaxResults
			return errFSStop
		}
		info, err := s.fsLstat(p)
		if err != nil {
			return nil
		}
		size := fsInfoJSONSize(info)
		if size > budget {
			res.Truncated, res.Reason = true, fsReasonResponseSize
			return errFSStop
		}
		budget -= size
		res.Matches = append(res.Matches, info)
		return nil
	}
	if !fi.IsDir() {
		// find(1) reports a root that is not a directory when it matches.
		lfi, err := os.Lstat(root)
		if err != nil {
			return wire.FindResult{}, fsNotFound(root, err)
		}
		res.Scanned = 1
		if err := visit(root, lfi.Mode()); err != nil && err != errFSStop {
			return wire.FindResult{}, err
		}
		return res, nil
	}
	w := &fsWalker{ctx: ctx, guard: s.fsGuard(), skip: fsSkipDirs(root), max: maxEntries}
	err = w.walk(root, func(p string, d fs.DirEntry) error { return visit(p, d.Type()) })
	res.Scanned = min(w.visited, maxEntries)
	switch {
	case errors.Is(err, errFSWalkLimit):
		res.Truncated, res.Reason = true, fsReasonMaxEntries
	case err != nil && err != errFSStop:
		return wire.FindResult{}, err
	}
	return res, nil
}

// fsGrep is one grep in progress.
type fsGrep struct {
	ctx        context.Context
	match      func([]byte) (int, int)
	maxFiles   int
	maxMatches int
	maxLine    int
	bytesLeft  int64
	budget     int
	res        wire.GrepResult
	piece      []byte
}

func fsGrepMatcher(req wire.GrepRequest) (func([]byte) (int, int), error) {
	if req.Pattern == "" {
		return nil, fsErrorf(wire.CodeInvalid, "pattern is empty")
	}
	if len(req.Pattern) > fsMaxPattern {
		return nil, fsErrorf(wire.CodeInvalid, "pattern is %d bytes long; at most %d are allowed", len(req.Pattern), fsMaxPattern)
	}
	if !req.Regex && !req.IgnoreCase {
		lit := []byte(req.Pattern)
		return func(b []byte) (int, int) {
			i := bytes.Index(b, lit)
			if i < 0 {
				return -1, -1
			}
			return i, i + len(lit)
		}, nil
	}
	expr := req.Pattern
	if !req.Regex {
		expr = regexp.QuoteMeta(expr)
	}
	if req.IgnoreCase {
		expr = "(?i)" + expr
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fsErrorf(wire.CodeInvalid, "pattern is not a valid regular expression (RE2 syntax): %v", err)
	}
	return func(b []byte) (int, int) {
		loc := re.FindIndex(b)
		if loc == nil {
			return -1, -1
		}
		return loc[0], loc[1]
	}, nil
}

func (s *server) fsGrep(ctx context.Context, req wire.GrepRequest) (wire.GrepResult, error) {
	root, err := s.fsPath(req.Root)
	if err != nil {
		return wire.GrepResult{}, err
	}
	if err := fsNonNegative(map[string]int{"max_files": req.MaxFiles, "max_matches": req.MaxMatches, "max_line_length": req.MaxLineLength}); err != nil {
		return wire.GrepResult{}, err
	}
	if req.MaxBytes < 0 {
		return wire.GrepResult{}, fsErrorf(wire.CodeInvalid, "max_bytes must not be negative (got %d)", req.MaxBytes)
	}
	if req.Include != "" {
		if err := fsCheckGlob("include", req.Include); err != nil {
			return wire.GrepResult{}, err
		}
	}
	match, err := fsGrepMatcher(req)
	if err != nil {
		return wire.GrepResult{}, err
	}
	g := &fsGrep{
		ctx:        ctx,
		match:      match,
		maxFiles:   fsLimit(req.MaxFiles, wire.GrepDefaultMaxFiles, wire.GrepMaxFiles),
		maxMatches: fsLimit(req.MaxMatches, wire.GrepDefaultMaxMatches, wire.GrepMaxMatches),
		maxLine:    fsLimit(req.MaxLineLength, wire.GrepDefaultMaxLineLength, wire.GrepMaxLineLength),
		bytesLeft:  wire.GrepDefaultMaxBytes,
		budget:     fsResponseBudget,
		res:        wire.GrepResult{Matches: []wire.GrepMatch{}},
	}
	if req.MaxBytes > 0 {
		g.bytesLeft = min(req.MaxBytes, wire.GrepMaxBytes)
	}

	fi, err := os.Stat(root)
	if err != nil {
		return wire.GrepResult{}, fsNotFound(root, err)
	}
	switch {
	case fi.Mode().IsRegular():
		err = g.file(root, true)
	case fi.IsDir():
		w := &fsWalker{ctx: ctx, guard: s.fsGuard(), skip: fsSkipDirs(root), max: wire.GrepMaxEntries}
		err = w.walk(root, func(p string, d fs.DirEntry) error {
			if !d.Type().IsRegular() {
				return nil
			}
			if req.Include != "" {
				if ok, _ := path.Match(req.Include, d.Name()); !ok {
					return nil
				}
			}
			return g.file(p, false)
		})
		if errors.Is(err, errFSWalkLimit) {
			g.res.Truncated, g.res.Reason = true, fsReasonMaxEntries
			err = nil
		}
	default:
		return wire.GrepResult{}, fsErrorf(wire.CodeInvalid, "%s is %s; grep searches a file or a directory", root, fsDescribeType(fi.Mode()))
	}
	if err != nil && err != errFSStop {
		return wire.GrepResult{}, err
	}
	return g.res, nil
}

func (g *fsGrep) stop(reason string) error {
	g.res.Truncated, g.res.Reason = true, reason
	return errFSStop
}

// file searches one file. Files that vanish or cannot be opened during a
// walk are skipped; the root file's errors are reported.
func (g *fsGrep) file(p string, isRoot bool) error {
	if err := g.ctx.Err(); err != nil {
		return err
	}
	if g.res.FilesScanned == g.maxFiles {
		return g.stop(fsReasonMaxFiles)
	}
	if g.bytesLeft == 0 {
		return g.stop(fsReasonMaxBytes)
	}
	flags := os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_NOCTTY
	if !isRoot {
		// The walk saw a regular file here; a symlink put in its place
		// since must not lead the search elsewhere.
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(p, flags, 0)
	if err != nil {
		if isRoot {
			return fsNotFound(p, err)
		}
		return nil
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	g.res.FilesScanned++
	lr := &io.LimitedReader{R: f, N: g.bytesLeft}
	defer func() {
		g.res.BytesScanned += g.bytesLeft - lr.N
		g.bytesLeft = lr.N
	}()
	r := bufio.NewReaderSize(lr, fsChunk)
	if head, _ := r.Peek(fsSniffBytes); bytes.IndexByte(head, 0) >= 0 {
		return nil
	}
	lineNo, reported := 0, 0
	g.piece = g.piece[:0]
	for {
		chunk, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			g.piece = append(g.piece, chunk...)
			if len(g.piece) >= fsGrepMaxLine {
				if err := g.line(p, lineNo+1, &reported, g.piece); err != nil {
					return err
				}
				g.piece = g.piece[:0]
			}
			continue
		}
		line := chunk
		if len(g.piece) > 0 {
			g.piece = append(g.piece, chunk...)
			line = g.piece
		}
		if len(line) > 0 {
			lineNo++
			if err := g.line(p, lineNo, &reported, line); err != nil {
				return err
			}
			if lineNo%4096 == 0 {
				if err := g.ctx.Err(); err != nil {
					return err
				}
			}
		}
		g.piece = g.piece[:0]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil
		}
	}
	if lr.N == 0 && fi.Size() > g.bytesLeft {
		// The byte budget ended inside this file.
		return g.stop(fsReasonMaxBytes)
	}
	return nil
}

// line matches one line (or a piece of a long one) and records it once.
func (g *fsGrep) line(p string, lineNo int, reported *int, line []byte) error {
	if *reported == lineNo {
		return nil
	}
	line = bytes.TrimSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	start, end := g.match(line)
	if start < 0 {
		return nil
	}
	if len(g.res.Matches) == g.maxMatches {
		return g.stop(fsReasonMaxMatches)
	}
	text := fsExcerpt(line, start, end, g.maxLine)
	size := 64 + fsJSONSize(p) + fsJSONSize(text)
	if size > g.budget {
		return g.stop(fsReasonResponseSize)
	}
	g.budget -= size
	*reported = lineNo
	g.res.Matches = append(g.res.Matches, wire.GrepMatch{Path: p, Line: lineNo, Text: text})
	return nil
}

// fsExcerpt cuts a long line to at most maxLen bytes (plus "…" marks)
// around the match, so that a hit deep in a minified file still shows.
func fsExcerpt(line []byte, start, end, maxLen int) string {
	if len(line) <= maxLen {
		return string(line)
	}
	from := 0
	if end > maxLen {
		from = max(0, min(start-maxLen/4, len(line)-maxLen))
	}
	for from > 0 && from < len(line) && !utf8.RuneStart(line[from]) {
		from++
	}
	to := min(len(line), from+maxLen)
	part := fsCutUTF8(line[from:to], maxLen)
	out := make([]byte, 0, len(part)+2*len("…"))
	if from > 0 {
		out = append(out, "…"...)
	}
	out = append(out, part...)
	if from+len(part) < len(line) {
		out = append(out, "…"...)
	}
	return string(out)
}
