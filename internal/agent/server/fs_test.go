package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
)

// startFSAgent runs an agent in the test process with a temporary data
// directory, and returns a client for it and that directory.
func startFSAgent(t *testing.T, user *Credential) (*client.Client, string) {
	t.Helper()
	c, data, _ := startFSAgentProt(t, user)
	return c, data
}

// startFSAgentProt is startFSAgent with berth's directories played by
// PROT/run/berth (holding a socket named agent.sock) and PROT/.berth
// (holding a file named berth), under a temporary PROT that it returns.
func startFSAgentProt(t *testing.T, user *Credential) (*client.Client, string, string) {
	t.Helper()
	prot := t.TempDir()
	if err := os.MkdirAll(filepath.Join(prot, "run", "berth"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(prot, ".berth"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(prot, ".berth", "berth"), "binary")
	l, err := net.Listen("unix", filepath.Join(prot, "run", "berth", wire.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	// Socket paths are limited to 107 bytes; test temp dirs carry the test
	// name and can be longer.
	sockDir, err := os.MkdirTemp("", "bfs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	data := t.TempDir()
	sock := filepath.Join(sockDir, wire.SocketName)
	s, err := newServer(Options{
		SocketPath: sock,
		Subreaper:  true,
		DataDir:    data,
		User:       user,
		Logger:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.fsProt = newFSProtect([]string{filepath.Join(prot, "run", "berth"), filepath.Join(prot, ".berth")})
	t.Cleanup(s.fsProt.close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancel")
		}
	})
	if _, err := client.WaitReady(context.Background(), sock, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c := client.New(sock)
	t.Cleanup(c.Close)
	return c, data, prot
}

func wantCode(t *testing.T, err error, code string) *client.RemoteError {
	t.Helper()
	var re *client.RemoteError
	if !errors.As(err, &re) || re.Code != code {
		t.Fatalf("err = %v, want a RemoteError with code %q", err, code)
	}
	return re
}

func mustWrite(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sha(b string) string {
	s := sha256.Sum256([]byte(b))
	return hex.EncodeToString(s[:])
}

func TestFSResolvePath(t *testing.T) {
	for _, tc := range []struct {
		base, in, want string
		ok             bool
	}{
		{"/data", "a/b.txt", "/data/a/b.txt", true},
		{"/data", "./a//b/../c", "/data/a/c", true},
		{"/data", "../etc/passwd", "/etc/passwd", true},
		{"/data", "/etc/../tmp/", "/tmp", true},
		{"/data", ".", "/data", true},
		{"", "x", "/data/x", true},
		{"rel/dir", "x", "/rel/dir/x", true},
		{"/data", "", "", false},
		{"/data", "a\x00b", "", false},
		{"/data", strings.Repeat("a", wire.MaxPathLength+1), "", false},
	} {
		got, err := fsResolvePath(tc.base, tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("fsResolvePath(%q, %q) = %q, %v; want %q ok=%v", tc.base, tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzResolvePath(f *testing.F) {
	for _, s := range []string{"", ".", "..", "/", "a/b", "../../x", "/a/./b/../c/", "a\x00b", "//x//", strings.Repeat("../", 100)} {
		f.Add("/data", s)
	}
	f.Add("", "x")
	f.Add("weird\x00base", "y")
	f.Fuzz(func(t *testing.T, base, p string) {
		got, err := fsResolvePath(base, p)
		if strings.IndexByte(p, 0) >= 0 || p == "" {
			if err == nil {
				t.Fatalf("accepted %q as %q", p, got)
			}
			return
		}
		if err != nil {
			var fe *fsError
			if !errors.As(err, &fe) || fe.code != wire.CodeInvalid {
				t.Fatalf("error %v is not an invalid-path error", err)
			}
			return
		}
		if !path.IsAbs(got) || path.Clean(got) != got || strings.IndexByte(got, 0) >= 0 || len(got) > wire.MaxPathLength {
			t.Fatalf("fsResolvePath(%q, %q) = %q: not absolute, clean and bounded", base, p, got)
		}
		if !wire.ValidPath(got) {
			t.Fatalf("the client would reject %q", got)
		}
		if path.IsAbs(p) && got != path.Clean(p) {
			t.Fatalf("absolute %q resolved to %q", p, got)
		}
	})
}

func TestFSStat(t *testing.T) {
	c, data := startFSAgent(t, nil)
	ctx := context.Background()
	mustWrite(t, filepath.Join(data, "dir", "f.txt"), "hello")
	if err := os.Chmod(filepath.Join(data, "dir", "f.txt"), 0o750|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("dir/f.txt", filepath.Join(data, "link")); err != nil {
		t.Fatal(err)
	}

	fi, err := c.Stat(ctx, "dir/f.txt")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Path != data+"/dir/f.txt" || fi.Name != "f.txt" || fi.Type != wire.FileTypeFile || fi.Size != 5 || fi.Mode != "4750" {
		t.Errorf("stat of a relative path = %+v", fi)
	}
	if time.Since(fi.ModTime) > time.Minute || fi.ModTime.Location() != time.UTC {
		t.Errorf("mod time %v", fi.ModTime)
	}

	fi, err = c.Stat(ctx, data+"/link")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Type != wire.FileTypeSymlink || fi.LinkTarget != "dir/f.txt" || fi.Size != 0 {
		t.Errorf("stat of a symlink = %+v, want the link itself", fi)
	}
	fi, err = c.Stat(ctx, "dir")
	if err != nil || fi.Type != wire.FileTypeDir {
		t.Errorf("stat of a directory = %+v, %v", fi, err)
	}

	re := wantCode(t, func() error { _, err := c.Stat(ctx, "nope"); return err }(), wire.CodeNotFound)
	if re.StatusCode != 404 || !strings.Contains(re.Message, data+"/nope") {
		t.Errorf("not found error = %+v", re)
	}
	wantCode(t, func() error { _, err := c.Stat(ctx, ""); return err }(), wire.CodeInvalid)
	wantCode(t, func() error { _, err := c.Stat(ctx, "a\x00b"); return err }(), wire.CodeInvalid)
	wantCode(t, func() error { _, err := c.Stat(ctx, "dir/f.txt/x"); return err }(), wire.CodeNotDirectory)
}

func TestFSList(t *testing.T) {
	c, data := startFSAgent(t, nil)
	ctx := context.Background()
	for i := range 25 {
		mustWrite(t, filepath.Join(data, fmt.Sprintf("f%02d", i)), "x")
	}
	mustWrite(t, filepath.Join(data, "sub", "deep", "g"), "y")
	if err := os.Symlink("/", filepath.Join(data, "sub", "root")); err != nil {
		t.Fatal(err)
	}

	res, err := c.List(ctx, wire.ListRequest{Path: ".", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != data || res.Total != 26 || len(res.Entries) != 10 || res.NextOffset != 10 {
		t.Fatalf("first page: path %q total %d entries %d next %d", res.Path, res.Total, len(res.Entries), res.NextOffset)
	}
	if res.Entries[0].Path != data+"/f00" || res.Entries[9].Name != "f09" {
		t.Errorf("first page not sorted: %s .. %s", res.Entries[0].Path, res.Entries[9].Path)
	}
	res, err = c.List(ctx, wire.ListRequest{Path: data, Offset: 20, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Entries) != 6 || res.NextOffset != 0 || res.Entries[5].Path != data+"/sub" || res.Entries[5].Type != wire.FileTypeDir {
		t.Fatalf("last page: %d entries, next %d, last %+v", len(res.Entries), res.NextOffset, res.Entries[len(res.Entries)-1])
	}

	// Recursive: the symlink to / is listed, not followed.
	res, err = c.List(ctx, wire.ListRequest{Path: "sub", Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range res.Entries {
		got = append(got, strings.TrimPrefix(e.Path, data))
	}
	if want := "/sub/deep /sub/deep/g /sub/root"; strings.Join(got, " ") != want {
		t.Errorf("recursive listing = %v, want %s", got, want)
	}

	_, err = c.List(ctx, wire.ListRequest{Path: ".", Recursive: true, MaxEntries: 20})
	re := wantCode(t, err, wire.CodeLimit)
	if !strings.Contains(re.Message, "max_entries") || !strings.Contains(re.Message, "narrow") {
		t.Errorf("limit message %q does not say what to do", re.Message)
	}
	res, err = c.List(ctx, wire.ListRequest{Path: ".", Recursive: true, MaxEntries: 29})
	if err != nil || res.Total != 29 {
		t.Errorf("recursive listing of exactly max_entries entries: total %d, %v", res.Total, err)
	}
	_, err = c.List(ctx, wire.ListRequest{Path: "f00"})
	wantCode(t, err, wire.CodeNotDirectory)
	_, err = c.List(ctx, wire.ListRequest{Path: ".", Offset: -1})
	wantCode(t, err, wire.CodeInvalid)
}

func TestFSReadText(t *testing.T) {
	c, data := startFSAgent(t, nil)
	ctx := context.Background()
	var sb strings.Builder
	for i := range 10 {
		fmt.Fprintf(&sb, "line%d\n", i)
	}
	ten := sb.String()
	mustWrite(t, filepath.Join(data, "ten.txt"), ten)
	read := func(req wire.ReadTextRequest) wire.ReadTextResult {
		t.Helper()
		res, err := c.ReadText(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	type window struct {
		text              string
		start, end, total int
		trunc             bool
		next              int
	}
	check := func(name string, res wire.ReadTextResult, w window) {
		t.Helper()
		got := window{res.Text, res.StartLine, res.EndLine, res.TotalLines, res.Truncated, res.NextOffset}
		if got != w {
			t.Errorf("%s: got %+v, want %+v", name, got, w)
		}
	}

	res := read(wire.ReadTextRequest{Path: "ten.txt", Offset: 2, Limit: 3})
	check("middle", res, window{"line2\nline3\nline4\n", 2, 5, 10, true, 5})
	if res.Revision != sha(ten) || res.Size != int64(len(ten)) || res.Binary || !strings.HasPrefix(res.MIMEType, "text/plain") || res.Path != data+"/ten.txt" {
		t.Errorf("metadata: %+v", res)
	}
	check("head", read(wire.ReadTextRequest{Path: "ten.txt"}), window{ten, 0, 10, 10, false, 0})
	check("end", read(wire.ReadTextRequest{Path: "ten.txt", Offset: 8, Limit: 5}), window{"line8\nline9\n", 8, 10, 10, false, 0})
	check("past the end", read(wire.ReadTextRequest{Path: "ten.txt", Offset: 50}), window{"", 10, 10, 10, false, 0})
	check("tail", read(wire.ReadTextRequest{Path: "ten.txt", Tail: 3}), window{"line7\nline8\nline9\n", 7, 10, 10, false, 0})
	check("tail of all", read(wire.ReadTextRequest{Path: "ten.txt", Tail: 30}), window{ten, 0, 10, 10, false, 0})
	check("bytes", read(wire.ReadTextRequest{Path: "ten.txt", MaxBytes: 14}), window{"line0\nline1\n", 0, 2, 10, true, 2})
	check("tail bytes", read(wire.ReadTextRequest{Path: "ten.txt", Tail: 5, MaxBytes: 14}), window{"line8\nline9\n", 8, 10, 10, true, 0})

	// Paging by NextOffset with a small byte cap gives back the file.
	var all strings.Builder
	for off, n := 0, 0; ; n++ {
		r := read(wire.ReadTextRequest{Path: "ten.txt", Offset: off, Limit: 4, MaxBytes: 20})
		all.WriteString(r.Text)
		if r.NextOffset == 0 {
			break
		}
		if r.NextOffset <= off || n > 20 {
			t.Fatalf("paging does not advance: offset %d -> %d", off, r.NextOffset)
		}
		off = r.NextOffset
	}
	if all.String() != ten {
		t.Errorf("pages concatenate to %q", all.String())
	}

	mustWrite(t, filepath.Join(data, "nonl.txt"), "a\nb")
	check("no final newline", read(wire.ReadTextRequest{Path: "nonl.txt"}), window{"a\nb", 0, 2, 2, false, 0})
	check("tail no final newline", read(wire.ReadTextRequest{Path: "nonl.txt", Tail: 1}), window{"b", 1, 2, 2, false, 0})
	mustWrite(t, filepath.Join(data, "empty.txt"), "")
	check("empty", read(wire.ReadTextRequest{Path: "empty.txt"}), window{"", 0, 0, 0, false, 0})

	// One line longer than MaxBytes is cut, at a character boundary.
	mustWrite(t, filepath.Join(data, "long.txt"), strings.Repeat("é", 20)+"\nnext\n")
	check("long line", read(wire.ReadTextRequest{Path: "long.txt", MaxBytes: 9}), window{"éééé", 0, 1, 2, true, 1})

	mustWrite(t, filepath.Join(data, "bin"), "text\x00more")
	res = read(wire.ReadTextRequest{Path: "bin"})
	if !res.Binary || res.Text != "" || res.MIMEType != "application/octet-stream" || res.Revision != sha("text\x00more") {
		t.Errorf("binary file: %+v", res)
	}
	mustWrite(t, filepath.Join(data, "latin1"), "caf\xe9\n")
	if res = read(wire.ReadTextRequest{Path: "latin1"}); !res.Binary {
		t.Errorf("invalid UTF-8 not reported as binary: %+v", res)
	}
	// A character split by the 8 KiB sniff window is not invalid UTF-8.
	mustWrite(t, filepath.Join(data, "split"), strings.Repeat("a", fsSniffBytes-1)+"éé\n")
	if res = read(wire.ReadTextRequest{Path: "split"}); res.Binary {
		t.Error("a character across the sniff boundary made the file binary")
	}

	_, err := c.ReadText(ctx, wire.ReadTextRequest{Path: "."})
	wantCode(t, err, wire.CodeIsDirectory)
	_, err = c.ReadText(ctx, wire.ReadTextRequest{Path: "missing"})
	wantCode(t, err, wire.CodeNotFound)
	if err := syscall.Mkfifo(filepath.Join(data, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = c.ReadText(ctx, wire.ReadTextRequest{Path: "fifo"})
	wantCode(t, err, wire.CodeInvalid)
}

// TestFSReadTextHuge reads a sparse file larger than MaxRevisionBytes: no
// revision, no line count, a head read that stops early and a tail read
// from the end.
func TestFSReadTextHuge(t *testing.T) {
	c, data := startFSAgent(t, nil)
	ctx := context.Background()
	f, err := os.Create(filepath.Join(data, "huge.log"))
	if err != nil {
		t.Fatal(err)
	}
	const size = wire.MaxRevisionBytes + 50<<20
	head := strings.Repeat("start\n", fsSniffBytes/6+1)
	f.WriteString(head)
	end := "\nx\ny\nz\n"
	if _, err := f.WriteAt([]byte(end), size-int64(len(end))); err != nil {
		t.Fatal(err)
	}
	f.Close()

	res, err := c.ReadText(ctx, wire.ReadTextRequest{Path: "huge.log", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Text != "start\nstart\n" || res.TotalLines != -1 || res.Revision != "" || !res.Truncated || res.NextOffset != 2 || res.Size != size || res.Binary {
		t.Errorf("head of a huge file: %+v", res)
	}
	res, err = c.ReadText(ctx, wire.ReadTextRequest{Path: "huge.log", Tail: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Text != "y\nz\n" || res.StartLine != -1 || res.EndLine != -1 || res.TotalLines != -1 || res.Truncated {
		t.Errorf("tail of a huge file: %+v", res)
	}
}

// TestFSLineWindows checks the head and tail collectors against a plain
// split of random files fed in random chunks.
func TestFSLineWindows(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 500 {
		var sb strings.Builder
		nLines := rng.IntN(30)
		for range nLines {
			sb.WriteString(strings.Repeat("x", rng.IntN(12)))
			sb.WriteByte('\n')
		}
		if rng.IntN(2) == 0 {
			sb.WriteString("tail")
		}
		content := sb.String()
		lines := fsSplitLines(content)
		feed := func(sink fsLineSink) {
			b := []byte(content)
			for len(b) > 0 {
				n := min(len(b), 1+rng.IntN(7))
				sink.feed(b[:n])
				b = b[n:]
			}
			sink.finish()
		}
		start, limit := rng.IntN(len(lines)+2), 1+rng.IntN(10)
		maxBytes := 1 + rng.IntN(60)

		head := &fsHeadLines{start: start, end: start + limit, maxBytes: maxBytes}
		feed(head)
		var res wire.ReadTextResult
		head.result(&res, true)
		// What a person expects: whole lines from start while they fit.
		want, end := "", min(start, len(lines))
		for end < min(start+limit, len(lines)) && len(want)+len(lines[end]) <= maxBytes {
			want += lines[end]
			end++
		}
		cut := false
		if end == start && start < len(lines) && len(lines[start]) > maxBytes {
			want, end, cut = lines[start][:maxBytes], start+1, true
		}
		more := end < len(lines)
		if res.Text != want || res.EndLine != end || res.TotalLines != len(lines) || res.Truncated != (more || cut) || (res.NextOffset != 0) != more {
			t.Fatalf("iter %d head(%d,%d,%d) of %q = %+v; want text %q end %d", iter, start, limit, maxBytes, content, res, want, end)
		}

		n := 1 + rng.IntN(8)
		tail := newFSTailLines(n, maxBytes)
		feed(tail)
		res = wire.ReadTextResult{}
		tail.result(&res, true)
		from := max(0, len(lines)-n)
		want = strings.Join(lines[from:], "")
		for len(want) > maxBytes && from < len(lines)-1 {
			want = strings.Join(lines[from+1:], "")
			from++
		}
		if len(want) > maxBytes {
			want = want[:maxBytes]
		}
		if res.Text != want || res.StartLine != from || res.EndLine != len(lines) {
			t.Fatalf("iter %d tail(%d,%d) of %q = %+v; want %q from %d", iter, n, maxBytes, content, res, want, from)
		}

		// The backward tail (for files too large to count) agrees on the
		// text.
		f, err := os.CreateTemp(t.TempDir(), "tail")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(content); err != nil {
			t.Fatal(err)
		}
		back, err := fsTailBackward(f, int64(len(content)), n, maxBytes, wire.ReadTextResult{})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if wantBack := res.Text; back.Text != wantBack && !(len(wantBack) == maxBytes && strings.HasSuffix(lines[len(lines)-1], back.Text)) {
			t.Fatalf("iter %d backward tail(%d,%d) of %q = %q, want %q", iter, n, maxBytes, content, back.Text, wantBack)
		}
	}
}

func TestFSTailBackwardLarge(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "big")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sb strings.Builder
	for i := range 50000 {
		fmt.Fprintf(&sb, "line %d\n", i)
	}
	if _, err := f.WriteString(sb.String()); err != nil {
		t.Fatal(err)
	}
	res, err := fsTailBackward(f, int64(sb.Len()), 3, 1<<20, wire.ReadTextResult{})
	if err != nil || res.Text != "line 49997\nline 49998\nline 49999\n" || res.Truncated || res.StartLine != -1 {
		t.Errorf("tail of a multi-chunk file = %+v, %v", res, err)
	}
	res, err = fsTailBackward(f, int64(sb.Len()), 20000, 100, wire.ReadTextResult{})
	if err != nil || !res.Truncated || len(res.Text) > 100 || !strings.HasSuffix(res.Text, "line 49999\n") || !strings.HasPrefix(res.Text, "line ") {
		t.Errorf("byte-capped tail = %q, truncated %v, %v", res.Text, res.Truncated, err)
	}
}

func TestFSReadRange(t *testing.T) {
	c, data := startFSAgent(t, nil)
	ctx := context.Background()
	const size = 50 << 20
	big := filepath.Join(data, "big.bin")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 1<<20)
	for range size / len(buf) {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		f.Write(buf)
		h.Write(buf)
	}
	f.Close()
	wantSum := hex.EncodeToString(h.Sum(nil))

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rc, info, err := c.ReadRange(ctx, "big.bin", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if sz, ok := rc.(interface{ Size() int64 }); !ok || sz.Size() != size {
		t.Errorf("download does not announce its Content-Length of %d", size)
	}
	h = sha256.New()
	n, err := io.CopyBuffer(h, rc, make([]byte, 64<<10))
	rc.Close()
	runtime.ReadMemStats(&after)
	if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != wantSum {
		t.Fatalf("downloaded %d bytes (%v), checksum match %v", n, err, hex.EncodeToString(h.Sum(nil)) == wantSum)
	}
	if info.Path != big || info.Size != size || info.Type != wire.FileTypeFile {
		t.Errorf("file info header = %+v", info)
	}
	// Both ends of the transfer run in this process: if either buffered
	// the file, it would have allocated its size.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("downloading %d MiB allocated %d MiB", size>>20, alloc>>20)
	}

	rc, _, err = c.ReadRange(ctx, big, 1000, 10)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(rc)
	rc.Close()
	raw, _ := os.ReadFile(big)
	if !bytes.Equal(part, raw[1000:1010]) {
		t.Errorf("range 1000+10 = %x, want %x", part, raw[1000:1010])
	}
	rc, _, err = c.ReadRange(ctx, big, size+5, 0)
	if err != nil {
		t.Fatal(err)
	}
	if part, _ := io.ReadAll(rc); len(part) != 0 {
		t.Errorf("range past the end gave %d bytes", len(part))
	}
	rc.Close()

	mustWrite(t, filepath.Join(data, "ünï cödé.txt"), "x")
	rc, info, err = c.ReadRange(ctx, "ünï cödé.txt", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if info.Name != "ünï cödé.txt" {
		t.Errorf("non-ASCII name through the header: %q", info.Name)
	}
	_, _, err = c.ReadRange(ctx, ".", 0, 0)
	wantCode(t, err, wire.CodeIsDirectory)
	_, _, err = c.ReadRange(ctx, "nope", 0, 0)
	wantCode(t, err, wire.CodeNotFound)
	_, _, err = c.ReadRange(ctx, big, -1, 0)
	wantCode(t, err, wire.CodeInvalid)
}

func TestFSWriteAtomic(t *testing.T) {
	c, data := startFSAgent(t, nil)
	ctx := context.Background()
	target := filepath.Join(data, "atomic.bin")
	versions := make(map[string]bool)
	var contents [][]byte
	for i := range 4 {
		b := bytes.Repeat([]byte{byte('a' + i)}, 1<<20)
		contents = append(contents, b)
		versions[sha(string(b))] = true
	}
	if _, err := c.Write(ctx, wire.WriteRequest{Path: target}, bytes.NewReader(contents[0])); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan string, 1)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				b, err := os.ReadFile(target)
				if err != nil {
					select {
					case errs <- "read failed: " + err.Error():
					default:
					}
					return
				}
				reads.Add(1)
				if !versions[sha(string(b))] {
					select {
					case errs <- fmt.Sprintf("read %d bytes that are none of the versions", len(b)):
					default:
					}
					return
				}
			}
		}()
	}
	for i := range 30 {
		// An io.Reader of unknown length, so the body goes chunked.
		body := io.MultiReader(bytes.NewReader(contents[i%4][:1000]), bytes.NewReader(contents[i%4][1000:]))
		res, err := c.Write(ctx, wire.WriteRequest{Path: "atomic.bin"}, body)
		if err != nil {
			stop.Store(true)
			t.Fatal(err)
		}
		if res.Size != 1<<20 || res.Revision != sha(string(contents[i%4])) || res.Created {
			t.Fatalf("write %d: %+v", i, res)
		}
	}
	stop.Store(true)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	if reads.Load() < 10 {
		t.Logf("only %d concurrent reads happened", reads.Load())
	}
	entries, _ := os.ReadDir(data)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestFSWrite(t *testing.T) {
	c, data, prot := startFSAgentProt(t, nil)
	ctx := context.Background()

	res, err := c.Write(ctx, wire.WriteRequest{Path: "new.txt"}, strings.NewReader("hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != data+"/new.txt" || !res.Created || res.Size != 6 || res.Revision != sha("hello\n") {
		t.Errorf("write result %+v", res)
	}
	fi, _ := os.Stat(filepath.Join(data, "new.txt"))
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("new file mode %v, want 0644", fi.Mode())
	}

	// The mode of an existing file is kept unless one is given.
	os.Chmod(filepath.Join(data, "new.txt"), 0o600)
	if _, err := c.Write(ctx, wire.WriteRequest{Path: "new.txt"}, strings.NewReader("again")); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(data, "new.txt")); fi.Mode().Perm() != 0o600 {
		t.Errorf("rewritten file mode %v, want 0600 kept", fi.Mode())
	}
	if _, err := c.Write(ctx, wire.WriteRequest{Path: "new.txt", Mode: "755"}, nil); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(data, "new.txt")); fi.Mode().Perm() != 0o755 || fi.Size() != 0 {
		t.Errorf("file written with mode 755 and no body: %v, %d bytes", fi.Mode(), fi.Size())
	}

	_, err = c.Write(ctx, wire.WriteRequest{Path: "a/b/c.txt"}, strings.NewReader("x"))
	re := wantCode(t, err, wire.CodeNotFound)
	if !strings.Contains(re.Message, "make_parents") {
		t.Errorf("missing parent message %q does not mention make_parents", re.Message)
	}
	if _, err := c.Write(ctx, wire.WriteRequest{Path: "a/b/c.txt", MakeParents: true}, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if mustRead(t, filepath.Join(data, "a/b/c.txt")) != "x" {
		t.Error("make_parents write lost its content")
	}
	_, err = c.Write(ctx, wire.WriteRequest{Path: "a"}, strings.NewReader("x"))
	wantCode(t, err, wire.CodeIsDirectory)
	_, err = c.Write(ctx, wire.WriteRequest{Path: "a/b/c.txt/d"}, strings.NewReader("x"))
	wantCode(t, err, wire.CodeNotDirectory)
	_, err = c.Write(ctx, wire.WriteRequest{Path: "x", Mode: "rwx"}, nil)
	wantCode(t, err, wire.CodeInvalid)

	// Writing to a symlink writes where it points.
	os.Symlink("a/b/c.txt", filepath.Join(data, "link"))
	res, err = c.Write(ctx, wire.WriteRequest{Path: "link"}, strings.NewReader("through"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != data+"/a/b/c.txt" || mustRead(t, filepath.Join(data, "a/b/c.txt")) != "through" {
		t.Errorf("write through a symlink: %+v", res)
	}
	if fi, _ := os.Lstat(filepath.Join(data, "link")); fi.Mode()&os.ModeSymlink == 0 {
		t.Error("the symlink was replaced")
	}
	os.Symlink("nowhere", filepath.Join(data, "dangling"))
	_, err = c.Write(ctx, wire.WriteRequest{Path: "dangling"}, strings.NewReader("x"))
	wantCode(t, err, wire.CodeInvalid)

	// Berth's own directories are off limits.
	for _, p := range []string{"/run/berth/agent.sock", "/run/berth/new", "/.berth/berth"} {
		_, err = c.Write(ctx, wire.WriteRequest{Path: prot + p}, strings.NewReader("x"))
		wantCode(t, err, wire.CodePermission)
	}
	// Nor through a symlink to one of them, or to a file in one.
	os.Symlink(prot+"/run/berth", filepath.Join(data, "sockdir"))
	_, err = c.Write(ctx, wire.WriteRequest{Path: "sockdir/new"}, strings.NewReader("x"))
	wantCode(t, err, wire.CodePermission)
	os.Symlink(prot+"/.berth/berth", filepath.Join(data, "binlink"))
	_, err = c.Write(ctx, wire.WriteRequest{Path: "binlink"}, strings.NewReader("x"))
	wantCode(t, err, wire.CodePermission)
	if mustRead(t, prot+"/.berth/berth") != "binary" {
		t.Error("a write through a symlink changed berth's binary")
	}

	// The size cap of a write.
	dir := t.TempDir()
	d, err := fsOpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, _, _, err = fsWriteTemp(d, "f", strings.NewReader(strings.Repeat("x", 101)), 100, 0o644, -1, -1)
	if fe := fsClassify(err); fe.code != wire.CodeTooLarge {
		t.Errorf("writing 101 bytes with a cap of 100: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a refused write left %v", entries)
	}
}

func TestFSWriteConflict(t *testing.T) {
	c, data := startFSAgent(t, nil)
	ctx := context.Background()
	mustWrite(t, filepath.Join(data, "f"), "v1")

	res, err := c.Write(ctx, wire.WriteRequest{Path: "f", ExpectedRevision: sha("v1")}, strings.NewReader("v2"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Write(ctx, wire.WriteRequest{Path: "f", ExpectedRevision: sha("v1")}, strings.NewReader("v3"))
	re := wantCode(t, err, wire.CodeConflict)
	if !strings.Contains(re.Message, res.Revision) {
		t.Errorf("conflict message %q does not name the current revision %s", re.Message, res.Revision)
	}
	if mustRead(t, filepath.Join(data, "f")) != "v2" {
		t.Error("a conflicting write changed the file")
	}
	// A big body refused before it is read still gets the error back.
	_, err = c.Write(ctx, wire.WriteRequest{Path: "f", ExpectedRevision: sha("v1")}, io.LimitReader(zeroReader{}, 64<<20))
	wantCode(t, err, wire.CodeConflict)

	_, err = c.Write(ctx, wire.WriteRequest{Path: "missing", ExpectedRevision: sha("v1")}, strings.NewReader("x"))
	wantCode(t, err, wire.CodeConflict)
	_, err = c.Write(ctx, wire.WriteRequest{Path: "f", ExpectedRevision: "abc"}, strings.NewReader("x"))
	wantCode(t, err, wire.CodeInvalid)

	// A change behind the agent's back between the check and the rename
	// is caught by the re-check.
	dd, err := fsOpenDir(data)
	if err != nil {
		t.Fatal(err)
	}
	defer dd.Close()
	check, err := fsCheckRevision(fsRevisionCheck{dir: dd, name: "f", target: filepath.Join(data, "f"), expected: sha("v2")})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(data, "f"), "v9")
	if err := check.recheck(); fsClassify(err).code != wire.CodeConflict {
		t.Errorf("recheck after an outside change = %v, want a conflict", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestFSEdit(t *testing.T) {
	c, data := startFSAgent(t, nil)
	ctx := context.Background()
	p := filepath.Join(data, "code.go")
	orig := "package main\n\nfunc main() {\n\tprintln(\"hi\")\n}\n"
	mustWrite(t, p, orig)
	os.Chmod(p, 0o640)

	res, err := c.Edit(ctx, wire.EditRequest{Path: "code.go", DryRun: true, Edits: []wire.Edit{{Old: `println("hi")`, New: `println("hello")`}}})
	if err != nil {
		t.Fatal(err)
	}
	wantDiff := "--- a" + p + "\n+++ b" + p + "\n" +
		"@@ -1,5 +1,5 @@\n package main\n \n func main() {\n-\tprintln(\"hi\")\n+\tprintln(\"hello\")\n }\n"
	if res.Diff != wantDiff {
		t.Errorf("dry-run diff:\n%s\nwant:\n%s", res.Diff, wantDiff)
	}
	if res.Applied || res.Replacements != 1 || res.Revision != sha(orig) || mustRead(t, p) != orig {
		t.Errorf("dry run: %+v; file changed: %v", res, mustRead(t, p) != orig)
	}

	res, err = c.Edit(ctx, wire.EditRequest{Path: "code.go", ExpectedRevision: sha(orig), Edits: []wire.Edit{
		{Old: "hi", New: "hello"},
		{Old: "main", New: "app", ReplaceAll: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := "package app\n\nfunc app() {\n\tprintln(\"hello\")\n}\n"
	if !res.Applied || res.Replacements != 3 || res.Revision != sha(want) || mustRead(t, p) != want {
		t.Errorf("edit: %+v, file %q", res, mustRead(t, p))
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("edit changed the mode to %v", fi.Mode())
	}

	// All or nothing: the first edit applies, the second does not, so
	// nothing is written.
	_, err = c.Edit(ctx, wire.EditRequest{Path: "code.go", Edits: []wire.Edit{{Old: "app", New: "x", ReplaceAll: true}, {Old: "absent", New: "y"}}})
	re := wantCode(t, err, wire.CodeNoMatch)
	if !strings.Contains(re.Message, "edit 2 of 2") {
		t.Errorf("no-match message %q does not say which edit", re.Message)
	}
	_, err = c.Edit(ctx, wire.EditRequest{Path: "code.go", Edits: []wire.Edit{{Old: "app", New: "x"}}})
	re = wantCode(t, err, wire.CodeAmbiguous)
	if !strings.Contains(re.Message, "2 times") || !strings.Contains(re.Message, "replace_all") {
		t.Errorf("ambiguous message %q", re.Message)
	}
	_, err = c.Edit(ctx, wire.EditRequest{Path: "code.go", Edits: []wire.Edit{{Old: "func  app()", New: "x"}}})
	re = wantCode(t, err, wire.CodeNoMatch)
	if !strings.Contains(re.Message, "whitespace") {
		t.Errorf("no hint about whitespace in %q", re.Message)
	}
	if mustRead(t, p) != want {
		t.Error("a failed edit changed the file")
	}
	_, err = c.Edit(ctx, wire.EditRequest{Path: "code.go", ExpectedRevision: sha(orig), Edits: []wire.Edit{{Old: "app()", New: "x()"}}})
	re = wantCode(t, err, wire.CodeConflict)
	if !strings.Contains(re.Message, sha(want)) {
		t.Errorf("conflict message %q lacks the current revision", re.Message)
	}
	_, err = c.Edit(ctx, wire.EditRequest{Path: "code.go", Edits: []wire.Edit{{Old: "", New: "x"}}})
	wantCode(t, err, wire.CodeInvalid)
	_, err = c.Edit(ctx, wire.EditRequest{Path: "none.go", Edits: []wire.Edit{{Old: "a", New: "b"}}})
	wantCode(t, err, wire.CodeNotFound)
	_, err = c.Edit(ctx, wire.EditRequest{Path: ".", Edits: []wire.Edit{{Old: "a", New: "b"}}})
	wantCode(t, err, wire.CodeIsDirectory)

	crlf := filepath.Join(data, "crlf.txt")
	mustWrite(t, crlf, "one\r\ntwo\r\n")
	_, err = c.Edit(ctx, wire.EditRequest{Path: crlf, Edits: []wire.Edit{{Old: "one\ntwo", New: "x"}}})
	re = wantCode(t, err, wire.CodeNoMatch)
	if !strings.Contains(re.Message, "CRLF") {
		t.Errorf("no hint about CRLF in %q", re.Message)
	}

	// Two changes far apart: two hunks.
	var sb strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&sb, "l%d\n", i)
	}
	mustWrite(t, filepath.Join(data, "twenty"), sb.String())
	res, err = c.Edit(ctx, wire.EditRequest{Path: "twenty", Edits: []wire.Edit{{Old: "l2\n", New: "L2\n"}, {Old: "l18\n", New: ""}}})
	if err != nil {
		t.Fatal(err)
	}
	wantDiff = "--- a" + data + "/twenty\n+++ b" + data + "/twenty\n" +
		"@@ -1,5 +1,5 @@\n l1\n-l2\n+L2\n l3\n l4\n l5\n" +
		"@@ -15,6 +15,5 @@\n l15\n l16\n l17\n-l18\n l19\n l20\n"
	if res.Diff != wantDiff {
		t.Errorf("two-hunk diff:\n%s\nwant:\n%s", res.Diff, wantDiff)
	}
}

func TestFSMkdirDelete(t *testing.T) {
	c, data, prot := startFSAgentProt(t, nil)
	ctx := context.Background()

	fi, err := c.Mkdir(ctx, "d", false)
	if err != nil || fi.Type != wire.FileTypeDir || fi.Mode != "0755" || fi.Path != data+"/d" {
		t.Fatalf("mkdir = %+v, %v", fi, err)
	}
	_, err = c.Mkdir(ctx, "d", false)
	wantCode(t, err, wire.CodeExists)
	if _, err := c.Mkdir(ctx, "d", true); err != nil {
		t.Errorf("mkdir with parents of an existing directory: %v", err)
	}
	_, err = c.Mkdir(ctx, "x/y/z", false)
	wantCode(t, err, wire.CodeNotFound)
	if fi, err = c.Mkdir(ctx, "x/y/z", true); err != nil || fi.Type != wire.FileTypeDir {
		t.Fatalf("mkdir -p = %+v, %v", fi, err)
	}
	mustWrite(t, filepath.Join(data, "file"), "x")
	_, err = c.Mkdir(ctx, "file", true)
	wantCode(t, err, wire.CodeNotDirectory)

	for _, p := range []string{"/", prot, prot + "/run/berth", prot + "/run/berth/agent.sock", prot + "/run", prot + "/.berth/berth", "/data/../"} {
		re := wantCode(t, c.Delete(ctx, p, true), wire.CodePermission)
		if !strings.Contains(re.Message, "refusing") {
			t.Errorf("delete %s: message %q", p, re.Message)
		}
	}
	// Nor through a symlink to one of them.
	os.Symlink(prot+"/run", filepath.Join(data, "runlink"))
	wantCode(t, c.Delete(ctx, "runlink/berth", true), wire.CodePermission)
	wantCode(t, c.Delete(ctx, "runlink/berth/agent.sock", false), wire.CodePermission)
	// Nor made in them.
	_, err = c.Mkdir(ctx, "runlink/berth/sub", false)
	wantCode(t, err, wire.CodePermission)
	_, err = c.Mkdir(ctx, "runlink/berth/sub/deeper", true)
	wantCode(t, err, wire.CodePermission)
	protEntries(t, prot)

	re := wantCode(t, c.Delete(ctx, "x", false), wire.CodeNotEmpty)
	if !strings.Contains(re.Message, "recursive") {
		t.Errorf("not-empty message %q", re.Message)
	}
	if err := c.Delete(ctx, "x", true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(data, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Error("recursive delete left the directory")
	}
	if err := c.Delete(ctx, "d", false); err != nil {
		t.Errorf("deleting an empty directory: %v", err)
	}
	// A symlink is deleted, not its target.
	os.Symlink("file", filepath.Join(data, "flink"))
	if err := c.Delete(ctx, "flink", false); err != nil {
		t.Fatal(err)
	}
	if mustRead(t, filepath.Join(data, "file")) != "x" {
		t.Error("deleting a symlink touched its target")
	}
	if err := c.Delete(ctx, "runlink", false); err != nil {
		t.Errorf("deleting a symlink to /run: %v", err)
	}
	wantCode(t, c.Delete(ctx, "gone", false), wire.CodeNotFound)
}

func TestFSMoveCopy(t *testing.T) {
	c, data, prot := startFSAgentProt(t, nil)
	ctx := context.Background()
	mustWrite(t, filepath.Join(data, "a.txt"), "A")
	mustWrite(t, filepath.Join(data, "b.txt"), "B")

	_, err := c.Move(ctx, "a.txt", "b.txt", false)
	wantCode(t, err, wire.CodeExists)
	fi, err := c.Move(ctx, "a.txt", "b.txt", true)
	if err != nil || fi.Path != data+"/b.txt" || mustRead(t, filepath.Join(data, "b.txt")) != "A" {
		t.Fatalf("move with overwrite = %+v, %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(data, "a.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Error("move left the source")
	}
	_, err = c.Move(ctx, "a.txt", "c.txt", false)
	wantCode(t, err, wire.CodeNotFound)

	// A tree with a symlink and modes, copied.
	mustWrite(t, filepath.Join(data, "src", "x", "run.sh"), "#!/bin/sh\n")
	os.Chmod(filepath.Join(data, "src", "x", "run.sh"), 0o750)
	os.Symlink("x/run.sh", filepath.Join(data, "src", "link"))
	os.Chmod(filepath.Join(data, "src", "x"), 0o700)
	fi, err = c.Copy(ctx, "src", "dst", false)
	if err != nil || fi.Type != wire.FileTypeDir {
		t.Fatalf("copy = %+v, %v", fi, err)
	}
	if mustRead(t, filepath.Join(data, "dst", "x", "run.sh")) != "#!/bin/sh\n" {
		t.Error("copied file content differs")
	}
	if st, _ := os.Stat(filepath.Join(data, "dst", "x", "run.sh")); st.Mode().Perm() != 0o750 {
		t.Errorf("copied file mode %v", st.Mode())
	}
	if st, _ := os.Stat(filepath.Join(data, "dst", "x")); st.Mode().Perm() != 0o700 {
		t.Errorf("copied dir mode %v", st.Mode())
	}
	if target, err := os.Readlink(filepath.Join(data, "dst", "link")); err != nil || target != "x/run.sh" {
		t.Errorf("copied symlink = %q, %v", target, err)
	}
	_, err = c.Copy(ctx, "src", "dst", false)
	wantCode(t, err, wire.CodeExists)
	_, err = c.Copy(ctx, "src", "src/x/inside", false)
	wantCode(t, err, wire.CodeInvalid)
	_, err = c.Copy(ctx, "b.txt", "dst", true)
	wantCode(t, err, wire.CodeIsDirectory)
	_, err = c.Copy(ctx, "src", "b.txt", true)
	wantCode(t, err, wire.CodeNotDirectory)

	// A directory replacing a directory.
	mustWrite(t, filepath.Join(data, "dst", "extra"), "old")
	mustWrite(t, filepath.Join(data, "src", "x", "run.sh"), "changed")
	if _, err := c.Copy(ctx, "src", "dst", true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(data, "dst", "extra")); !errors.Is(err, os.ErrNotExist) || mustRead(t, filepath.Join(data, "dst", "x", "run.sh")) != "changed" {
		t.Error("copy with overwrite did not replace the directory")
	}
	if _, err := c.Move(ctx, "src", "dst", true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(data, "src")); !errors.Is(err, os.ErrNotExist) {
		t.Error("move of a directory left the source")
	}
	_, err = c.Move(ctx, "dst", "dst/x/sub", false)
	wantCode(t, err, wire.CodeInvalid)
	_, err = c.Move(ctx, "dst", prot+"/run/berth/x", false)
	wantCode(t, err, wire.CodePermission)
	_, err = c.Copy(ctx, "b.txt", prot+"/run/berth/agent.sock", true)
	wantCode(t, err, wire.CodePermission)
	_, err = c.Move(ctx, prot+"/run/berth/agent.sock", "stolen", false)
	wantCode(t, err, wire.CodePermission)
	_, err = c.Copy(ctx, prot+"/run", "runcopy", false)
	wantCode(t, err, wire.CodePermission)
	_, err = c.Move(ctx, prot+"/run", "runmoved", false)
	wantCode(t, err, wire.CodePermission)
	protEntries(t, prot)
	entries, _ := os.ReadDir(data)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".berth-") {
			t.Errorf("temporary %s left behind", e.Name())
		}
	}
}

// TestFSMoveAcrossFileSystems takes the copy-and-delete path that a rename
// across mounts (EXDEV) needs.
func TestFSMoveAcrossFileSystems(t *testing.T) {
	c, data := startFSAgent(t, nil)
	ctx := context.Background()
	other, err := os.MkdirTemp("/dev/shm", "bfs")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	defer os.RemoveAll(other)
	var a, b syscall.Stat_t
	if syscall.Stat(data, &a) != nil || syscall.Stat(other, &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is on the same file system as the temp dir")
	}
	mustWrite(t, filepath.Join(data, "tree", "f"), "content")
	os.Symlink("f", filepath.Join(data, "tree", "l"))
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(data, "tree", "f"), old, old)
	fi, err := c.Move(ctx, "tree", other+"/tree", false)
	if err != nil || fi.Type != wire.FileTypeDir {
		t.Fatalf("move across file systems = %+v, %v", fi, err)
	}
	if mustRead(t, other+"/tree/f") != "content" {
		t.Error("moved content differs")
	}
	if st, _ := os.Stat(other + "/tree/f"); !st.ModTime().Equal(old) {
		t.Errorf("move lost the modification time: %v", st.ModTime())
	}
	if l, _ := os.Readlink(other + "/tree/l"); l != "f" {
		t.Errorf("moved symlink = %q", l)
	}
	if _, err := os.Stat(filepath.Join(data, "tree")); !errors.Is(err, os.ErrNotExist) {
		t.Error("move across file systems left the source")
	}
}

func TestFSFind(t *testing.T) {
	c, data := startFSAgent(t, nil)
	ctx := context.Background()
	for i := range 5 {
		mustWrite(t, filepath.Join(data, "pkg", fmt.Sprintf("f%d.go", i)), "x")
		mustWrite(t, filepath.Join(data, "pkg", fmt.Sprintf("f%d.txt", i)), "x")
	}
	os.MkdirAll(filepath.Join(data, "pkg", "sub.go"), 0o755)
	// A symlink loop must not be followed.
	os.Symlink("..", filepath.Join(data, "pkg", "loop"))

	res, err := c.Find(ctx, wire.FindRequest{Root: ".", Pattern: "*.go"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Matches) != 6 || res.Truncated || res.Scanned != 13 {
		t.Errorf("find *.go: %d matches, truncated %v, scanned %d", len(res.Matches), res.Truncated, res.Scanned)
	}
	res, err = c.Find(ctx, wire.FindRequest{Root: ".", Pattern: "*.go", Type: "file"})
	if err != nil || len(res.Matches) != 5 || res.Matches[0].Path != data+"/pkg/f0.go" {
		t.Errorf("find files: %+v, %v", res, err)
	}
	res, err = c.Find(ctx, wire.FindRequest{Root: ".", Type: "dir"})
	if err != nil || len(res.Matches) != 2 {
		t.Errorf("find dirs: %+v, %v", res, err)
	}
	res, err = c.Find(ctx, wire.FindRequest{Root: ".", Pattern: "*.go", MaxResults: 2})
	if err != nil || len(res.Matches) != 2 || !res.Truncated || res.Reason != "max_results" {
		t.Errorf("find capped by results: %+v, %v", res, err)
	}
	res, err = c.Find(ctx, wire.FindRequest{Root: ".", Pattern: "*.txt", MaxEntries: 5})
	if err != nil || !res.Truncated || res.Reason != "max_entries" || res.Scanned != 5 {
		t.Errorf("find capped by entries: %+v, %v", res, err)
	}
	res, err = c.Find(ctx, wire.FindRequest{Root: "pkg/f1.go", Pattern: "f1*"})
	if err != nil || len(res.Matches) != 1 {
		t.Errorf("find on a file: %+v, %v", res, err)
	}
	_, err = c.Find(ctx, wire.FindRequest{Root: ".", Pattern: "[x"})
	wantCode(t, err, wire.CodeInvalid)
	_, err = c.Find(ctx, wire.FindRequest{Root: ".", Type: "pipe"})
	wantCode(t, err, wire.CodeInvalid)
	_, err = c.Find(ctx, wire.FindRequest{Root: "nope"})
	wantCode(t, err, wire.CodeNotFound)
}

func TestFSSkipsKernelTrees(t *testing.T) {
	skip := fsSkipDirs("/")
	if !skip["/proc"] || !skip["/sys"] || !skip["/dev"] {
		t.Errorf("walk from / skips %v", skip)
	}
	if skip := fsSkipDirs("/proc/self"); skip["/proc"] || !skip["/sys"] {
		t.Errorf("walk from /proc/self skips %v", skip)
	}
}

func TestFSGrep(t *testing.T) {
	c, data := startFSAgent(t, nil)
	ctx := context.Background()
	mustWrite(t, filepath.Join(data, "a.go"), "package a\n// TODO one\nfunc A() {}\n// todo two\n")
	mustWrite(t, filepath.Join(data, "b.txt"), "TODO in text\n")
	mustWrite(t, filepath.Join(data, "bin.dat"), "TODO\x00binary\n")
	mustWrite(t, filepath.Join(data, "long.js"), strings.Repeat("x", 5000)+"TODO"+strings.Repeat("y", 5000)+"\n")
	os.Symlink(filepath.Join(data, "a.go"), filepath.Join(data, "zz-link.go"))

	res, err := c.Grep(ctx, wire.GrepRequest{Root: ".", Pattern: "TODO"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range res.Matches {
		got = append(got, fmt.Sprintf("%s:%d", strings.TrimPrefix(m.Path, data+"/"), m.Line))
	}
	if strings.Join(got, " ") != "a.go:2 b.txt:1 long.js:1" || res.Truncated || res.FilesScanned != 4 {
		t.Errorf("grep TODO = %v, truncated %v, files %d", got, res.Truncated, res.FilesScanned)
	}
	if m := res.Matches[0]; m.Text != "// TODO one" {
		t.Errorf("match text %q", m.Text)
	}
	long := res.Matches[2].Text
	if !strings.Contains(long, "TODO") || !strings.HasPrefix(long, "…") || !strings.HasSuffix(long, "…") || len(long) > wire.GrepDefaultMaxLineLength+8 {
		t.Errorf("long line excerpt of %d bytes: %.60q…", len(long), long)
	}

	res, err = c.Grep(ctx, wire.GrepRequest{Root: ".", Pattern: "todo", IgnoreCase: true, Include: "*.go"})
	if err != nil || len(res.Matches) != 2 || res.Matches[1].Line != 4 {
		t.Errorf("grep -i --include=*.go: %+v, %v", res, err)
	}
	res, err = c.Grep(ctx, wire.GrepRequest{Root: "a.go", Pattern: `^func \w+\(`, Regex: true})
	if err != nil || len(res.Matches) != 1 || res.Matches[0].Line != 3 {
		t.Errorf("grep regex on a file: %+v, %v", res, err)
	}
	res, err = c.Grep(ctx, wire.GrepRequest{Root: ".", Pattern: "TODO", MaxMatches: 1})
	if err != nil || len(res.Matches) != 1 || !res.Truncated || res.Reason != "max_matches" {
		t.Errorf("grep capped by matches: %+v, %v", res, err)
	}
	res, err = c.Grep(ctx, wire.GrepRequest{Root: ".", Pattern: "TODO", MaxFiles: 2})
	if err != nil || res.FilesScanned != 2 || !res.Truncated || res.Reason != "max_files" {
		t.Errorf("grep capped by files: %+v, %v", res, err)
	}
	res, err = c.Grep(ctx, wire.GrepRequest{Root: ".", Pattern: "TODO", MaxBytes: 60})
	if err != nil || res.BytesScanned != 60 || !res.Truncated || res.Reason != "max_bytes" {
		t.Errorf("grep capped by bytes: %+v, %v", res, err)
	}
	_, err = c.Grep(ctx, wire.GrepRequest{Root: ".", Pattern: "(", Regex: true})
	wantCode(t, err, wire.CodeInvalid)
	_, err = c.Grep(ctx, wire.GrepRequest{Root: ".", Pattern: ""})
	wantCode(t, err, wire.CodeInvalid)
}

func TestFSOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away")
	}
	c, data := startFSAgent(t, &Credential{UID: 65534, GID: 65534})
	ctx := context.Background()
	owner := func(p string) string {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	}
	if _, err := c.Write(ctx, wire.WriteRequest{Path: "new/dir/f.txt", MakeParents: true}, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"new", "new/dir", "new/dir/f.txt"} {
		if o := owner(filepath.Join(data, p)); o != "65534:65534" {
			t.Errorf("%s owned by %s, want 65534:65534", p, o)
		}
	}
	if _, err := c.Mkdir(ctx, "m/n", true); err != nil {
		t.Fatal(err)
	}
	if o := owner(filepath.Join(data, "m", "n")); o != "65534:65534" {
		t.Errorf("mkdir made a directory owned by %s", o)
	}
	os.Symlink("f.txt", filepath.Join(data, "new", "dir", "l"))
	if _, err := c.Copy(ctx, "new", "copy", false); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"copy", "copy/dir/f.txt", "copy/dir/l"} {
		if o := owner(filepath.Join(data, p)); o != "65534:65534" {
			t.Errorf("copied %s owned by %s", p, o)
		}
	}

	// An existing file keeps its owner when rewritten or edited.
	mustWrite(t, filepath.Join(data, "rootfile"), "root's")
	os.Chown(filepath.Join(data, "rootfile"), 123, 456)
	if _, err := c.Write(ctx, wire.WriteRequest{Path: "rootfile"}, strings.NewReader("rewritten")); err != nil {
		t.Fatal(err)
	}
	if o := owner(filepath.Join(data, "rootfile")); o != "123:456" {
		t.Errorf("rewritten file owned by %s, want 123:456 kept", o)
	}
	if _, err := c.Edit(ctx, wire.EditRequest{Path: "rootfile", Edits: []wire.Edit{{Old: "re", New: "un"}}}); err != nil {
		t.Fatal(err)
	}
	if o := owner(filepath.Join(data, "rootfile")); o != "123:456" || mustRead(t, filepath.Join(data, "rootfile")) != "unwritten" {
		t.Errorf("edited file owned by %s", o)
	}
}

// protEntries fails unless the protected directories of startFSAgentProt
// hold exactly what it put there.
func protEntries(t *testing.T, prot string) {
	t.Helper()
	for dir, want := range map[string]string{"run/berth": wire.SocketName, ".berth": "berth"} {
		entries, err := os.ReadDir(filepath.Join(prot, dir))
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != want {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("%s holds %v; want only %s", dir, names, want)
		}
	}
	if fi, err := os.Lstat(filepath.Join(prot, "run", "berth", wire.SocketName)); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("the socket was replaced: %v, %v", fi, err)
	}
	if mustRead(t, filepath.Join(prot, ".berth", "berth")) != "binary" {
		t.Error("the binary was changed")
	}
}
