package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// resourceErrorCode is the JSON-RPC error code of a failed resources/read,
// as each client library reports it.
func resourceErrorCode(err error) int {
	var wire *jsonrpc.Error
	if errors.As(err, &wire) {
		return int(wire.Code)
	}
	switch {
	case errors.Is(err, mcpgo.ErrResourceNotFound):
		return mcpgo.RESOURCE_NOT_FOUND
	case errors.Is(err, mcpgo.ErrInternalError):
		return mcpgo.INTERNAL_ERROR
	case errors.Is(err, mcpgo.ErrInvalidParams):
		return mcpgo.INVALID_PARAMS
	}
	return 0
}

// modernProtocol reports whether c negotiated protocol 2026-07-28 or later
// (both clients do over HTTP unless pinned; over stdio mcp-go's does).
func modernProtocol(c mcpClient, name string) bool {
	if s, ok := c.(*sdkClient); ok {
		return mcpgo.IsModernProtocol(s.cs.InitializeResult().ProtocolVersion)
	}
	if m, ok := c.(*mcpgoClient); ok && strings.HasPrefix(name, "http-") {
		return mcpgo.IsModernProtocol(m.c.ProtocolVersion())
	}
	return strings.HasPrefix(name, "stdio-")
}

// TestMissingResourceIsNotFound: reading a snapshot version, an export or
// the snapshots of a bot that do not exist answers resource-not-found
// (-32002), not an internal error, with each client over each transport;
// an existing version still reads.
func TestMissingResourceIsNotFound(t *testing.T) {
	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			e := newEnv(t)
			c := cl.connect(e)
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": "res"})
			mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "res", "name": "one"})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if text, err := c.readResource(ctx, "berth://bots/res/snapshots/1"); err != nil || !strings.Contains(text, `"one"`) {
				t.Fatalf("existing version: %v %q", err, text)
			}
			// Protocol 2026-07-28 reports a missing resource as invalid
			// params; earlier ones (HTTP sessions, the TS SDK) as -32002.
			want := mcpgo.RESOURCE_NOT_FOUND
			if modernProtocol(c, cl.name) {
				want = mcpgo.INVALID_PARAMS
			}
			for uri, why := range map[string]string{
				"berth://bots/res/snapshots/9":                      "no snapshot version 9",
				"berth://bots/res/exports/0123456789abcdef01234567": "no export",
				"berth://bots/nobody/snapshots":                     "has no workspace",
				"berth://bots/nobody/snapshots/1":                   "has no workspace",
			} {
				_, err := c.readResource(ctx, uri)
				if code := resourceErrorCode(err); code != want {
					t.Errorf("%s: error code %d (%v), want %d", uri, code, err, want)
				}
				if err != nil && !strings.Contains(err.Error(), why) {
					t.Errorf("%s: %v, want it to say %q", uri, err, why)
				}
			}
		})
	}
}

// TestDeleteIsIdempotent: every destructive tool annotated idempotent
// succeeds when called again for what is already gone, and workspace_delete
// removes the bot's export archives from the state directory.
func TestDeleteIsIdempotent(t *testing.T) {
	e := newEnv(t)
	c := e.stdioSDK()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "idem"})
	mustCall(t, c, "fs_write", map[string]any{"bot_id": "idem", "path": "/data/f", "content": "x"})
	mustCall(t, c, "skills_upsert", map[string]any{"bot_id": "idem", "skills": []string{"---\nname: sk\ndescription: a skill\n---\nbody\n"}})
	// Versions build on each other: the newest is the one nothing builds on.
	var snap snapOut
	mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "idem"})
	mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "idem"}).decode(t, &snap)
	var term struct {
		ID string `json:"id"`
	}
	mustCall(t, c, "terminal_open", map[string]any{"bot_id": "idem"}).decode(t, &term)
	bg := execute(t, c, "idem", map[string]any{"command": "sleep 3600", "background": true})
	mustCall(t, c, "data_export", map[string]any{"bot_id": "idem"})
	exports := filepath.Join(e.stateDir, "exports", "idem")
	if _, err := os.Stat(exports); err != nil {
		t.Fatalf("data_export made no export folder: %v", err)
	}

	twice := []struct {
		tool string
		args map[string]any
	}{
		{"fs_delete", map[string]any{"path": "/data/f"}},
		{"skills_delete", map[string]any{"name": "sk"}},
		{"snapshot_delete", map[string]any{"version": snap.Version}},
		{"terminal_close", map[string]any{"terminal_id": term.ID}},
		{"process_kill", map[string]any{"process_id": bg.ProcessID}},
		{"workspace_stop", map[string]any{}},
		{"workspace_delete", map[string]any{}},
	}
	for _, call := range twice {
		call.args["bot_id"] = "idem"
		for i := range 2 {
			if res := mustCall(t, c, call.tool, call.args); res.IsError {
				t.Errorf("%s, call %d of 2: %s", call.tool, i+1, res.Text)
			}
		}
	}
	var del struct {
		Deleted bool `json:"deleted"`
	}
	res := mustCall(t, c, "workspace_delete", map[string]any{"bot_id": "idem"})
	res.decode(t, &del)
	if res.IsError || del.Deleted || !strings.Contains(res.Text, "nothing to delete") {
		t.Errorf("workspace_delete of a deleted workspace: %+v", res)
	}
	if _, err := os.Stat(exports); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the export folder outlived its workspace: %v", err)
	}
}

// TestFinalProgressBeforeResult: the last progress notification of a call
// is written before the call's result: snapshot_create's 2/2 is there when
// the call returns, over stdio and HTTP. mcp-go's clients hand
// notifications over in the order they arrive, so they see the order on
// the wire (the go-sdk handles notifications on another goroutine than
// results, and the harness forgets a call's token when it returns).
func TestFinalProgressBeforeResult(t *testing.T) {
	for _, cl := range clients {
		if !strings.HasSuffix(cl.name, "-mcpgo") {
			continue
		}
		t.Run(cl.name, func(t *testing.T) {
			e := newEnv(t)
			c := cl.connect(e)
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": "prog"})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			for i := range 5 {
				var progress progressLog
				res, err := c.call(ctx, "snapshot_create", map[string]any{"bot_id": "prog"}, progress.add)
				if err != nil || res.IsError {
					t.Fatalf("snapshot_create: %v %+v", err, res)
				}
				events := progress.all()
				if len(events) == 0 || events[len(events)-1].Progress != 2 || events[len(events)-1].Total != 2 {
					t.Fatalf("snapshot %d: progress when the result arrived: %+v; want it to end with 2/2", i+1, events)
				}
			}
		})
	}
}

// TestNamespaceHeldByOneBerth: a second berth on the same containerd
// namespace, even with its own state directory, refuses to start and names
// the berth that holds it; once that one is gone (killed, as a crash), the
// namespace is free again.
func TestNamespaceHeldByOneBerth(t *testing.T) {
	e := newEnv(t)
	first := e.serveHTTP()
	c := e.httpMcpgo(first)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "held"})

	second := *e
	second.stateDir = testenv.StateDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, transport := range [][]string{{"--stdio"}, {"--http", "127.0.0.1:0", "--token", "test-token-0123456789abcdef"}} {
		args := append(append([]string{"serve"}, transport...), second.args()...)
		cmd := exec.CommandContext(ctx, berthBin, args...)
		cmd.Stdin = strings.NewReader("") // a stdio berth refused must not wait for input
		out, err := cmd.CombinedOutput()
		want := fmt.Sprintf("berth pid %d", first.cmd.Process.Pid)
		if err == nil || !strings.Contains(string(out), "served by another berth") || !strings.Contains(string(out), want) || !strings.Contains(string(out), e.stateDir) {
			t.Fatalf("second berth (%v): %v\n%s\nwant a refusal naming %s and state dir %s", transport, err, out, want, e.stateDir)
		}
	}
	// The workspace the first berth made is untouched by the refused ones.
	var ws workspaceOut
	mustCall(t, c, "workspace_get", map[string]any{"bot_id": "held"}).decode(t, &ws)
	if ws.Status != "running" {
		t.Fatalf("workspace after the refused berths: %+v", ws)
	}
	c.close()
	first.kill()
	next := second.serveHTTP()
	mustCall(t, second.httpMcpgo(next), "workspace_list", map[string]any{})
}

// TestRestoreKeepsOutsideLinks: a preserved /data whose symlinks point out
// of /data (a venv's bin/python) comes back as it was, through
// workspace_create restore_data and through data_restore; a restore that
// fails still returns the created workspace and says why, keeping the
// backup; data_preserved_delete discards a backup, and again succeeds.
func TestRestoreKeepsOutsideLinks(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	const links = "for l in bin/python lib64 etc; do readlink /data/venv/$l; done; cat /data/venv/pyvenv.cfg"
	const want = "/bin/busybox\n../../../lib\n../../etc\nhome = /bin\n"
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "venv"})
	e.execIn(t, "venv", "sh", "-c", "mkdir -p /data/venv/bin && ln -s /bin/busybox /data/venv/bin/python && ln -s ../../../lib /data/venv/lib64 && ln -s ../../etc /data/venv/etc && echo 'home = /bin' > /data/venv/pyvenv.cfg")
	mustCall(t, c, "workspace_delete", map[string]any{"bot_id": "venv", "preserve_data": true})

	var created struct {
		Workspace    workspaceOut `json:"workspace"`
		Created      bool         `json:"created"`
		RestoreError string       `json:"restore_error"`
		Restored     *struct {
			Symlinks int `json:"symlinks"`
		} `json:"restored"`
	}
	res := mustCall(t, c, "workspace_create", map[string]any{"bot_id": "venv", "restore_data": true})
	res.decode(t, &created)
	if res.IsError || created.RestoreError != "" || created.Restored == nil || created.Restored.Symlinks != 3 {
		t.Fatalf("workspace_create restore_data: %+v", res)
	}
	if got := e.execIn(t, "venv", "sh", "-c", links); got != want {
		t.Fatalf("restored /data: %q, want %q", got, want)
	}

	// data_restore into an existing workspace does the same.
	mustCall(t, c, "workspace_delete", map[string]any{"bot_id": "venv", "preserve_data": true})
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "venv"})
	if res := mustCall(t, c, "data_restore", map[string]any{"bot_id": "venv"}); res.IsError {
		t.Fatalf("data_restore: %s", res.Text)
	}
	if got := e.execIn(t, "venv", "sh", "-c", links); got != want {
		t.Fatalf("data_restore: %q, want %q", got, want)
	}

	// A backup that cannot be restored: the workspace is created anyway.
	mustCall(t, c, "workspace_delete", map[string]any{"bot_id": "venv", "preserve_data": true})
	backup := filepath.Join(e.stateDir, "preserved", "venv.tar.gz")
	if err := os.WriteFile(backup, []byte("not a gzip stream"), 0o600); err != nil {
		t.Fatal(err)
	}
	res = mustCall(t, c, "workspace_create", map[string]any{"bot_id": "venv", "restore_data": true})
	created.RestoreError, created.Created = "", false
	res.decode(t, &created)
	if res.IsError || !created.Created || created.Workspace.Status != "running" || created.RestoreError == "" || !strings.Contains(res.Text, "NOT restored") {
		t.Fatalf("failed restore in workspace_create: %+v", res)
	}
	var ws struct {
		HasPreservedData bool `json:"has_preserved_data"`
	}
	mustCall(t, c, "workspace_get", map[string]any{"bot_id": "venv"}).decode(t, &ws)
	if !ws.HasPreservedData {
		t.Fatal("a failed restore dropped the backup")
	}

	var discarded struct {
		Deleted bool `json:"deleted"`
	}
	mustCall(t, c, "data_preserved_delete", map[string]any{"bot_id": "venv"}).decode(t, &discarded)
	if !discarded.Deleted {
		t.Fatal("data_preserved_delete did not discard the backup")
	}
	if _, err := os.Stat(backup); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backup still on disk: %v", err)
	}
	res = mustCall(t, c, "data_preserved_delete", map[string]any{"bot_id": "venv"})
	discarded.Deleted = true
	res.decode(t, &discarded)
	if res.IsError || discarded.Deleted {
		t.Fatalf("discarding again: %+v", res)
	}
	mustCall(t, c, "workspace_get", map[string]any{"bot_id": "venv"}).decode(t, &ws)
	if ws.HasPreservedData {
		t.Fatal("workspace_get still reports a preserved /data")
	}
}
