package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// TestSnapshotCrashSafety kills berth with SIGKILL at random points of
// snapshots, rollbacks and forks, again and again. After each restart the
// workspace runs, its agent answers, every completed version is intact (a
// rollback to it works, also after containerd's garbage collection) and
// new snapshots work.
func TestSnapshotCrashSafety(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	c := e.httpMcpgo(b)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "crashy"})
	e.execIn(t, "crashy", "sh", "-c", "head -c 20000000 /dev/urandom > /data/payload")
	rng := rand.New(rand.NewPCG(1, 2))
	var forks []string
	for round := range 9 {
		tool, args := "snapshot_create", map[string]any{"bot_id": "crashy", "name": "round"}
		if round%3 != 0 {
			var l struct {
				Versions []snapOut `json:"versions"`
			}
			mustCall(t, c, "snapshot_list", map[string]any{"bot_id": "crashy"}).decode(t, &l)
			if len(l.Versions) > 0 {
				v := l.Versions[rng.IntN(len(l.Versions))].Version
				tool, args = "snapshot_rollback", map[string]any{"bot_id": "crashy", "version": v}
				if round%3 == 2 {
					fork := fmt.Sprintf("fork-%d", round)
					forks = append(forks, fork)
					tool, args = "workspace_fork", map[string]any{"bot_id": "crashy", "version": v, "new_bot_id": fork}
				}
			}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c.call(ctx, tool, args, nil) // berth dies under it
		}()
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		b.kill()
		<-done
		c.close()

		b = e.serveHTTP()
		c = e.httpSDK(b)
		e.waitHealthy(t, c, "crashy")
		var l struct {
			Versions []snapOut `json:"versions"`
		}
		mustCall(t, c, "snapshot_list", map[string]any{"bot_id": "crashy"}).decode(t, &l)
		t.Logf("round %d: %s killed; %d version(s) after restart", round, tool, len(l.Versions))
		if res := mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "crashy"}); res.IsError {
			t.Fatalf("round %d: snapshot after restart: %s", round, res.Text)
		}
	}
	// A fork cut short is either absent or a whole, running workspace.
	for _, fork := range forks {
		if res := mustCall(t, c, "workspace_get", map[string]any{"bot_id": fork}); !res.IsError {
			e.waitHealthy(t, c, fork)
		} else if !strings.Contains(res.Text, "has no workspace") {
			t.Fatalf("fork %s: %s", fork, res.Text)
		}
	}
	// Every completed version survives containerd's garbage collection
	// and can be rolled back to.
	cl := testenv.Client(t)
	ctx := namespaces.WithNamespace(context.Background(), e.namespace)
	// Reconcile at start removed the leases of interrupted work.
	if left, err := cl.LeasesService().List(ctx); err != nil || len(left) != 0 {
		t.Fatalf("leases left after reconcile: %v %v", left, err)
	}
	l, err := cl.LeasesService().Create(ctx, leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.LeasesService().Delete(ctx, l, leases.SynchronousDelete); err != nil {
		t.Fatal(err)
	}
	var lineage struct {
		Versions []snapOut `json:"versions"`
	}
	mustCall(t, c, "snapshot_list", map[string]any{"bot_id": "crashy"}).decode(t, &lineage)
	for _, v := range lineage.Versions {
		res := mustCall(t, c, "snapshot_rollback", map[string]any{"bot_id": "crashy", "version": v.Version})
		if res.IsError {
			t.Fatalf("rollback to version %d after GC: %s", v.Version, res.Text)
		}
		if out := e.execIn(t, "crashy", "sh", "-c", "wc -c < /data/payload"); strings.TrimSpace(out) != "20000000" {
			t.Fatalf("version %d lost /data/payload: %q", v.Version, out)
		}
	}
}

// waitHealthy waits until the bot's workspace runs with a ready agent.
func (e *env) waitHealthy(t *testing.T, c mcpClient, bot string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var ws workspaceOut
		res := mustCall(t, c, "workspace_get", map[string]any{"bot_id": bot})
		if !res.IsError {
			res.decode(t, &ws)
			if ws.Status == "running" && ws.Agent != nil && ws.Agent.Status == "ready" {
				return
			}
		}
		if time.Now().After(deadline) {
			out, _ := exec.Command("ctr", "--address", e.address, "-n", e.namespace, "task", "ls").CombinedOutput()
			out2, _ := exec.Command("sh", "-c", "ls -la /run/containerd/io.containerd.runtime.v2.task/"+e.namespace+"/ /tmp/bm/state/io.containerd.runtime.v2.task/"+e.namespace+"/ 2>&1; ps aux | grep shim | grep -v grep | head").CombinedOutput()
			t.Fatalf("workspace %s did not come back: %s\n%s\n%s", bot, res.Text, out, out2)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
