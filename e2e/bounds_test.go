package e2e

import (
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
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
		{"exec", map[string]any{"command": "true", "max_output_bytes": 1e12}, "max_output_bytes must be between 1 and 16777216"},
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
