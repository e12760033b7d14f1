package tools

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"slices"
	"testing"
)

// TestArchiveFiles: the names an import's question checks, from each
// format, without directories or names that leave the target, capped.
func TestArchiveFiles(t *testing.T) {
	entries := []struct {
		name string
		dir  bool
	}{{"a/", true}, {"a/one.txt", false}, {"./two", false}, {"../out", false}, {"/abs/three", false}}
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, e := range entries {
		typ := byte(tar.TypeReg)
		if e.dir {
			typ = tar.TypeDir
		}
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	var gzBuf bytes.Buffer
	gz := gzip.NewWriter(&gzBuf)
	gz.Write(tarBuf.Bytes())
	gz.Close()
	var zipBuf bytes.Buffer
	zw := zip.NewWriter(&zipBuf)
	for _, e := range entries {
		if _, err := zw.Create(e.name); err != nil {
			t.Fatal(err)
		}
	}
	zw.Close()

	want := []string{"a/one.txt", "two", "abs/three"}
	for name, archive := range map[string][]byte{"tar": tarBuf.Bytes(), "tar.gz": gzBuf.Bytes(), "zip": zipBuf.Bytes()} {
		if got, more := archiveFiles(archive, 10); !slices.Equal(got, want) || more {
			t.Errorf("%s: %q more=%v, want %q", name, got, more, want)
		}
		if got, more := archiveFiles(archive, 2); !slices.Equal(got, want[:2]) || !more {
			t.Errorf("%s capped at 2: %q more=%v", name, got, more)
		}
	}
	if got, more := archiveFiles([]byte("not an archive"), 10); len(got) != 0 || more {
		t.Errorf("garbage: %q %v", got, more)
	}
}
