package runtime

import (
	"fmt"
	"testing"

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
