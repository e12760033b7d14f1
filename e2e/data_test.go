package e2e

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDataRoundTrip exports /data and imports it into another directory:
// bytes, modes, empty directories and symlinks survive.
func TestDataRoundTrip(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	c := e.httpSDK(b)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "data"})
	e.execIn(t, "data", "sh", "-c", `mkdir -p /data/proj/empty /data/proj/src && printf 'hello\n' > /data/proj/src/a.txt &&
chmod 0751 /data/proj/src/a.txt && ln -s src/a.txt /data/proj/link && head -c 100000 /dev/urandom > /data/proj/blob`)
	before := e.execIn(t, "data", "sh", "-c", "cd /data/proj && find . | sort | while read f; do stat -c '%n %A %s' \"$f\"; done; md5sum src/a.txt blob; readlink link")

	var exp struct {
		ExportID    string `json:"export_id"`
		ResourceURI string `json:"resource_uri"`
		DownloadURL string `json:"download_path"`
		Size        int64  `json:"size_bytes"`
	}
	mustCall(t, c, "data_export", map[string]any{"bot_id": "data", "path": "proj"}).decode(t, &exp)
	if exp.ExportID == "" || exp.Size == 0 {
		t.Fatalf("export: %+v", exp)
	}
	blob, err := c.readResource(t.Context(), exp.ResourceURI)
	if err != nil || int64(len(blob)) != exp.Size {
		t.Fatalf("export resource: %d bytes, %v", len(blob), err)
	}
	// Download it over HTTP and import it back elsewhere, through MCP.
	req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(b.URL, "/mcp")+exp.DownloadURL, nil)
	req.Header.Set("Authorization", "Bearer "+b.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	archive, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || int64(len(archive)) != exp.Size {
		t.Fatalf("download: %d, %d bytes", resp.StatusCode, len(archive))
	}
	res := mustCall(t, c, "data_import", map[string]any{"bot_id": "data", "path": "copy", "archive_base64": base64.StdEncoding.EncodeToString(archive)})
	if res.IsError {
		t.Fatal(res.Text)
	}
	after := e.execIn(t, "data", "sh", "-c", "cd /data/copy && find . | sort | while read f; do stat -c '%n %A %s' \"$f\"; done; md5sum src/a.txt blob; readlink link")
	if after != before {
		t.Fatalf("round trip changed the tree:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// hostile archives, each of which must be refused without changing /data.
func hostileArchives(t *testing.T, canary string) map[string][]byte {
	t.Helper()
	tarOf := func(entries ...*tar.Header) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg && h.Size > 0 && h.Size < 1<<20 {
				tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
			}
		}
		tw.Flush() // no Close: a bomb's body is deliberately missing
		return buf.Bytes()
	}
	zipOf := func(name string, mode os.FileMode, body string) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		h := &zip.FileHeader{Name: name}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
		zw.Close()
		return buf.Bytes()
	}
	file := func(name string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 4}
	}
	var bomb bytes.Buffer
	gz := gzip.NewWriter(&bomb)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: 11 << 30})
	zeros := make([]byte, 1<<20)
	for range 64 { // 64 MiB of zeros is enough to show the bytes are counted
		tw.Write(zeros)
	}
	gz.Close()
	return map[string][]byte{
		"dotdot":              tarOf(file("../escape")),
		"absolute":            tarOf(file("/tmp/abs")),
		"symlink then file":   tarOf(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: filepath.Dir(canary)}, file("l/pwned")),
		"symlink out":         tarOf(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../../etc"}),
		"hardlink out":        tarOf(&tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}),
		"device":              tarOf(&tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}),
		"fifo":                tarOf(&tar.Header{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o644}),
		"10 GB entry":         tarOf(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 10 << 30}),
		"gzip bomb":           bomb.Bytes(),
		"zip dotdot":          zipOf("../../zip-escape", 0o644, "x"),
		"zip absolute":        zipOf("/zip-abs", 0o644, "x"),
		"zip symlink outside": zipOf("zl", os.ModeSymlink|0o777, "/etc"),
	}
}

// TestDataImportRefusesHostileArchives: each archive is refused with a
// clear error, /data is unchanged, and a canary on the host is untouched.
func TestDataImportRefusesHostileArchives(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	c := e.httpMcpgo(b)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "hostile"})
	e.execIn(t, "hostile", "sh", "-c", "mkdir -p /data/keep && echo safe > /data/keep/file")
	canary := filepath.Join(e.stateDir, "canary", "canary.txt")
	os.MkdirAll(filepath.Dir(canary), 0o755)
	os.WriteFile(canary, []byte("untouched"), 0o644)
	snapshot := func() string {
		return e.execIn(t, "hostile", "sh", "-c", "cd /data && find . | sort | while read f; do stat -c '%n %A %s' \"$f\"; done")
	}
	before := snapshot()
	base := strings.TrimSuffix(b.URL, "/mcp") + "/bots/hostile/data/import"
	for name, archive := range hostileArchives(t, canary) {
		t.Run(name, func(t *testing.T) {
			var msg string
			if len(archive) < 1<<20 {
				res := mustCall(t, c, "data_import", map[string]any{"bot_id": "hostile", "archive_base64": base64.StdEncoding.EncodeToString(archive)})
				if !res.IsError {
					t.Fatalf("accepted: %s", res.Text)
				}
				msg = res.Text
			} else {
				req, _ := http.NewRequest(http.MethodPut, base+"?max_bytes=1048576", bytes.NewReader(archive))
				req.Header.Set("Authorization", "Bearer "+b.Token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode < 400 {
					t.Fatalf("accepted over HTTP: %s", body)
				}
				msg = string(body)
			}
			if len(msg) < 20 {
				t.Fatalf("error is not clear: %q", msg)
			}
			if got := snapshot(); got != before {
				t.Fatalf("refused import changed /data:\n%s\nvs\n%s", got, before)
			}
			if data, _ := os.ReadFile(canary); string(data) != "untouched" {
				t.Fatal("the host canary was touched")
			}
			if entries, _ := os.ReadDir(filepath.Dir(canary)); len(entries) != 1 {
				t.Fatalf("something was written next to the host canary: %v", entries)
			}
		})
	}
}

// TestDataImportRefusesMillionEntries streams a tar of a million empty
// files over HTTP: berth refuses it at the entry cap without storing it.
func TestDataImportRefusesMillionEntries(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	c := e.httpMcpgo(b)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "million"})
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		for i := range 1_000_000 {
			if err := tw.WriteHeader(&tar.Header{Name: "f" + strconv.Itoa(i), Typeflag: tar.TypeReg, Mode: 0o644}); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(tw.Close())
	}()
	req, _ := http.NewRequest(http.MethodPut, strings.TrimSuffix(b.URL, "/mcp")+"/bots/million/data/import", pr)
	req.Header.Set("Authorization", "Bearer "+b.Token)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || !strings.Contains(string(body), "entries") {
			t.Fatalf("a million entries: %d %s", resp.StatusCode, body)
		}
	}
	pr.Close()
	if got := e.execIn(t, "million", "sh", "-c", "ls -A /data | wc -l"); strings.TrimSpace(got) != "0" {
		t.Fatalf("refused import left %s entries in /data", got)
	}
}

// TestPreserveAndRestore deletes a workspace keeping /data and brings it
// back with a new one.
func TestPreserveAndRestore(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "keeper"})
	e.execIn(t, "keeper", "sh", "-c", "mkdir -p /data/work && echo precious > /data/work/file && ln -s work/file /data/link")
	mustCall(t, c, "workspace_delete", map[string]any{"bot_id": "keeper", "preserve_data": true})
	var ws struct {
		HasPreservedData bool `json:"has_preserved_data"`
	}
	if res := mustCall(t, c, "workspace_get", map[string]any{"bot_id": "keeper"}); !res.IsError {
		t.Fatalf("deleted workspace still there: %s", res.Text)
	}
	var created createOut
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "keeper", "restore_data": true}).decode(t, &created)
	if got := e.execIn(t, "keeper", "sh", "-c", "cat /data/work/file; readlink /data/link"); got != "precious\nwork/file\n" {
		t.Fatalf("restored data: %q", got)
	}
	mustCall(t, c, "workspace_get", map[string]any{"bot_id": "keeper"}).decode(t, &ws)
	if ws.HasPreservedData {
		t.Fatal("the backup was not consumed by a successful restore")
	}
	if res := mustCall(t, c, "data_restore", map[string]any{"bot_id": "keeper"}); !res.IsError || !strings.Contains(res.Text, "no preserved data") {
		t.Fatalf("restore without a backup: %+v", res)
	}
	if res := mustCall(t, c, "workspace_create", map[string]any{"bot_id": "other", "restore_data": true}); !res.IsError {
		t.Fatalf("restore_data without a backup: %+v", res)
	}
}

// TestLargeExportBoundedMemory streams a 200 MB export over HTTP.
func TestLargeExportBoundedMemory(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	c := e.httpSDK(b)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "bigdata"})
	e.execIn(t, "bigdata", "sh", "-c", "head -c 209715200 /dev/urandom > /data/big.bin")
	req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(b.URL, "/mcp")+"/bots/bigdata/data/export", nil)
	req.Header.Set("Authorization", "Bearer "+b.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	gz, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var size int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "big.bin" {
			size, _ = io.Copy(io.Discard, tr)
		}
	}
	if size != 200<<20 {
		t.Fatalf("big.bin in the export: %d bytes", size)
	}
	hwm := peakRSS(t, b.cmd.Process.Pid)
	t.Logf("berth peak RSS after a 200 MB export: %d MiB", hwm>>20)
	if hwm > 100<<20 {
		t.Fatalf("berth buffered the export: peak RSS %d MiB", hwm>>20)
	}
}
