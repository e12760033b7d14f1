package e2e

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// TestCreateIdempotent creates twice, the second time asking for other
// settings, which must be reported as not applied.
func TestCreateIdempotent(t *testing.T) {
	e := newEnv(t)
	c := e.stdioSDK()
	var first, second createOut
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "twice"}).decode(t, &first)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "twice", "memory": "128M", "env": map[string]string{"A": "b"}}).decode(t, &second)
	if !first.Created || second.Created {
		t.Fatalf("created flags: first %v, second %v", first.Created, second.Created)
	}
	if second.Workspace.HostPID != first.Workspace.HostPID || second.Workspace.Status != "running" {
		t.Fatalf("second create changed the workspace: %+v vs %+v", second.Workspace, first.Workspace)
	}
	joined := strings.Join(second.NotApplied, "\n")
	if !strings.Contains(joined, "memory 128M") || !strings.Contains(joined, "env A") {
		t.Fatalf("not_applied should name the memory limit and the env variable: %q", second.NotApplied)
	}
	res := mustCall(t, c, "workspace_create", map[string]any{"bot_id": "twice", "memory": "128M"})
	if !strings.Contains(res.Text, "NOT applied") {
		t.Fatalf("summary should say plainly what was not applied: %q", res.Text)
	}
}

// TestConcurrentCreates races creates for one bot from two clients over
// both transports: exactly one workspace comes out.
func TestConcurrentCreates(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	callers := []mcpClient{e.httpMcpgo(b), e.httpSDK(b), e.httpMcpgo(b), e.httpSDK(b)}
	results := make([]createOut, len(callers))
	var wg sync.WaitGroup
	for i, c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := c.call(ctx, "workspace_create", map[string]any{"bot_id": "racy"}, nil)
			if err != nil || res.IsError {
				t.Errorf("create %d: %v %+v", i, err, res)
				return
			}
			res.decode(t, &results[i])
		}()
	}
	wg.Wait()
	created := 0
	for _, r := range results {
		if r.Created {
			created++
		}
		if r.Workspace.HostPID != results[0].Workspace.HostPID {
			t.Fatalf("callers saw different workspaces: %+v", results)
		}
	}
	if created != 1 {
		t.Fatalf("%d creates said created, want 1", created)
	}
	var list struct {
		Workspaces []workspaceOut `json:"workspaces"`
	}
	mustCall(t, callers[0], "workspace_list", map[string]any{}).decode(t, &list)
	if len(list.Workspaces) != 1 {
		t.Fatalf("want one workspace, got %+v", list.Workspaces)
	}
}

// TestRestartReadopts kills berth and starts it again: a running workspace
// keeps running untouched, a stopped one stays stopped, and one whose
// processes died while berth was away is started again.
func TestRestartReadopts(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	c := e.httpMcpgo(b)
	var keep, crashed createOut
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "keep"}).decode(t, &keep)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "crashed"}).decode(t, &crashed)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "parked"})
	mustCall(t, c, "workspace_stop", map[string]any{"bot_id": "parked"})
	c.close()
	b.kill()

	// While berth is down, the "crashed" workspace dies.
	cl := testenv.Client(t)
	ctx := namespaces.WithNamespace(context.Background(), e.namespace)
	ctr, err := cl.LoadContainer(ctx, "crashed")
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	exited, _ := task.Wait(ctx)
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited

	b2 := e.serveHTTP()
	c2 := e.httpSDK(b2)
	var got workspaceOut
	mustCall(t, c2, "workspace_get", map[string]any{"bot_id": "keep"}).decode(t, &got)
	if got.Status != "running" || got.HostPID != keep.Workspace.HostPID || got.Agent == nil || got.Agent.Status != "ready" {
		t.Fatalf("running workspace not re-adopted as it was: %+v (was pid %d)", got, keep.Workspace.HostPID)
	}
	mustCall(t, c2, "workspace_get", map[string]any{"bot_id": "parked"}).decode(t, &got)
	if got.Status != "stopped" {
		t.Fatalf("stopped workspace should stay stopped: %+v", got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mustCall(t, c2, "workspace_get", map[string]any{"bot_id": "crashed"}).decode(t, &got)
		if got.Status == "running" && got.Agent != nil && got.Agent.Status == "ready" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workspace that should run was not restarted: %+v", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAgentIsInit checks that berth's agent is PID 1 and reaps orphans.
func TestAgentIsInit(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "init"})
	if cmdline := e.execIn(t, "init", "cat", "/proc/1/cmdline"); !strings.Contains(cmdline, "berth\x00agent") {
		t.Fatalf("PID 1 is %q, want berth agent", cmdline)
	}
	// The shell exits at once, orphaning sleep, which the kernel hands to
	// PID 1. When sleep exits, only PID 1 can reap it.
	pid := strings.TrimSpace(e.execIn(t, "init", "sh", "-c", "sleep 1 >/dev/null 2>&1 & echo $!"))
	status := e.execIn(t, "init", "cat", "/proc/"+pid+"/status")
	if !strings.Contains(status, "PPid:\t1\n") {
		t.Fatalf("orphan was not reparented to PID 1:\n%s", status)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := e.tryExec(t, "init", "test", "-e", "/proc/"+pid)
		if err != nil {
			break // gone: reaped, not a zombie
		}
		if time.Now().After(deadline) {
			state := e.execIn(t, "init", "sh", "-c", "cat /proc/"+pid+"/status || true")
			t.Fatalf("orphan %s was never reaped:\n%s", pid, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestStopForwardsSIGTERMAndKeepsFiles: stopping sends SIGTERM to the
// workspace's processes (through the agent), and files survive stop/start.
func TestStopForwardsSIGTERMAndKeepsFiles(t *testing.T) {
	e := newEnv(t)
	c := e.stdioSDK()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "graceful"})
	e.execIn(t, "graceful", "sh", "-c", "echo kept > /keep.txt")
	// A workload that records SIGTERM and exits; it runs until signalled.
	e.execIn(t, "graceful", "sh", "-c",
		`(trap 'echo term > /got-sigterm; exit 0' TERM; touch /trap-set; while :; do sleep 0.1; done) </dev/null >/dev/null 2>&1 &`)
	// Stop only once the trap is installed, however long that takes.
	waitFor(t, "the SIGTERM trap to be installed", func() bool {
		_, err := e.tryExec(t, "graceful", "test", "-e", "/trap-set")
		return err == nil
	})
	var ws workspaceOut
	mustCall(t, c, "workspace_stop", map[string]any{"bot_id": "graceful", "grace_seconds": 10}).decode(t, &ws)
	if ws.Status != "stopped" {
		t.Fatalf("stop: %+v", ws)
	}
	mustCall(t, c, "workspace_start", map[string]any{"bot_id": "graceful"}).decode(t, &ws)
	if got := e.execIn(t, "graceful", "cat", "/keep.txt", "/got-sigterm"); got != "kept\nterm\n" {
		t.Fatalf("after stop/start: %q (want the file kept and the SIGTERM recorded)", got)
	}
}

// TestListPaging pages through workspaces with cursors.
func TestListPaging(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	for _, bot := range []string{"page-c", "page-a", "page-b"} {
		mustCall(t, c, "workspace_create", map[string]any{"bot_id": bot})
	}
	type page struct {
		Workspaces []workspaceOut `json:"workspaces"`
		NextCursor string         `json:"next_cursor"`
	}
	var seen []string
	cursor := ""
	for range 5 {
		var p page
		mustCall(t, c, "workspace_list", map[string]any{"limit": 2, "cursor": cursor}).decode(t, &p)
		for _, ws := range p.Workspaces {
			seen = append(seen, ws.BotID)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	if strings.Join(seen, ",") != "page-a,page-b,page-c" {
		t.Fatalf("paged list: %v", seen)
	}
}
