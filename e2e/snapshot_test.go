package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

type snapOut struct {
	Version int    `json:"version"`
	Source  string `json:"source"`
	Name    string `json:"name"`
	Parent  int    `json:"parent_version"`
	Pause   int64  `json:"pause_ms"`
}

// TestSnapshots: snapshots keep processes and terminals running, rollback
// and rolling forward, lineage, and delete refusal and success.
func TestSnapshots(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "snap"})
	bg := execute(t, c, "snap", map[string]any{"command": "sleep 3600", "background": true})
	var term struct {
		ID  string `json:"id"`
		PID int    `json:"pid"`
	}
	mustCall(t, c, "terminal_open", map[string]any{"bot_id": "snap"}).decode(t, &term)
	e.execIn(t, "snap", "sh", "-c", "echo one > /data/one")

	var v1 snapOut
	var progress progressLog
	res, err := c.call(context.Background(), "snapshot_create", map[string]any{"bot_id": "snap", "name": "first"}, progress.add)
	if err != nil {
		t.Fatal(err)
	}
	res.decode(t, &v1)
	if v1.Version != 1 || v1.Source != "manual" || len(progress.all()) == 0 {
		t.Fatalf("snapshot: %+v, progress %v", v1, progress.all())
	}
	// The same processes (same PIDs) run after the snapshot.
	if out := e.execIn(t, "snap", "sh", "-c", fmt.Sprintf("cat /proc/%d/cmdline /proc/%d/cmdline | tr '\\0' ' '", bg.PID, term.PID)); !strings.Contains(out, "sleep 3600") {
		t.Fatalf("processes after the snapshot: %q", out)
	}
	send(t, c, "snap", term.ID, "echo still-$((40+2))\n", "still-42")
	var procs struct {
		Processes []struct {
			ID      string `json:"id"`
			Running bool   `json:"running"`
		} `json:"processes"`
	}
	mustCall(t, c, "process_list", map[string]any{"bot_id": "snap"}).decode(t, &procs)
	if len(procs.Processes) != 1 || procs.Processes[0].ID != bg.ProcessID || !procs.Processes[0].Running {
		t.Fatalf("background process after snapshot: %+v", procs)
	}

	e.execIn(t, "snap", "sh", "-c", "echo two > /data/two")
	var roll struct {
		PreRollback snapOut `json:"pre_rollback"`
		Workspace   struct {
			Status string `json:"status"`
			Agent  struct {
				Status string `json:"status"`
			} `json:"agent"`
		} `json:"workspace"`
	}
	mustCall(t, c, "snapshot_rollback", map[string]any{"bot_id": "snap", "version": 1}).decode(t, &roll)
	if roll.PreRollback.Version != 2 || roll.PreRollback.Source != "pre_rollback" || roll.Workspace.Agent.Status != "ready" {
		t.Fatalf("rollback: %+v", roll)
	}
	if got := e.execIn(t, "snap", "sh", "-c", "cat /data/one; test -e /data/two && echo two-still-there || true"); got != "one\n" {
		t.Fatalf("after rollback to 1: %q", got)
	}
	// Roll forward to the state before the rollback.
	mustCall(t, c, "snapshot_rollback", map[string]any{"bot_id": "snap", "version": 2}).decode(t, &roll)
	if got := e.execIn(t, "snap", "cat", "/data/one", "/data/two"); got != "one\ntwo\n" {
		t.Fatalf("after rolling forward to 2: %q", got)
	}

	var lineage struct {
		Image    string    `json:"image"`
		BasedOn  int       `json:"live_based_on"`
		Versions []snapOut `json:"versions"`
	}
	mustCall(t, c, "snapshot_list", map[string]any{"bot_id": "snap"}).decode(t, &lineage)
	if len(lineage.Versions) != 3 || lineage.BasedOn != 2 || lineage.Versions[2].Source != "pre_rollback" {
		t.Fatalf("lineage: %+v", lineage)
	}
	text, err := c.readResource(context.Background(), "berth://bots/snap/snapshots")
	var fromResource struct {
		Versions []snapOut `json:"versions"`
	}
	if err != nil || json.Unmarshal([]byte(text), &fromResource) != nil || len(fromResource.Versions) != 3 {
		t.Fatalf("snapshots resource: %v %s", err, text)
	}
	if text, err := c.readResource(context.Background(), "berth://bots/snap/snapshots/1"); err != nil || !strings.Contains(text, `"first"`) {
		t.Fatalf("snapshot resource: %v %s", err, text)
	}

	// Version 2 carries the live workspace: refused. Version 1: free.
	if res := mustCall(t, c, "snapshot_delete", map[string]any{"bot_id": "snap", "version": 2}); !res.IsError || !strings.Contains(res.Text, "live workspace") {
		t.Fatalf("deleting the live workspace's base: %+v", res)
	}
	if res := mustCall(t, c, "snapshot_rollback", map[string]any{"bot_id": "snap", "version": 99}); !res.IsError || !strings.Contains(res.Text, "no snapshot version 99") {
		t.Fatalf("unknown version: %+v", res)
	}
	mustCall(t, c, "snapshot_delete", map[string]any{"bot_id": "snap", "version": 3})
	mustCall(t, c, "snapshot_list", map[string]any{"bot_id": "snap"}).decode(t, &lineage)
	if len(lineage.Versions) != 3 {
		// pre_rollback of the second rollback is version 3 and nothing builds on it.
		if len(lineage.Versions) != 2 {
			t.Fatalf("after delete: %+v", lineage)
		}
	}

	// Deleting the workspace deletes its snapshots.
	mustCall(t, c, "workspace_delete", map[string]any{"bot_id": "snap"})
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "snap"})
	mustCall(t, c, "snapshot_list", map[string]any{"bot_id": "snap"}).decode(t, &lineage)
	if len(lineage.Versions) != 0 {
		t.Fatalf("snapshots outlived their workspace: %+v", lineage.Versions)
	}
}

// TestSnapshotDiffAndFork: diff contents between versions and against the
// live workspace, and a fork that is independent of its source.
func TestSnapshotDiffAndFork(t *testing.T) {
	e := newEnv(t)
	c := e.httpSDK(e.serveHTTP())
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "src", "env": map[string]string{"GREETING": "hello from src"}})
	e.execIn(t, "src", "sh", "-c", "echo a > /data/keep; echo b > /data/change; echo c > /data/remove")
	mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "src"})
	e.execIn(t, "src", "sh", "-c", "echo B >> /data/change; rm /data/remove; echo new > /data/added")
	mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "src"})
	e.execIn(t, "src", "sh", "-c", "echo live > /data/live")

	type diffOut struct {
		Changes []struct {
			Path string `json:"path"`
			Kind string `json:"kind"`
		} `json:"changes"`
		Total int `json:"total"`
	}
	changes := func(d diffOut) string {
		var parts []string
		for _, ch := range d.Changes {
			if strings.HasPrefix(ch.Path, "/data/") {
				parts = append(parts, ch.Kind+" "+ch.Path)
			}
		}
		return strings.Join(parts, ", ")
	}
	var d diffOut
	mustCall(t, c, "snapshot_diff", map[string]any{"bot_id": "src", "from_version": 1, "to_version": 2}).decode(t, &d)
	if got := changes(d); got != "added /data/added, modified /data/change, deleted /data/remove" {
		t.Fatalf("diff 1→2: %s", got)
	}
	mustCall(t, c, "snapshot_diff", map[string]any{"bot_id": "src", "from_version": 2}).decode(t, &d)
	if got := changes(d); got != "added /data/live" {
		t.Fatalf("diff 2→live: %s", got)
	}

	var fork workspaceOut
	mustCall(t, c, "workspace_fork", map[string]any{"bot_id": "src", "version": 1, "new_bot_id": "fork"}).decode(t, &fork)
	if fork.Status != "running" || fork.Agent == nil || fork.Agent.Status != "ready" {
		t.Fatalf("fork: %+v", fork)
	}
	if got := e.execIn(t, "fork", "sh", "-c", "cat /data/change /data/remove; ls /data"); got != "b\nc\nchange\nkeep\nremove\n" {
		t.Fatalf("fork starts from version 1: %q", got)
	}
	if got := e.execIn(t, "fork", "sh", "-c", "echo $GREETING"); got != "hello from src\n" {
		t.Errorf("the fork's env: %q, want the source's", got)
	}
	e.execIn(t, "fork", "sh", "-c", "echo fork-only > /data/forked")
	e.execIn(t, "src", "sh", "-c", "echo src-only > /data/sourced")
	if _, err := e.tryExec(t, "src", "test", "-e", "/data/forked"); err == nil {
		t.Fatal("a write in the fork shows in the source")
	}
	if _, err := e.tryExec(t, "fork", "test", "-e", "/data/sourced"); err == nil {
		t.Fatal("a write in the source shows in the fork")
	}
	if res := mustCall(t, c, "snapshot_delete", map[string]any{"bot_id": "src", "version": 1}); !res.IsError {
		t.Fatalf("deleting the version a fork builds on: %+v", res)
	}
	if res := mustCall(t, c, "workspace_fork", map[string]any{"bot_id": "src", "version": 1, "new_bot_id": "fork"}); !res.IsError || !strings.Contains(res.Text, "already has a workspace") {
		t.Fatalf("fork onto an existing bot: %+v", res)
	}
}
