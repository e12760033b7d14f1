package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

type readOut struct {
	Text       string `json:"text"`
	TotalLines int    `json:"total_lines"`
	Truncated  bool   `json:"truncated"`
	NextOffset int    `json:"next_offset"`
	Revision   string `json:"revision"`
	Binary     bool   `json:"binary"`
	BlobBytes  int    `json:"blob_bytes"`
}

// TestFiles exercises the file tools over both transports.
func TestFiles(t *testing.T) {
	for _, cl := range []struct {
		name    string
		connect func(e *env) mcpClient
	}{clients[1], clients[2]} {
		t.Run(cl.name, func(t *testing.T) {
			e := newEnv(t)
			c := cl.connect(e)
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": "files"})
			call := func(tool string, args map[string]any) *toolResult {
				t.Helper()
				args["bot_id"] = "files"
				return mustCall(t, c, tool, args)
			}

			var w struct {
				Path     string `json:"path"`
				Revision string `json:"revision"`
			}
			call("fs_write", map[string]any{"path": "notes/a.txt", "content": "one\ntwo\nthree\nfour\n"}).decode(t, &w)
			if w.Path != "/data/notes/a.txt" {
				t.Fatalf("relative path: %+v", w)
			}
			var r readOut
			call("fs_read", map[string]any{"path": "/data/notes/a.txt", "offset": 1, "limit": 2}).decode(t, &r)
			if r.Text != "two\nthree\n" || r.TotalLines != 4 || !r.Truncated || r.NextOffset != 3 || r.Revision != w.Revision {
				t.Fatalf("line window: %+v", r)
			}
			call("fs_read", map[string]any{"path": "notes/a.txt", "tail": 1}).decode(t, &r)
			if r.Text != "four\n" {
				t.Fatalf("tail: %+v", r)
			}
			if out := e.execIn(t, "files", "cat", "/data/notes/a.txt"); out != "one\ntwo\nthree\nfour\n" {
				t.Fatalf("written file as the workspace sees it: %q", out)
			}

			// Revision conflicts.
			if res := call("fs_write", map[string]any{"path": "notes/a.txt", "content": "x", "expected_revision": strings.Repeat("0", 64)}); !res.IsError || !strings.Contains(res.Text, "conflict") {
				t.Fatalf("stale revision: %+v", res)
			}
			call("fs_write", map[string]any{"path": "notes/a.txt", "content": "one\ntwo\nthree\nfour\n", "expected_revision": w.Revision})

			// Edits: dry run shows a diff and changes nothing; all or nothing.
			var ed struct {
				Diff     string `json:"diff"`
				Applied  bool   `json:"applied"`
				Revision string `json:"revision"`
			}
			call("fs_edit", map[string]any{"path": "notes/a.txt", "dry_run": true, "edits": []map[string]any{{"old": "two", "new": "TWO"}}}).decode(t, &ed)
			if !strings.Contains(ed.Diff, "-two") || !strings.Contains(ed.Diff, "+TWO") || ed.Applied {
				t.Fatalf("dry run: %+v", ed)
			}
			if out := e.execIn(t, "files", "cat", "/data/notes/a.txt"); strings.Contains(out, "TWO") {
				t.Fatal("dry run wrote the file")
			}
			if res := call("fs_edit", map[string]any{"path": "notes/a.txt", "edits": []map[string]any{{"old": "two", "new": "TWO"}, {"old": "absent", "new": "x"}}}); !res.IsError {
				t.Fatalf("edit with a missing string: %+v", res)
			}
			if out := e.execIn(t, "files", "cat", "/data/notes/a.txt"); strings.Contains(out, "TWO") {
				t.Fatal("a failed edit changed the file")
			}
			call("fs_edit", map[string]any{"path": "notes/a.txt", "edits": []map[string]any{{"old": "two", "new": "TWO"}}})
			if out := e.execIn(t, "files", "cat", "/data/notes/a.txt"); out != "one\nTWO\nthree\nfour\n" {
				t.Fatalf("edit: %q", out)
			}

			// Directories, moves, copies, deletes.
			call("fs_mkdir", map[string]any{"path": "tree/deep/er"})
			call("fs_copy", map[string]any{"source": "notes", "destination": "tree/deep/notes-copy"})
			call("fs_move", map[string]any{"source": "tree/deep/notes-copy/a.txt", "destination": "tree/b.txt"})
			var list struct {
				Entries []struct {
					Path string `json:"path"`
					Type string `json:"type"`
				} `json:"entries"`
				Total int `json:"total"`
			}
			call("fs_list", map[string]any{"path": "tree", "recursive": true}).decode(t, &list)
			var paths []string
			for _, en := range list.Entries {
				paths = append(paths, en.Path)
			}
			if strings.Join(paths, ",") != "/data/tree/b.txt,/data/tree/deep,/data/tree/deep/er,/data/tree/deep/notes-copy" {
				t.Fatalf("recursive list: %v", paths)
			}
			if res := call("fs_delete", map[string]any{"path": "tree"}); !res.IsError {
				t.Fatalf("deleting a non-empty dir without recursive: %+v", res)
			}
			call("fs_delete", map[string]any{"path": "tree", "recursive": true})
			if res := call("fs_delete", map[string]any{"path": "/", "recursive": true}); !res.IsError {
				t.Fatalf("deleting / must be refused: %+v", res)
			}

			// Find and grep, with caps.
			e.execIn(t, "files", "sh", "-c", "mkdir -p /data/many && for i in $(seq 30); do echo needle $i > /data/many/f$i.log; done")
			var found struct {
				Matches   []any `json:"matches"`
				Truncated bool  `json:"truncated"`
			}
			call("fs_find", map[string]any{"path": "many", "pattern": "*.log", "max_results": 10}).decode(t, &found)
			if len(found.Matches) != 10 || !found.Truncated {
				t.Fatalf("find cap: %d %v", len(found.Matches), found.Truncated)
			}
			var grep struct {
				Matches   []struct{ Path, Text string } `json:"matches"`
				Truncated bool                          `json:"truncated"`
				Reason    string                        `json:"reason"`
			}
			call("fs_grep", map[string]any{"path": "many", "pattern": "needle", "max_matches": 5}).decode(t, &grep)
			if len(grep.Matches) != 5 || !grep.Truncated || grep.Reason == "" {
				t.Fatalf("grep cap: %+v", grep)
			}

			// Binary and image files.
			e.execIn(t, "files", "sh", "-c", "printf '\\211PNG\\r\\n\\032\\n\\0\\0\\0\\rIHDR' > /data/pic.png")
			call("fs_read", map[string]any{"path": "pic.png"}).decode(t, &r)
			if !r.Binary || r.BlobBytes != 16 {
				t.Fatalf("binary read: %+v", r)
			}

			// Bad input.
			for args, want := range map[string]map[string]any{
				"not_found":    {"path": "/data/missing.txt"},
				"is_directory": {"path": "/data"},
			} {
				if res := call("fs_read", want); !res.IsError || !strings.Contains(res.Text, args) {
					t.Errorf("fs_read %v: want %q, got %+v", want, args, res)
				}
			}
			if res := call("fs_read", map[string]any{"path": "notes/a.txt", "max_bytes": 1 << 30}); !res.IsError || !strings.Contains(res.Text, "max_bytes") {
				t.Errorf("oversized max_bytes accepted: %+v", res)
			}

			// The files resource.
			text, err := c.readResource(context.Background(), "berth://bots/files/files/data/notes/a.txt")
			if err != nil || text != "one\nTWO\nthree\nfour\n" {
				t.Fatalf("files resource: %q %v", text, err)
			}
		})
	}
}

// TestAtomicWrite rewrites a file many times while a reader inside the
// workspace checks that every read is wholly one version.
func TestAtomicWrite(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "atomic"})
	const size = 200000
	versions := []string{strings.Repeat("a", size), strings.Repeat("b", size)}
	mustCall(t, c, "fs_write", map[string]any{"bot_id": "atomic", "path": "f", "content": versions[0]})
	reader := execute(t, c, "atomic", map[string]any{"background": true, "command": `reads=0; bad=0
while [ ! -e /data/stop ]; do
  cat /data/f > /tmp/r; n=$(wc -c < /tmp/r); a=$(tr -d b < /tmp/r | wc -c); b=$(tr -d a < /tmp/r | wc -c)
  if [ "$n" -ne ` + strconv.Itoa(size) + ` ] || { [ "$a" -ne 0 ] && [ "$b" -ne 0 ]; }; then bad=$((bad+1)); fi
  reads=$((reads+1))
done
echo reads=$reads bad=$bad`})
	for i := range 40 {
		if res := mustCall(t, c, "fs_write", map[string]any{"bot_id": "atomic", "path": "f", "content": versions[i%2]}); res.IsError {
			t.Fatal(res.Text)
		}
	}
	mustCall(t, c, "fs_write", map[string]any{"bot_id": "atomic", "path": "stop", "content": ""})
	deadline := time.Now().Add(20 * time.Second)
	for {
		var chunk struct {
			Output  string `json:"output"`
			Running bool   `json:"running"`
		}
		mustCall(t, c, "process_output", map[string]any{"bot_id": "atomic", "process_id": reader.ProcessID}).decode(t, &chunk)
		if !chunk.Running {
			var reads, bad int
			if _, err := fmt.Sscanf(chunk.Output, "reads=%d bad=%d", &reads, &bad); err != nil || reads == 0 || bad != 0 {
				t.Fatalf("concurrent reader: %q", chunk.Output)
			}
			t.Logf("reader saw %d whole reads", reads)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("reader did not stop")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLargeDownloadBoundedMemory downloads and uploads 200 MB over the
// HTTP file endpoints and checks berth's peak memory stays small.
func TestLargeDownloadBoundedMemory(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	c := e.httpSDK(b)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "big"})
	e.execIn(t, "big", "sh", "-c", "head -c 209715200 /dev/urandom > /data/big.bin && sha256sum /data/big.bin > /data/big.sum")
	want := strings.Fields(e.execIn(t, "big", "cat", "/data/big.sum"))[0]

	base := strings.TrimSuffix(b.URL, "/mcp") + "/bots/big/files?path="
	req, _ := http.NewRequest(http.MethodGet, base+"/data/big.bin", nil)
	req.Header.Set("Authorization", "Bearer "+b.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || n != 200<<20 || hex.EncodeToString(h.Sum(nil)) != want {
		t.Fatalf("download: status %d, %d bytes, err %v", resp.StatusCode, n, err)
	}

	// Upload 200 MB back, streamed from a generator.
	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 1<<20)
		for i := range chunk {
			chunk[i] = byte(i)
		}
		for range 200 {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ = http.NewRequest(http.MethodPut, base+"/data/up.bin", pr)
	req.Header.Set("Authorization", "Bearer "+b.Token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"size":209715200`) {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}

	hwm := peakRSS(t, b.cmd.Process.Pid)
	t.Logf("berth peak RSS after 400 MB through it: %d MiB", hwm>>20)
	if hwm > 100<<20 {
		t.Fatalf("berth's peak RSS grew to %d MiB moving 200 MB files: it buffers", hwm>>20)
	}
	// Unauthorized and bad requests.
	resp, err = http.Get(base + "/data/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("download without token: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, base+"/data/missing", nil)
	req.Header.Set("Authorization", "Bearer "+b.Token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("download of a missing file: %d", resp.StatusCode)
	}
}

// peakRSS reads a process's high-water resident set size.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
