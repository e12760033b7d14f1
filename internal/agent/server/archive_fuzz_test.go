package server

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/agent/wire"
)

func FuzzArchiveName(f *testing.F) {
	for _, s := range []string{
		"a", "a/b", "./a", "a/", "../a", "/a", "a/..", "a/../b", ".", "./", "", "a\x00", "..",
		"...", "a//b/", "a/./b", `..\a`, "a/.../b", "./../a", "a/b/../../..", "//a", ".//..//a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		clean, err := archiveCleanName(name)
		if err != nil || clean == "." {
			return
		}
		if !filepath.IsLocal(clean) || path.Clean(clean) != clean || strings.IndexByte(clean, 0) >= 0 || len(clean) > wire.MaxPathLength {
			t.Fatalf("%q accepted as %q", name, clean)
		}
		for _, c := range strings.Split(clean, "/") {
			if c == ".." || c == "." || c == "" {
				t.Fatalf("%q accepted as %q, which has a %q component", name, clean, c)
			}
		}
		if strings.Contains("/"+name+"/", "/../") {
			t.Fatalf("%q has a \"..\" component and was accepted", name)
		}
		if j := path.Join("/data/target", clean); !wire.PathWithin(j, "/data/target") || j == "/data/target" {
			t.Fatalf("%q lands at %s", name, j)
		}
	})
}

func FuzzArchiveSymlink(f *testing.F) {
	for _, s := range [][2]string{
		{"l", "a"}, {"a/l", "../b"}, {"a/l", "../../b"}, {"l", "/data/target/x"}, {"l", "/data/targetx"},
		{"l", "/data/target/../x"}, {"l", "up/up/../.."}, {"a/b/l", "../../c/./d"}, {"l", "./"}, {"l", ""},
	} {
		f.Add(s[0], s[1])
	}
	within := []string{"/data/target"}
	f.Fuzz(func(t *testing.T, name, target string) {
		clean, err := archiveCleanName(name)
		if err != nil || clean == "." {
			return
		}
		if archiveCheckSymlink(clean, target, within) != nil {
			return
		}
		// The rule is stricter than a lexical resolution, which must
		// therefore stay inside too.
		var resolved string
		if strings.HasPrefix(target, "/") {
			resolved = path.Clean(target)
		} else {
			resolved = path.Join("/data/target", path.Dir(clean), target)
		}
		if !wire.PathWithin(resolved, "/data/target") {
			t.Fatalf("symlink %q -> %q accepted, resolves to %s", name, target, resolved)
		}
		// ".." only before the first name: a name may be a symlink that
		// a ".." after it would climb out of.
		named := false
		for _, c := range strings.Split(target, "/") {
			switch c {
			case "", ".":
			case "..":
				if named || strings.HasPrefix(target, "/") {
					t.Fatalf("symlink %q -> %q accepted with a \"..\" after a name", name, target)
				}
			default:
				named = true
			}
		}
	})
}

// FuzzImportTar feeds arbitrary bytes to an import and checks that it
// never panics, never writes outside the target, and leaves the target
// as it was whenever it fails.
func FuzzImportTar(f *testing.F) {
	seeds := [][]tarEntry{
		{tarFile("a.txt", "hello"), tarDir("d/"), tarFile("d/b", "b"), tarSymlink("d/l", "../a.txt"), tarHardlink("h", "a.txt")},
		{tarFile("../escape", "x")},
		{tarSymlink("l", "../canary-dir"), tarFile("l/pwned", "x")},
		{tarSymlink("l", "."), tarFile("l/l/x", "x")},
		{tarSymlink("up", "."), tarSymlink("x", "up/up/../../canary-dir"), tarFile("x/pwned", "x")},
		{tarFile("keep", "replaced"), tarFile("sub/new", "n")},
		{tarDir("sub/"), tarFile("sub", "x")},
		{{hdr: tar.Header{Name: "pipe", Typeflag: tar.TypeFifo}}},
	}
	for _, s := range seeds {
		b := buildTar(f, s...)
		f.Add(b)
		f.Add(gzipBytes(f, b))
	}
	f.Add(buildZip(f, zipEntry{name: "z.txt", body: "z"}, zipEntry{name: "l", mode: fs.ModeSymlink | 0o777, body: "../canary-dir"}))
	f.Add(gnuSparseTar(f, "s", 1<<20))
	f.Add([]byte{})

	base := f.TempDir()
	canaryDir := filepath.Join(base, "canary-dir")
	target := filepath.Join(base, "target")
	if err := os.MkdirAll(canaryDir, 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(canaryDir, "canary.txt"), []byte("do not touch"), 0o644); err != nil {
		f.Fatal(err)
	}
	canary := archiveSnapshot(f, canaryDir)
	s := &server{opts: Options{DataDir: target}, log: slog.New(slog.DiscardHandler)}
	q := url.Values{"path": {target}, "max_entries": {"1000"}, "max_bytes": {"4194304"}}

	f.Fuzz(func(t *testing.T, body []byte) {
		if err := os.RemoveAll(target); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(target, "keep"), "keep")
		mustWrite(t, filepath.Join(target, "sub", "old"), "old")
		before := archiveSnapshot(t, target)

		_, err := s.archiveImport(context.Background(), q, bytes.NewReader(body))

		if got := archiveSnapshot(t, canaryDir); got != canary {
			t.Fatalf("canary changed:\n%s", got)
		}
		entries, _ := os.ReadDir(base)
		for _, e := range entries {
			if e.Name() != "canary-dir" && e.Name() != "target" {
				t.Fatalf("import wrote %s outside the target", e.Name())
			}
		}
		inTarget, _ := os.ReadDir(target)
		for _, e := range inTarget {
			if strings.HasPrefix(e.Name(), archiveStagingPrefix) {
				t.Fatalf("staging directory %s left behind", e.Name())
			}
		}
		if err != nil {
			if after := archiveSnapshot(t, target); after != before {
				t.Fatalf("failed import (%v) changed the target:\n%s", err, after)
			}
			return
		}
		// Every symlink the archive made resolves inside the target, if it
		// resolves at all.
		_ = filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			if real, err := filepath.EvalSymlinks(p); err == nil && !wire.PathWithin(real, target) {
				t.Fatalf("symlink %s resolves to %s, outside the target", p, real)
			}
			return nil
		})
	})
}
