package server

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// archiveSnapshot describes a tree for comparison: every entry with its
// type, mode, owner, content hash or link target, and modification time.
// The root's own times are left out: an import stages inside the target,
// which touches the target directory's times even when it fails.
func archiveSnapshot(t testing.TB, root string, noTimes ...string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %s %04o %d:%d", rel, fsType(fi.Mode()), fsModeBits(fi.Mode()), st.Uid, st.Gid)
		if rel != "." && !slices.Contains(noTimes, rel) {
			line += " mtime=" + strconv.FormatInt(fi.ModTime().UnixNano(), 10)
		}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			line += fmt.Sprintf(" size=%d sha=%s", len(b), hex.EncodeToString(s[:8]))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// tarEntry is one entry of a test archive; body is written after the
// header, whatever the header's size says.
type tarEntry struct {
	hdr  tar.Header
	body string
}

func tarFile(name, body string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}, body: body}
}

func tarDir(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}

func tarSymlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
}

func tarHardlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}

// buildTar writes entries without checking them, as a hostile archiver
// would; a body shorter than its header's size ends the archive there.
func buildTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("header %q: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatalf("body %q: %v", h.Name, err)
		}
		if int64(len(e.body)) < h.Size {
			return buf.Bytes()
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type zipEntry struct {
	name string
	mode fs.FileMode
	body string
}

func buildZip(t testing.TB, entries ...zipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate, Modified: time.Unix(1700000000, 0)}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatalf("zip %q: %v", e.name, err)
		}
		if _, err := io.WriteString(w, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// archiveEnv is an agent with a target directory full of things to lose
// and a canary outside the data directory that no import may touch.
type archiveEnv struct {
	c         *client.Client
	prot      string
	data      string
	target    string
	canaryDir string
	canary    string
}

func newArchiveEnv(t *testing.T) *archiveEnv {
	t.Helper()
	c, data, prot := startFSAgentProt(t, nil)
	env := &archiveEnv{c: c, data: data, prot: prot, target: filepath.Join(data, "target"), canaryDir: filepath.Join(t.TempDir(), "canary-dir")}
	mustWrite(t, filepath.Join(env.canaryDir, "canary.txt"), "do not touch")
	mustWrite(t, filepath.Join(env.target, "keep.txt"), "precious")
	mustWrite(t, filepath.Join(env.target, "conf"), "a file named conf")
	mustWrite(t, filepath.Join(env.target, "sub", "old.txt"), "old")
	if err := os.Mkdir(filepath.Join(env.target, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(env.canaryDir, filepath.Join(env.target, "outlink")); err != nil {
		t.Fatal(err)
	}
	env.canary = archiveSnapshot(t, env.canaryDir)
	return env
}

// refused imports body and checks that it fails with code, with a message
// that contains want, and that neither the target nor the canary changed.
func (env *archiveEnv) refused(t *testing.T, req wire.ImportRequest, body io.Reader, code, want string) {
	t.Helper()
	before := archiveSnapshot(t, env.target)
	dataBefore := archiveSnapshot(t, env.data, "target")
	if req.Path == "" {
		req.Path = "target"
	}
	res, err := env.c.Import(context.Background(), req, body)
	if err == nil {
		t.Fatalf("import succeeded (%+v), want code %q", res, code)
	}
	re := wantCode(t, err, code)
	if !strings.Contains(re.Message, want) {
		t.Errorf("message %q does not mention %q", re.Message, want)
	}
	if after := archiveSnapshot(t, env.target); after != before {
		t.Errorf("target changed by a refused import:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if req.Path == "target" {
		if after := archiveSnapshot(t, env.data, "target"); after != dataBefore {
			t.Errorf("data dir changed by a refused import:\nbefore:\n%s\nafter:\n%s", dataBefore, after)
		}
	}
	if after := archiveSnapshot(t, env.canaryDir); after != env.canary {
		t.Errorf("canary changed:\n%s", after)
	}
	entries, _ := os.ReadDir(env.target)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), archiveStagingPrefix) {
			t.Errorf("staging directory %s left behind", e.Name())
		}
	}
}

func TestArchiveImportRefusesHostileTar(t *testing.T) {
	env := newArchiveEnv(t)
	ok := tarFile("fine.txt", "fine")
	cases := []struct {
		name    string
		entries []tarEntry
		code    string
		want    string
	}{
		{"dotdot", []tarEntry{ok, tarFile("../escape", "x")}, wire.CodeInvalid, `"../escape"`},
		{"dotdot deep", []tarEntry{tarFile("a/../../escape", "x")}, wire.CodeInvalid, `".." component`},
		{"dotdot inside", []tarEntry{tarFile("a/../b", "x")}, wire.CodeInvalid, `".." component`},
		{"absolute", []tarEntry{ok, tarFile("/abs", "x")}, wire.CodeInvalid, "absolute"},
		{"absolute into canary", []tarEntry{tarFile(env.canaryDir+"/canary.txt", "pwned")}, wire.CodeInvalid, "absolute"},
		{"dot file", []tarEntry{tarFile(".", "x")}, wire.CodeInvalid, "target directory itself"},
		{"symlink out then through", []tarEntry{tarSymlink("l", env.canaryDir), tarFile("l/pwned", "x")}, wire.CodeInvalid, "outside"},
		{"symlink in then through", []tarEntry{tarDir("sub2/"), tarSymlink("l", "sub2"), tarFile("l/x", "x")}, wire.CodeInvalid, "through \"l\""},
		{"symlink dir then deep through", []tarEntry{tarSymlink("l", "."), tarFile("l/a/b", "x")}, wire.CodeInvalid, "through \"l\""},
		{"symlink relative out", []tarEntry{tarSymlink("l", "../../etc")}, wire.CodeInvalid, "out of it"},
		{"symlink nested out", []tarEntry{tarSymlink("a/b/l", "../../../x")}, wire.CodeInvalid, "out of it"},
		{"symlink dotdot after name", []tarEntry{tarSymlink("up", "."), tarSymlink("x", "up/up/../..")}, wire.CodeInvalid, `".." after a name`},
		{"symlink absolute out", []tarEntry{tarSymlink("l", "/etc")}, wire.CodeInvalid, "outside"},
		{"symlink empty", []tarEntry{tarSymlink("l", "")}, wire.CodeInvalid, "empty"},
		{"hardlink absolute", []tarEntry{tarHardlink("h", "/etc/passwd")}, wire.CodeInvalid, "absolute"},
		{"hardlink missing", []tarEntry{ok, tarHardlink("h", "nothere")}, wire.CodeInvalid, "not in the archive"},
		{"hardlink out", []tarEntry{tarHardlink("h", "../keep.txt")}, wire.CodeInvalid, `".." component`},
		{"hardlink to symlink", []tarEntry{tarSymlink("l", "fine.txt"), tarHardlink("h", "l")}, wire.CodeInvalid, "not a regular file"},
		{"hardlink to dir", []tarEntry{tarDir("d/"), tarHardlink("h", "d")}, wire.CodeInvalid, "not a regular file"},
		{"hardlink through symlink", []tarEntry{tarDir("s/"), tarFile("s/f", "x"), tarSymlink("l", "s"), tarHardlink("h", "l/f")}, wire.CodeInvalid, "not in the archive"},
		{"hardlink to existing target file", []tarEntry{tarHardlink("h", "keep.txt")}, wire.CodeInvalid, "not in the archive"},
		{"char device", []tarEntry{ok, {hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}}}, wire.CodeInvalid, "character device"},
		{"block device", []tarEntry{{hdr: tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o660}}}, wire.CodeInvalid, "block device"},
		{"fifo", []tarEntry{{hdr: tar.Header{Name: "pipe", Typeflag: tar.TypeFifo, Mode: 0o644}}}, wire.CodeInvalid, "named pipe"},
		{"dir then file", []tarEntry{tarDir("x/"), tarFile("x", "y")}, wire.CodeInvalid, "made it a directory"},
		{"file then dir", []tarEntry{tarFile("x", "y"), tarDir("x/")}, wire.CodeInvalid, "made it a file"},
		{"file then child", []tarEntry{tarFile("x", "y"), tarFile("x/y", "z")}, wire.CodeInvalid, "needs \"x\" to be a directory"},
		{"symlink then file", []tarEntry{tarSymlink("x", "fine.txt"), tarFile("x", "z")}, wire.CodeInvalid, "made it a symlink"},
		{"clash dir over file", []tarEntry{ok, tarDir("conf/"), tarFile("conf/a", "x")}, wire.CodeNotDirectory, "conf"},
		{"clash file over dir", []tarEntry{ok, tarFile("data", "x")}, wire.CodeIsDirectory, "data"},
		{"clash through target symlink", []tarEntry{tarFile("outlink/pwned", "x")}, wire.CodeNotDirectory, "outlink"},
		{"truncated", []tarEntry{ok, tarFile("big", "short")}, wire.CodeInvalid, "ends after"},
	}
	// The last case's header must announce more than its body holds.
	cases[len(cases)-1].entries[1].hdr.Size = 1 << 20
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := buildTar(t, tc.entries...)
			env.refused(t, wire.ImportRequest{}, bytes.NewReader(body), tc.code, tc.want)
			env.refused(t, wire.ImportRequest{Format: wire.ArchiveFormatTarGz}, bytes.NewReader(gzipBytes(t, body)), tc.code, tc.want)
		})
	}
}

func TestArchiveImportRefusesHostileZip(t *testing.T) {
	env := newArchiveEnv(t)
	ok := zipEntry{name: "fine.txt", body: "fine"}
	cases := []struct {
		name    string
		entries []zipEntry
		code    string
		want    string
	}{
		{"dotdot", []zipEntry{ok, {name: "../escape", body: "x"}}, wire.CodeInvalid, `"../escape"`},
		{"absolute", []zipEntry{{name: "/abs", body: "x"}}, wire.CodeInvalid, "absolute"},
		{"symlink out then through", []zipEntry{{name: "l", mode: fs.ModeSymlink | 0o777, body: env.canaryDir}, {name: "l/pwned", body: "x"}}, wire.CodeInvalid, "outside"},
		{"symlink in then through", []zipEntry{{name: "sub2/", mode: fs.ModeDir | 0o755}, {name: "l", mode: fs.ModeSymlink | 0o777, body: "sub2"}, {name: "l/x", body: "x"}}, wire.CodeInvalid, "through \"l\""},
		{"symlink relative out", []zipEntry{{name: "l", mode: fs.ModeSymlink | 0o777, body: "../../etc"}}, wire.CodeInvalid, "out of it"},
		{"device", []zipEntry{{name: "null", mode: fs.ModeDevice | fs.ModeCharDevice | 0o666}}, wire.CodeInvalid, "character device"},
		{"fifo", []zipEntry{ok, {name: "pipe", mode: fs.ModeNamedPipe | 0o644}}, wire.CodeInvalid, "named pipe"},
		{"socket", []zipEntry{{name: "sock", mode: fs.ModeSocket | 0o644}}, wire.CodeInvalid, "socket"},
		{"nul", []zipEntry{{name: "a\x00b", body: "x"}}, wire.CodeInvalid, "NUL"},
		{"dotdot in symlink target", []zipEntry{{name: "up", mode: fs.ModeSymlink | 0o777, body: "."}, {name: "x", mode: fs.ModeSymlink | 0o777, body: "up/../.."}}, wire.CodeInvalid, `".." after a name`},
		{"hardlink-free zip with a file through a dir symlink", []zipEntry{{name: "l", mode: fs.ModeSymlink | 0o777, body: "."}, {name: "l/l/x", body: "x"}}, wire.CodeInvalid, "through \"l\""},
		{"dir then file", []zipEntry{{name: "x/", mode: fs.ModeDir | 0o755}, {name: "x", body: "y"}}, wire.CodeInvalid, "made it a directory"},
		{"clash dir over file", []zipEntry{{name: "conf/a", body: "x"}}, wire.CodeNotDirectory, "conf"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := buildZip(t, tc.entries...)
			env.refused(t, wire.ImportRequest{}, bytes.NewReader(body), tc.code, tc.want)
			env.refused(t, wire.ImportRequest{Format: wire.ArchiveFormatZip}, bytes.NewReader(body), tc.code, tc.want)
		})
	}
	t.Run("not a zip", func(t *testing.T) {
		env.refused(t, wire.ImportRequest{Format: wire.ArchiveFormatZip}, strings.NewReader("PK\x03\x04 and then nonsense"), wire.CodeInvalid, "not valid")
	})
}

func TestArchiveImportRefusesBombs(t *testing.T) {
	env := newArchiveEnv(t)
	zeros := strings.Repeat("\x00", 8<<20)

	t.Run("declared size beyond max_bytes", func(t *testing.T) {
		// 20 GiB announced, a few bytes sent: refused before anything is
		// written.
		e := tarFile("huge", "just a little")
		e.hdr.Size = 20 << 30
		env.refused(t, wire.ImportRequest{}, bytes.NewReader(buildTar(t, tarFile("a", "a"), e)), wire.CodeTooLarge, `"huge"`)
	})
	t.Run("10 GB header with a short body", func(t *testing.T) {
		// Within the default max_bytes: accepted up front, then refused
		// when the body ends after a few bytes, without writing 10 GB.
		e := tarFile("huge", "just a little")
		e.hdr.Size = 10_000_000_000
		env.refused(t, wire.ImportRequest{}, bytes.NewReader(buildTar(t, e)), wire.CodeInvalid, "ends after")
	})
	t.Run("gzip bomb", func(t *testing.T) {
		body := gzipBytes(t, buildTar(t, tarFile("zeros", zeros)))
		if len(body) > 64<<10 {
			t.Fatalf("bomb is %d bytes compressed", len(body))
		}
		env.refused(t, wire.ImportRequest{MaxBytes: 1 << 20}, bytes.NewReader(body), wire.CodeTooLarge, "max_bytes")
	})
	t.Run("gzip bomb in many entries", func(t *testing.T) {
		var entries []tarEntry
		for i := range 8 {
			entries = append(entries, tarFile(fmt.Sprintf("z%d", i), zeros[:512<<10]))
		}
		env.refused(t, wire.ImportRequest{MaxBytes: 3 << 20}, bytes.NewReader(gzipBytes(t, buildTar(t, entries...))), wire.CodeTooLarge, "max_bytes")
	})
	t.Run("zip bomb", func(t *testing.T) {
		body := buildZip(t, zipEntry{name: "zeros", body: zeros})
		env.refused(t, wire.ImportRequest{MaxBytes: 1 << 20}, bytes.NewReader(body), wire.CodeTooLarge, "max_bytes")
	})
	t.Run("zip that lies about its size", func(t *testing.T) {
		env.refused(t, wire.ImportRequest{MaxBytes: 1 << 20}, bytes.NewReader(lyingZip(t, "liar", []byte(zeros), 100)), wire.CodeInvalid, "liar")
	})
	t.Run("zip larger than max_bytes", func(t *testing.T) {
		body := buildZip(t, zipEntry{name: "a", body: randomText(64 << 10)})
		env.refused(t, wire.ImportRequest{MaxBytes: 16 << 10}, bytes.NewReader(body), wire.CodeTooLarge, "max_bytes")
	})
	t.Run("sparse entry beyond max_bytes", func(t *testing.T) {
		env.refused(t, wire.ImportRequest{}, bytes.NewReader(gnuSparseTar(t, "sparse", 20<<30)), wire.CodeTooLarge, `"sparse"`)
	})
}

// lyingZip stores content deflated under a header that declares size
// bytes, as a zip bomb that hopes its header is trusted would.
func lyingZip(t testing.TB, name string, content []byte, size uint64) []byte {
	t.Helper()
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.BestCompression)
	_, _ = fw.Write(content)
	_ = fw.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{
		Name:               name,
		Method:             zip.Deflate,
		CRC32:              crc32.ChecksumIEEE(content),
		CompressedSize64:   uint64(comp.Len()),
		UncompressedSize64: size,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(comp.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gnuSparseTar builds an old-GNU sparse entry (type 'S'), which Go's
// writer cannot make: size bytes long, all hole but a last block of 'x'.
func gnuSparseTar(t testing.TB, name string, size int64) []byte {
	t.Helper()
	var blk [512]byte
	octal := func(off, n int, v int64) {
		s := strconv.FormatInt(v, 8)
		if len(s) >= n {
			// Too large for octal: GNU's base-256, a flag bit and the
			// value big-endian.
			for i := n - 1; i > 0; i-- {
				blk[off+i] = byte(v)
				v >>= 8
			}
			blk[off] = 0x80
			return
		}
		s = strings.Repeat("0", n-1-len(s)) + s
		copy(blk[off:off+n], s)
	}
	copy(blk[0:100], name)
	octal(100, 8, 0o644)
	octal(108, 8, 0)
	octal(116, 8, 0)
	octal(124, 12, 512) // stored data: one block
	octal(136, 12, 1700000000)
	blk[156] = 'S'
	copy(blk[257:265], "ustar  \x00")
	octal(386, 12, size-512) // sparse map: one region at the end
	octal(398, 12, 512)
	octal(483, 12, size) // real size
	copy(blk[148:156], "        ")
	sum := 0
	for _, b := range blk {
		sum += int(b)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
	var out bytes.Buffer
	out.Write(blk[:])
	out.Write(bytes.Repeat([]byte{'x'}, 512))
	out.Write(make([]byte, 1024))
	return out.Bytes()
}

func TestArchiveImportSparse(t *testing.T) {
	env := newArchiveEnv(t)
	const size = 64 << 20
	res, err := env.c.Import(context.Background(), wire.ImportRequest{Path: "sparse"}, bytes.NewReader(gnuSparseTar(t, "s.img", size)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != size || res.Files != 1 {
		t.Fatalf("result %+v, want one file of %d bytes", res, size)
	}
	p := filepath.Join(env.data, "sparse", "s.img")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Size() != size {
		t.Fatalf("size %d, want %d", fi.Size(), size)
	}
	tail := make([]byte, 1024)
	if _, err := f.ReadAt(tail, size-1024); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tail, append(make([]byte, 512), bytes.Repeat([]byte{'x'}, 512)...)) {
		t.Fatalf("tail of the file is wrong: %q", tail)
	}
	// The holes stay holes: 64 MiB of zeros are not written.
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks * 512; blocks > 1<<20 {
		t.Errorf("%d bytes allocated for a sparse file of %d", blocks, size)
	}
}

// tarStream writes an endless stream of tiny entries made by entry(i) to
// a pipe, without holding it, until the reader goes away.
func tarStream(t *testing.T, n int, entry func(i int) *tar.Header) io.Reader {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		bw := bufio.NewWriterSize(pw, 64<<10)
		tw := tar.NewWriter(bw)
		for i := range n {
			if err := tw.WriteHeader(entry(i)); err != nil {
				return
			}
		}
		err := tw.Close()
		if err == nil {
			err = bw.Flush()
		}
		_ = pw.CloseWithError(err)
	}()
	t.Cleanup(func() {
		_ = pr.CloseWithError(errors.New("test over"))
		<-done
	})
	return pr
}

func TestArchiveImportEntryLimits(t *testing.T) {
	env := newArchiveEnv(t)
	t.Run("a million files, max_entries 1000", func(t *testing.T) {
		body := tarStream(t, 1_000_000, func(i int) *tar.Header {
			return &tar.Header{Name: fmt.Sprintf("f%07d", i), Typeflag: tar.TypeReg, Mode: 0o644}
		})
		env.refused(t, wire.ImportRequest{MaxEntries: 1000}, body, wire.CodeLimit, "1000 entries")
	})
	t.Run("a million entries, default max_entries", func(t *testing.T) {
		// The same directory over and over: the count, not the disk, must
		// stop it, at ImportDefaultMaxEntries+1.
		body := tarStream(t, 1_000_000, func(int) *tar.Header {
			return &tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}
		})
		env.refused(t, wire.ImportRequest{}, body, wire.CodeLimit, strconv.Itoa(wire.ImportDefaultMaxEntries)+" entries")
	})
	t.Run("implied directories", func(t *testing.T) {
		deep := strings.Repeat("d/", 50) + "f"
		env.refused(t, wire.ImportRequest{MaxEntries: 10}, bytes.NewReader(buildTar(t, tarFile(deep, "x"))), wire.CodeLimit, "imply more than 10 directories")
	})
	t.Run("zip entries", func(t *testing.T) {
		var entries []zipEntry
		for i := range 20 {
			entries = append(entries, zipEntry{name: fmt.Sprintf("f%d", i), body: "x"})
		}
		env.refused(t, wire.ImportRequest{MaxEntries: 10}, bytes.NewReader(buildZip(t, entries...)), wire.CodeLimit, "max_entries")
	})
	t.Run("bad limits", func(t *testing.T) {
		env.refused(t, wire.ImportRequest{MaxEntries: -1}, bytes.NewReader(buildTar(t, tarFile("a", "a"))), wire.CodeInvalid, "max_entries")
		env.refused(t, wire.ImportRequest{Format: "rar"}, bytes.NewReader(buildTar(t, tarFile("a", "a"))), wire.CodeInvalid, "rar")
		env.refused(t, wire.ImportRequest{}, strings.NewReader(""), wire.CodeInvalid, "empty")
		env.refused(t, wire.ImportRequest{}, strings.NewReader(strings.Repeat("garbage!", 200)), wire.CodeInvalid, "not valid")
		env.refused(t, wire.ImportRequest{Format: wire.ArchiveFormatTarGz}, strings.NewReader("not gzip at all"), wire.CodeInvalid, "not valid")
	})
}

func TestArchiveImportProtectedAndMissingTarget(t *testing.T) {
	env := newArchiveEnv(t)
	body := buildTar(t, tarFile("a", "a"))
	for _, p := range []string{env.prot + "/run/berth/x", env.prot + "/run/berth", env.prot + "/.berth"} {
		_, err := env.c.Import(context.Background(), wire.ImportRequest{Path: p}, bytes.NewReader(body))
		wantCode(t, err, wire.CodePermission)
	}
	// Nor through an import into a directory above them, whose archive
	// has entries for them.
	_, err := env.c.Import(context.Background(), wire.ImportRequest{Path: env.prot + "/run"},
		bytes.NewReader(buildTar(t, tarFile("berth/new", "x"))))
	wantCode(t, err, wire.CodePermission)
	_, err = env.c.Import(context.Background(), wire.ImportRequest{Path: env.prot},
		bytes.NewReader(buildTar(t, tarFile(".berth/berth", "x"))))
	wantCode(t, err, wire.CodePermission)
	protEntries(t, env.prot)

	// A refused import into a directory it had to create leaves no
	// directory behind.
	_, err = env.c.Import(context.Background(), wire.ImportRequest{Path: "new/deeper"}, bytes.NewReader(buildTar(t, tarFile("../x", "x"))))
	wantCode(t, err, wire.CodeInvalid)
	if _, err := os.Lstat(filepath.Join(env.data, "new")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("created target left behind after a refused import: %v", err)
	}
	_, err = env.c.Import(context.Background(), wire.ImportRequest{Path: "keepfile"}, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_, err = env.c.Import(context.Background(), wire.ImportRequest{Path: "target/keep.txt"}, bytes.NewReader(body))
	wantCode(t, err, wire.CodeNotDirectory)
}

func TestArchiveImportMerges(t *testing.T) {
	env := newArchiveEnv(t)
	body := buildTar(t,
		tarDir("./"),
		tarFile("./sub/new.txt", "new"),
		tarFile("conf", "replaced conf"),
		tarSymlink("outlink", "keep.txt"),
		tarDir("newdir/"),
		tarFile("newdir/f", "f"),
		tarDir("data/"),
		tarFile("data/inner", "inner"),
	)
	res, err := env.c.Import(context.Background(), wire.ImportRequest{Path: "target"}, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	want := wire.ImportResult{Path: env.target, Entries: 8, Bytes: 3 + 13 + 1 + 5, Files: 4, Dirs: 2, Symlinks: 1, Replaced: 2}
	if res != want {
		t.Errorf("result %+v, want %+v", res, want)
	}
	for p, content := range map[string]string{
		"keep.txt": "precious", "sub/old.txt": "old", "sub/new.txt": "new",
		"conf": "replaced conf", "newdir/f": "f", "data/inner": "inner",
	} {
		if got := mustRead(t, filepath.Join(env.target, p)); got != content {
			t.Errorf("%s = %q, want %q", p, got, content)
		}
	}
	// The symlink that pointed out of the target was replaced, not
	// written through.
	if got, _ := os.Readlink(filepath.Join(env.target, "outlink")); got != "keep.txt" {
		t.Errorf("outlink -> %q", got)
	}
	if after := archiveSnapshot(t, env.canaryDir); after != env.canary {
		t.Errorf("canary changed:\n%s", after)
	}
}

// buildArchiveTree fills dir with one of everything an export has to
// carry, with fixed sub-second times.
func buildArchiveTree(t *testing.T, dir string) {
	t.Helper()
	mustWrite(t, filepath.Join(dir, "notes", "a.txt"), "alpha\n")
	mustWrite(t, filepath.Join(dir, "notes", "deep", "b.md"), "# beta\n")
	mustWrite(t, filepath.Join(dir, "bin", "run.sh"), "#!/bin/sh\necho hi\n")
	mustWrite(t, filepath.Join(dir, "big.bin"), randomText(3<<20+17))
	mustWrite(t, filepath.Join(dir, "holes.bin"), strings.Repeat("\x00", 1<<20)+"end")
	mustWrite(t, filepath.Join(dir, strings.Repeat("long-name-", 20)), "long")
	mustWrite(t, filepath.Join(dir, "suid"), "suid")
	for p, mode := range map[string]fs.FileMode{
		"notes/a.txt": 0o640, "bin/run.sh": 0o755, "suid": 0o755 | fs.ModeSetuid,
	} {
		if err := os.Chmod(filepath.Join(dir, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	for p, mode := range map[string]fs.FileMode{"empty": 0o700, "shared": 0o777 | fs.ModeSticky} {
		if err := os.Mkdir(filepath.Join(dir, p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(dir, "notes", "a.txt"), filepath.Join(dir, "hard.txt")); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"link": "notes/a.txt", "notes/up": "../bin", "dangling": "nowhere"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	// Times last, children before parents, symlinks not followed.
	var paths []string
	_ = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, _ error) error {
		paths = append(paths, p)
		return nil
	})
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	for i, p := range paths {
		if p == dir {
			continue
		}
		ts := unix.NsecToTimespec(time.Date(2021, 3, 4, 5, 6, 7, 123456789+i, time.UTC).UnixNano())
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

func randomText(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return string(b)
}

func TestArchiveExportImportRoundTrip(t *testing.T) {
	c, data := startFSAgent(t, nil)
	src := filepath.Join(data, "src")
	buildArchiveTree(t, src)

	stream, err := c.Export(context.Background(), "src")
	if err != nil {
		t.Fatal(err)
	}
	if st := stream.Stats(); st != (wire.ExportStats{}) {
		t.Errorf("stats before EOF: %+v", st)
	}
	archive, err := io.ReadAll(stream)
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Close()
	st := stream.Stats()

	// The archive: names relative to src, directories with a slash,
	// the hard link as a link, nothing of the fifo and the socket.
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	names := map[string]*tar.Header{}
	var fileBytes int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			fileBytes += h.Size
		}
	}
	for _, n := range []string{"notes/", "notes/a.txt", "notes/deep/", "empty/", "link", "big.bin"} {
		if names[n] == nil {
			t.Errorf("archive lacks %q; has %v", n, archiveNames(names))
		}
	}
	for _, n := range []string{"fifo", "s.sock", "src/", "./", ""} {
		if names[n] != nil {
			t.Errorf("archive has %q", n)
		}
	}
	if h := names["hard.txt"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "notes/a.txt" {
		if h2 := names["notes/a.txt"]; h2 == nil || h2.Typeflag != tar.TypeLink || h2.Linkname != "hard.txt" {
			t.Errorf("hard link not archived as a link: %+v / %+v", h, h2)
		}
	}
	if h := names["link"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "notes/a.txt" {
		t.Errorf("symlink: %+v", h)
	}
	if st.Entries != int64(len(names)) || st.Skipped != 2 || st.Bytes != fileBytes || st.Changed != 0 {
		t.Errorf("stats %+v; archive has %d entries of %d file bytes", st, len(names), fileBytes)
	}

	res, err := c.Import(context.Background(), wire.ImportRequest{Path: "dst/restored"}, bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != st.Entries || res.Bytes != st.Bytes || res.Hardlinks != 1 || res.Symlinks != 3 || res.Dirs != 5 {
		t.Errorf("import result %+v after export %+v", res, st)
	}
	// The same tree, except for what an import changes on purpose:
	// setuid dropped, fifo and socket absent.
	dst := filepath.Join(data, "dst", "restored")
	restored := func(snapshot string) string {
		var kept []string
		for _, l := range strings.Split(snapshot, "\n") {
			if !strings.HasPrefix(l, "fifo ") && !strings.HasPrefix(l, "s.sock ") && !strings.HasPrefix(l, ". ") {
				kept = append(kept, strings.Replace(l, "suid file 4755", "suid file 0755", 1))
			}
		}
		return strings.Join(kept, "\n")
	}
	want := restored(archiveSnapshot(t, src))
	if got := restored(archiveSnapshot(t, dst)); got != want {
		t.Errorf("restored tree differs:\n got:\n%s\nwant:\n%s", got, want)
	}
	a, _ := os.Stat(filepath.Join(dst, "notes", "a.txt"))
	h, _ := os.Stat(filepath.Join(dst, "hard.txt"))
	if !os.SameFile(a, h) {
		t.Error("hard link restored as a copy")
	}
	if fi, _ := os.Stat(filepath.Join(dst, "holes.bin")); fi.Sys().(*syscall.Stat_t).Blocks*512 >= 1<<20 {
		t.Errorf("a megabyte of zeros was written instead of left as a hole")
	}

	// Importing again replaces files and merges directories.
	res, err = c.Import(context.Background(), wire.ImportRequest{Path: "dst/restored"}, bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if res.Replaced == 0 {
		t.Errorf("second import replaced nothing: %+v", res)
	}
	// Directories that were merged into keep their metadata, but not
	// their modification time: their content changed.
	merged := []string{"bin", "notes", "notes/deep"}
	if got2, want2 := restored(archiveSnapshot(t, dst, merged...)), restored(archiveSnapshot(t, src, merged...)); got2 != want2 {
		t.Errorf("tree differs after a second import:\n%s\nwant:\n%s", got2, want2)
	}
}

func archiveNames(m map[string]*tar.Header) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func TestArchiveImportOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away")
	}
	c, data := startFSAgent(t, &Credential{UID: 4321, GID: 4322})
	body := buildTar(t,
		tarEntry{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o2755, Uid: 0, Gid: 0}},
		tarEntry{hdr: tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o6755, Size: 1, Uid: 0, Gid: 0}, body: "x"},
		tarSymlink("d/l", "f"),
		tarFile("implied/x", "x"),
	)
	if _, err := c.Import(context.Background(), wire.ImportRequest{Path: "owned"}, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", "d", "d/f", "d/l", "implied", "implied/x"} {
		fi, err := os.Lstat(filepath.Join(data, "owned", p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 4321 || st.Gid != 4322 {
			t.Errorf("%s owned by %d:%d", p, st.Uid, st.Gid)
		}
	}
	for p, want := range map[string]uint32{"d": 0o755, "d/f": 0o755, "implied": 0o755} {
		fi, _ := os.Lstat(filepath.Join(data, "owned", p))
		if got := fsModeBits(fi.Mode()); got != want {
			t.Errorf("%s mode %04o, want %04o", p, got, want)
		}
	}
}

func TestArchiveExportRoots(t *testing.T) {
	c, data := startFSAgent(t, nil)
	mustWrite(t, filepath.Join(data, "one.txt"), "one")
	mustWrite(t, filepath.Join(data, "dir", "two.txt"), "two")
	if err := os.Symlink("dir", filepath.Join(data, "ln")); err != nil {
		t.Fatal(err)
	}
	read := func(p string) ([]string, wire.ExportStats) {
		t.Helper()
		s, err := c.Export(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		zr, err := gzip.NewReader(s)
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		var names []string
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
		}
		// The rest of the stream, to reach the trailers.
		if _, err := io.Copy(io.Discard, s); err != nil {
			t.Fatal(err)
		}
		return names, s.Stats()
	}
	if names, st := read("one.txt"); strings.Join(names, ",") != "one.txt" || st.Entries != 1 || st.Bytes != 3 {
		t.Errorf("file export: %v %+v", names, st)
	}
	if names, st := read(""); strings.Join(names, ",") != "dir/,dir/two.txt,ln,one.txt" || st.Entries != 4 {
		t.Errorf("data dir export: %v %+v", names, st)
	}
	_, err := c.Export(context.Background(), "ln")
	wantCode(t, err, wire.CodeInvalid)
	_, err = c.Export(context.Background(), "missing")
	wantCode(t, err, wire.CodeNotFound)
}

func TestArchiveExportChangingFile(t *testing.T) {
	c, data := startFSAgent(t, nil)
	p := filepath.Join(data, "busy.log")
	big := []byte(randomText(4 << 20))
	if err := os.WriteFile(p, big, 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Shrink and grow it, so that the export meets either.
			_ = os.Truncate(p, int64(i%7)<<19)
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				_, _ = f.Write(big[:1<<20])
				_ = f.Close()
			}
		}
	}()
	defer func() { close(stop); <-done }()
	for range 5 {
		s, err := c.Export(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		archive, err := io.ReadAll(s)
		_ = s.Close()
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(archive))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("invalid archive of a changing file: %v", err)
			}
			if n, err := io.Copy(io.Discard, tr); err != nil || n != h.Size {
				t.Fatalf("%s: read %d of %d: %v", h.Name, n, h.Size, err)
			}
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			t.Fatalf("gzip stream: %v", err)
		}
		t.Logf("stats %+v", s.Stats())
	}
}

func TestArchiveCopyFile(t *testing.T) {
	for _, tc := range []struct {
		content string
		size    int64
		changed bool
	}{
		{"exact", 5, false},
		{"short", 10, true},
		{"longer than announced", 6, true},
		{"", 0, false},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Size: tc.size, Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		changed, err := archiveCopyFile(tw, strings.NewReader(tc.content), tc.size, make([]byte, 4))
		if err != nil || changed != tc.changed {
			t.Errorf("%q at %d: changed %v, err %v; want changed %v", tc.content, tc.size, changed, err, tc.changed)
		}
		if err := tw.Close(); err != nil {
			t.Fatalf("%q at %d: archive not valid: %v", tc.content, tc.size, err)
		}
		tr := tar.NewReader(&buf)
		if _, err := tr.Next(); err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(tr)
		want := (tc.content + strings.Repeat("\x00", int(tc.size)))[:tc.size]
		if string(got) != want {
			t.Errorf("%q at %d: archived %q", tc.content, tc.size, got)
		}
	}
}

// TestArchiveExportIncomplete serves exports the way a broken or hostile
// agent might and checks that the client never reports a clean end.
func TestArchiveExportIncomplete(t *testing.T) {
	sockDir, err := os.MkdirTemp("", "bar")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mode := ""
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(wire.ProtocolHeader, strconv.Itoa(wire.ProtocolVersion))
		w.Header().Set("Trailer", wire.ExportTrailerEntries+", "+wire.ExportTrailerBytes+", "+wire.ExportTrailerSkipped+", "+wire.ExportTrailerChanged+", "+wire.ExportTrailerError)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("partial gzip"))
		switch mode {
		case "error":
			w.Header().Set(wire.ExportTrailerError, `{"error":"disk on fire","code":"internal"}`)
		case "negative":
			for _, k := range []string{wire.ExportTrailerEntries, wire.ExportTrailerBytes, wire.ExportTrailerSkipped, wire.ExportTrailerChanged} {
				w.Header().Set(k, "-1")
			}
		case "ok":
			for _, k := range []string{wire.ExportTrailerEntries, wire.ExportTrailerBytes, wire.ExportTrailerSkipped, wire.ExportTrailerChanged} {
				w.Header().Set(k, "1")
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	c := client.New(sock)
	defer c.Close()
	for _, m := range []string{"none", "error", "negative", "ok"} {
		mode = m
		s, err := c.Export(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(s)
		_ = s.Close()
		switch {
		case m == "ok":
			if err != nil || string(b) != "partial gzip" || s.Stats().Entries != 1 {
				t.Errorf("ok: %q %v %+v", b, err, s.Stats())
			}
		case m == "error":
			var re *client.RemoteError
			if !errors.As(err, &re) || !strings.Contains(re.Message, "disk on fire") {
				t.Errorf("error trailer: got %v", err)
			}
		case !errors.Is(err, client.ErrBadResponse):
			t.Errorf("%s: got %v, want ErrBadResponse", m, err)
		}
	}
}

// TestArchiveImportRefusesEarly checks that a refusal reaches the client
// while it is still sending: a bad first entry followed by an endless body
// must come back as the agent's error, not as a broken pipe or a hang.
func TestArchiveImportRefusesEarly(t *testing.T) {
	env := newArchiveEnv(t)
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		_ = tw.WriteHeader(&tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644})
		chunk := make([]byte, 64<<10)
		for {
			if _, err := tw.Write(chunk); err != nil {
				return
			}
		}
	}()
	defer pr.Close()
	env.refused(t, wire.ImportRequest{}, pr, wire.CodeInvalid, `"../escape"`)
}

// TestArchiveMergeUndo changes the target between the check and the moves,
// as the running workspace may, and checks that the moves already made are
// undone.
func TestArchiveMergeUndo(t *testing.T) {
	real := t.TempDir()
	const staging = archiveStagingPrefix + "test"
	tree := filepath.Join(real, staging, archiveStagingTree)
	mustWrite(t, filepath.Join(real, "a.txt"), "old a")
	mustWrite(t, filepath.Join(real, "dir", "x"), "old x")
	for p, content := range map[string]string{"a.txt": "new a", "dir/x": "new x", "dir/y": "new y", "zz.txt": "new zz"} {
		mustWrite(t, filepath.Join(tree, p), content)
	}
	m := &archiveMerge{realP: real, staging: staging}
	root, err := os.OpenRoot(real)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	m.root = root
	fi, err := root.Lstat(m.staged(""))
	if err != nil {
		t.Fatal(err)
	}
	m.dev = archiveDev(fi)
	if err := m.plan(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if len(m.ops) != 4 || m.replaced != 2 {
		t.Fatalf("plan %+v, %d replaced", m.ops, m.replaced)
	}
	// zz.txt is moved last; something else takes its name first.
	mustWrite(t, filepath.Join(real, "zz.txt"), "sneaky")
	if err := m.apply(); err == nil || !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("apply: %v, want EEXIST", err)
	}
	for p, want := range map[string]string{
		"a.txt": "old a", "dir/x": "old x", "zz.txt": "sneaky",
		staging + "/tree/a.txt": "new a", staging + "/tree/dir/x": "new x", staging + "/tree/dir/y": "new y",
	} {
		if got := mustRead(t, filepath.Join(real, p)); got != want {
			t.Errorf("%s = %q after undo, want %q", p, got, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(real, "dir", "y")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dir/y still in the target after undo: %v", err)
	}
}

// TestArchiveImportRestoreKeepsLinks: berth's own backup (Restore) brings
// back symlinks wherever they point, as a venv's python -> /usr/bin/python3,
// while an import of the same archive refuses them; and even a restore
// never writes through a symlink, its own or the target's.
func TestArchiveImportRestoreKeepsLinks(t *testing.T) {
	env := newArchiveEnv(t)
	venv := []tarEntry{
		tarDir("venv/bin/"),
		tarSymlink("venv/bin/python", "/usr/bin/python3"),
		tarSymlink("venv/lib64", "../../../lib"),
		tarSymlink("venv/canary", env.canaryDir),
		tarFile("venv/pyvenv.cfg", "home = /usr/bin\n"),
	}
	env.refused(t, wire.ImportRequest{}, bytes.NewReader(buildTar(t, venv...)), wire.CodeInvalid, "outside")

	res, err := env.c.Import(context.Background(), wire.ImportRequest{Path: "target", Restore: true}, bytes.NewReader(buildTar(t, venv...)))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if res.Symlinks != 3 {
		t.Errorf("restored %d symlinks, want 3", res.Symlinks)
	}
	for link, want := range map[string]string{"venv/bin/python": "/usr/bin/python3", "venv/lib64": "../../../lib", "venv/canary": env.canaryDir} {
		if got, err := os.Readlink(filepath.Join(env.target, link)); err != nil || got != want {
			t.Errorf("%s -> %q (%v), want %q", link, got, err, want)
		}
	}

	through := []struct {
		name    string
		entries []tarEntry
		want    string
	}{
		{"its own link", []tarEntry{tarSymlink("l", env.canaryDir), tarFile("l/pwned", "x")}, `through "l"`},
		{"the target's link", []tarEntry{tarFile("outlink/pwned", "x")}, "outlink"},
		{"empty target", []tarEntry{tarSymlink("l", "")}, "empty"},
	}
	for _, tc := range through {
		t.Run(tc.name, func(t *testing.T) {
			body := buildTar(t, tc.entries...)
			res, err := env.c.Import(context.Background(), wire.ImportRequest{Path: "target", Restore: true}, bytes.NewReader(body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("restore %s: %+v, %v; want a refusal mentioning %q", tc.name, res, err, tc.want)
			}
			if after := archiveSnapshot(t, env.canaryDir); after != env.canary {
				t.Errorf("canary changed:\n%s", after)
			}
		})
	}
}
