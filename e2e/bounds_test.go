package e2e

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// rssBytes is the resident memory of process pid.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestOutOfRangeArgumentsRefused: numbers beyond what berth serves are
// refused with the bound named, never silently clamped or overflowed, and
// big inputs are refused without berth's memory growing with them.
func TestOutOfRangeArgumentsRefused(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	c := e.httpMcpgo(b)
	defer c.close()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "bounds"})

	refused := []struct {
		tool string
		args map[string]any
		want string
	}{
		{"exec", map[string]any{"command": "true", "max_output_bytes": 1e12}, "max_output_bytes must be between 1 and 1048576"},
		{"exec", map[string]any{"command": "true", "max_output_bytes": -1}, "max_output_bytes must be between"},
		{"exec", map[string]any{"command": "true", "timeout_seconds": 1e11}, "timeout_seconds must be between 0"},
		{"exec", map[string]any{"command": "true", "timeout_seconds": -1}, "timeout_seconds must be between 0"},
		{"fs_write", map[string]any{"path": "big", "content_base64": "!!!not base64"}, "content_base64"},
	}
	for _, r := range refused {
		r.args["bot_id"] = "bounds"
		res := mustCall(t, c, r.tool, r.args)
		if !res.IsError || !strings.Contains(res.Text, r.want) {
			t.Fatalf("%s %v: error=%v %q; want a refusal saying %q", r.tool, r.args, res.IsError, res.Text, r.want)
		}
	}

	// 17 MiB (as base64, 23 MiB on the wire) is over fs_write's cap: refused
	// by name, with the way to upload it instead, and nothing is written.
	before := rssBytes(t, b.cmd.Process.Pid)
	big := base64.StdEncoding.EncodeToString(make([]byte, 17<<20))
	res := mustCall(t, c, "fs_write", map[string]any{"bot_id": "bounds", "path": "big", "content_base64": big})
	if !res.IsError || !strings.Contains(res.Text, "PUT /bots/{bot_id}/files") {
		t.Fatalf("fs_write of 17 MiB: error=%v %.200q; want a refusal naming the upload endpoint", res.IsError, res.Text)
	}
	if o := execute(t, c, "bounds", map[string]any{"command": "test -e /data/big && echo written || echo absent"}); o.Stdout != "absent\n" {
		t.Fatalf("a refused write left a file: %+v", o)
	}
	// Just under the cap is written whole.
	res = mustCall(t, c, "fs_write", map[string]any{"bot_id": "bounds", "path": "ok", "content": strings.Repeat("x", 15<<20)})
	if res.IsError {
		t.Fatalf("fs_write of 15 MiB: %.300s", res.Text)
	}
	if o := execute(t, c, "bounds", map[string]any{"command": "wc -c < /data/ok"}); strings.TrimSpace(o.Stdout) != strconv.Itoa(15<<20) {
		t.Fatalf("15 MiB write: %+v", o)
	}
	// Both messages pass through berth's memory; the bound is generous
	// (a few copies of the largest message), and a leak or an unbounded
	// buffer of every request would exceed it.
	if grew := rssBytes(t, b.cmd.Process.Pid) - before; grew > 256<<20 {
		t.Fatalf("berth's RSS grew by %d MiB for two big requests", grew>>20)
	}
}

// TestCallsInFlightPerTokenBounded: a token may have only so many calls in
// flight; the next is refused clearly (and logged), the ones in flight
// finish, and berth's peak memory stays bounded while a token's calls each
// return the most output exec allows, in the worst encoding (control bytes).
func TestCallsInFlightPerTokenBounded(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP("--max-calls-per-token", "3")
	c := e.httpMcpgo(b)
	defer c.close()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "busy"})
	base := strings.TrimSuffix(b.URL, "/mcp") + "/bots/busy/files?path="
	httpFile := func(method, path, body string) int {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+b.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	// Three calls wait inside the workspace until the test lets them go.
	var wg sync.WaitGroup
	results := make([]*toolResult, 3)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = mustCall(t, c, "exec", map[string]any{"bot_id": "busy", "timeout_seconds": 300,
				"command": fmt.Sprintf("touch /data/started-%d; while [ ! -e /data/go ]; do sleep 0.05; done; echo done", i)})
		}()
	}
	// The upload/download routes are not MCP calls: they see the workspace
	// without taking a slot.
	for i := range results {
		waitFor(t, fmt.Sprintf("call %d to start", i), func() bool { return httpFile(http.MethodGet, fmt.Sprintf("/data/started-%d", i), "") == http.StatusOK })
	}
	res := mustCall(t, c, "workspace_get", map[string]any{"bot_id": "busy"})
	if !res.IsError || !strings.Contains(res.Text, "too many calls in flight for this token: at most 3") {
		t.Fatalf("a fourth call in flight: error=%v %q; want a clear refusal", res.IsError, res.Text)
	}
	if code := httpFile(http.MethodPut, "/data/go", "go"); code != http.StatusOK {
		t.Fatalf("upload: %d", code)
	}
	wg.Wait()
	for i, r := range results {
		if r.IsError || !strings.Contains(r.Text, "done") {
			t.Fatalf("call %d in flight: %q", i, r.Text)
		}
	}
	// Slots are given back.
	if res := mustCall(t, c, "workspace_get", map[string]any{"bot_id": "busy"}); res.IsError {
		t.Fatalf("after the calls finished: %q", res.Text)
	}

	// Peak memory: as many worst-case answers as the token may have in
	// flight, each 1 MiB of control bytes on both streams.
	pid := b.cmd.Process.Pid
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
	before := rssBytes(t, pid)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := mustCall(t, c, "exec", map[string]any{"bot_id": "busy", "max_output_bytes": 1 << 20,
				"command": "head -c 1048576 /dev/zero | tr '\\0' '\\1'; head -c 1048576 /dev/zero | tr '\\0' '\\1' >&2"})
			if res.IsError {
				t.Errorf("big exec: %.200q", res.Text)
			}
		}()
	}
	wg.Wait()
	peak := hwmBytes(t, pid)
	t.Logf("berth RSS before %d MiB, peak during 3 worst-case answers %d MiB", before>>20, peak>>20)
	// 6 MiB of output in all; even at 100 times that (escapes, copies,
	// buffers) the peak stays under this bound, which an unbounded 16 MiB
	// per stream (the old cap) exceeded ten times over.
	if peak-before > 700<<20 {
		t.Fatalf("berth's peak RSS grew by %d MiB for 3 calls of 2 MiB output each", (peak-before)>>20)
	}
}

// hwmBytes is the peak resident memory of process pid since the last reset.
func hwmBytes(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
