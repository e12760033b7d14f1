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
		for _, format := range []string{"", "auto", name} {
			if got, more, ok := archiveFiles(archive, format, 10); !slices.Equal(got, want) || more || !ok {
				t.Errorf("%s as %q: %q more=%v ok=%v, want %q", name, format, got, more, ok, want)
			}
			if got, more, ok := archiveFiles(archive, format, 2); !slices.Equal(got, want[:2]) || !more || !ok {
				t.Errorf("%s as %q capped at 2: %q more=%v ok=%v", name, format, got, more, ok)
			}
		}
	}
	// A tar with a zip appended is extracted as a tar (its first bytes):
	// the question lists the tar's files, not the zip's (a zip reader
	// finds a zip at the end of anything).
	var other bytes.Buffer
	zw = zip.NewWriter(&other)
	if _, err := zw.Create("harmless.txt"); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	polyglot := append(slices.Clone(tarBuf.Bytes()), other.Bytes()...)
	if got, _, ok := archiveFiles(polyglot, "auto", 10); !slices.Equal(got, want) || !ok {
		t.Errorf("tar+zip as auto: %q ok=%v, want the tar's %q", got, ok, want)
	}
	if got, _, ok := archiveFiles(polyglot, "zip", 10); !slices.Equal(got, []string{"harmless.txt"}) || !ok {
		t.Errorf("tar+zip as zip: %q ok=%v, want the zip's", got, ok)
	}
	for _, garbage := range [][]byte{[]byte("not an archive"), []byte("PK\x03\x04 broken zip"), {0x1f, 0x8b, 0, 0}} {
		if _, _, ok := archiveFiles(garbage, "auto", 10); ok {
			t.Errorf("%q: listed as if read to its end", garbage)
		}
	}
}
