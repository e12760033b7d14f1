package runtime

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestSnapshotCompaction: with at most 3 versions in a chain, every third
// version is stored on the image with its whole content; each version,
// compacted or not, rolls back to exactly its files, sizes and bases stay
// those of its changes, and the versions before a compacted one can be
// deleted without it losing a file.
func TestSnapshotCompaction(t *testing.T) {
	old := maxChainDepth
	maxChainDepth = 3
	t.Cleanup(func() { maxChainDepth = old })
	e := newSnapEnv(t)
	imageTop := e.activeParent()
	sn := e.c.SnapshotService(testenv.Snapshotter)

	const n = 8
	want := map[string]string{}
	infos := map[string]SnapshotInfo{}
	state := "cd / && ls /d && cat /d/*"
	e.mustExec("mkdir /d && dd if=/dev/urandom of=/d/big bs=1k count=512 2>/dev/null && md5sum /d/big > /sum")
	for i := 1; i <= n; i++ {
		e.mustExec(fmt.Sprintf("echo %d > /d/f%d && rm -f /d/f%d", i, i, i-2))
		key := fmt.Sprintf("ws-v%d", i)
		infos[key] = e.snapshot(key)
		want[key] = e.mustExec(state)
	}
	for i := 1; i <= n; i++ {
		key := fmt.Sprintf("ws-v%d", i)
		in := infos[key]
		depth, root, err := e.r.chainDepth(e.ctx, sn, key)
		if err != nil {
			t.Fatal(err)
		}
		wantDepth, compacted := (i-1)%3+1, i > 1 && (i-1)%3 == 0
		if depth != wantDepth || root != imageTop {
			t.Errorf("%s: stored %d versions deep on %q, want %d on the image's top layer %q", key, depth, root, wantDepth, imageTop)
		}
		if got := in.Labels[LabelSnapshotCompactedFrom] != ""; got != compacted {
			t.Errorf("%s: compacted %v, want %v", key, got, compacted)
		}
		// Its changes are still those since the version before.
		if i > 1 && (in.Base() != fmt.Sprintf("ws-v%d", i-1) || in.LayerSize >= 512<<10) {
			t.Errorf("%s: base %q, layer %d bytes: want the few bytes changed since ws-v%d", key, in.Base(), in.LayerSize, i-1)
		}
		if compacted && in.Size < 512<<10 {
			t.Errorf("%s: compacted but takes %d bytes, less than the content below it", key, in.Size)
		}
	}

	// The versions below the compacted ws-v7 go, newest first; it keeps
	// its files.
	for i := 6; i >= 4; i-- {
		if err := e.r.DeleteSnapshot(e.ctx, testenv.Snapshotter, fmt.Sprintf("ws-v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	e.stop()
	for _, key := range []string{"ws-v1", "ws-v3", "ws-v7", "ws-v8"} {
		if err := e.r.RollbackContainer(e.ctx, e.id, key); err != nil {
			t.Fatal(err)
		}
		e.start()
		if got := e.mustExec(state + " && md5sum -c /sum >/dev/null"); got != want[key] {
			t.Errorf("%s rolled back to\n%s\nwant\n%s", key, got, want[key])
		}
		e.stop()
	}
	e.noLeftovers()
}

// TestSnapshotCompactionCancelled: a snapshot cancelled while its
// compacted content is being made leaves no snapshot, lease or ingest
// behind, and the next one compacts and keeps every file.
func TestSnapshotCompactionCancelled(t *testing.T) {
	old := maxChainDepth
	maxChainDepth = 1
	t.Cleanup(func() { maxChainDepth = old })
	e := newSnapEnv(t)
	e.mustExec("dd if=/dev/urandom of=/big bs=1M count=64 2>/dev/null && md5sum /big > /sum")
	e.snapshot("ws-v1")
	e.mustExec("echo two > /two")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sawFlat := make(chan bool, 1)
	go func() {
		defer cancel()
		sn := e.c.SnapshotService(testenv.Snapshotter)
		for ctx.Err() == nil {
			found := false
			_ = sn.Walk(e.ctx, func(context.Context, snapshots.Info) error {
				found = true
				return nil
			}, `name~="flat-"`)
			if found {
				sawFlat <- true
				return
			}
			time.Sleep(time.Millisecond)
		}
		sawFlat <- false
	}()
	_, _, err := e.r.SnapshotContainer(ctx, e.id, "ws-v2", map[string]string{"test/bot": e.id})
	cancel() // also ends the watch should it have missed the compaction
	t.Logf("snapshot cancelled while compacting: %v", err)
	if !<-sawFlat {
		t.Fatal("the compacted snapshot was never seen being made")
	}
	if err == nil {
		t.Fatal("a snapshot cancelled while compacting succeeded")
	}
	e.gc()
	if keys := e.snapshotKeys(`name~="ws-v2"`); len(keys) > 0 {
		t.Fatalf("snapshots left: %v", keys)
	}
	if st, err := e.c.ContentStore().ListStatuses(e.ctx); err != nil || len(st) > 0 {
		t.Fatalf("ingests left: %v %+v", err, st)
	}
	e.noLeftovers()

	if v2 := e.snapshot("ws-v2"); v2.Labels[LabelSnapshotCompactedFrom] != "ws-v1" {
		t.Fatalf("ws-v2 after the cancelled one: labels %v, want compacted from ws-v1", v2.Labels)
	}
	e.stop()
	if err := e.r.RollbackContainer(e.ctx, e.id, "ws-v2"); err != nil {
		t.Fatal(err)
	}
	e.start()
	if got := e.mustExec("cat /two && md5sum -c /sum"); got != "two\n/big: OK\n" {
		t.Fatalf("ws-v2: %q", got)
	}
	e.noLeftovers()
}
