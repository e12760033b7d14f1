package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// TestSnapshotStorageIncremental is issue 13's storage test: a workspace
// holds 200 MB of earlier writes, then 20 versions each change a few KB;
// together they add less than 20 MB to containerd's root on disk (after
// garbage collection), and every version rolls back to exactly its files.
func TestSnapshotStorageIncremental(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "store"})
	e.execIn(t, "store", "sh", "-c", "head -c 209715200 /dev/urandom > /data/earlier && md5sum < /data/earlier > /data/earlier.md5")
	var first snapOut
	mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "store"}).decode(t, &first)
	before := e.rootUsage(t)

	const n = 20
	want := map[int]string{first.Version: ""}
	for i := range n {
		// A few KB each: a new file, a changed one, one removed.
		e.execIn(t, "store", "sh", "-c", fmt.Sprintf(
			"head -c 4096 /dev/urandom > /data/f-%d; echo %d >> /data/log; rm -f /data/f-%d", i, i, i-2))
		var v snapOut
		mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "store"}).decode(t, &v)
		want[v.Version] = e.execIn(t, "store", "sh", "-c", "cd /data && ls && cat log && md5sum f-*")
	}
	after := e.rootUsage(t)
	t.Logf("containerd root: %d bytes before the %d versions, %d after", before, n, after)
	if after-before >= 20<<20 {
		t.Fatalf("%d versions of a few KB each added %d bytes to containerd's root", n, after-before)
	}

	check := "md5sum < /data/earlier | cmp - /data/earlier.md5 && cd /data && ls && cat log && md5sum f-*"
	for v := 1; v <= n+1; v++ {
		res := mustCall(t, c, "snapshot_rollback", map[string]any{"bot_id": "store", "version": v})
		if res.IsError {
			t.Fatalf("rollback to %d: %s", v, res.Text)
		}
		got, _ := e.tryExec(t, "store", "sh", "-c", check+" 2>/dev/null")
		if v == first.Version {
			got, _ = e.tryExec(t, "store", "sh", "-c", "md5sum < /data/earlier | cmp - /data/earlier.md5 && ls /data")
			if got != "earlier\nearlier.md5\n" {
				t.Fatalf("version %d: %q", v, got)
			}
			continue
		}
		if got != want[v] {
			t.Fatalf("version %d rolled back to\n%s\nwant\n%s", v, got, want[v])
		}
	}
}

// rootUsage is the disk space containerd's root takes, after its garbage
// collector ran.
func (e *env) rootUsage(t *testing.T) int64 {
	t.Helper()
	cl := testenv.Client(t)
	ctx := namespaces.WithNamespace(context.Background(), e.namespace)
	l, err := cl.LeasesService().Create(ctx, leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.LeasesService().Delete(ctx, l, leases.SynchronousDelete); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(filepath.Dir(e.address), "root")
	seen := map[uint64]bool{}
	var total int64
	err = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // removed while we walked
			}
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		total += st.Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// treeScript lists /data/t with what a version must keep of each entry:
// type, permissions, owner, mtime, symlink target, content, and the link
// count of what is not a directory (overlayfs reports 1 for a directory
// merged from several layers).
const treeScript = `cd /data/t && find . | sort | while read f; do
  if [ -d "$f" ] && [ ! -L "$f" ]; then stat -c '%n %F %a %u:%g %Y' "$f"; else stat -c '%n %F %a %u:%g %h %Y' "$f"; fi
  if [ -L "$f" ]; then readlink "$f"; elif [ -f "$f" ]; then md5sum < "$f"; fi
done`

// TestSnapshotFidelity: deletions, renames, permission and ownership
// changes, hard links, symlinks and opaque directories between versions
// come back exactly on rollback and fork.
func TestSnapshotFidelity(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "fid"})
	trees := map[int]string{}
	snap := func(script string) int {
		t.Helper()
		e.execIn(t, "fid", "sh", "-c", "set -e; "+script)
		var v snapOut
		mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "fid"}).decode(t, &v)
		trees[v.Version] = e.execIn(t, "fid", "sh", "-c", treeScript)
		return v.Version
	}
	v1 := snap(`mkdir -p /data/t/dir/sub && cd /data/t && echo a > a && echo b > b && echo x > dir/x &&
		echo y > dir/sub/y && ln a a.hard && ln -s a a.sym && ln -s ../missing dangling && mkfifo fifo &&
		chmod 640 b && chown 1000:1001 dir/x`)
	v2 := snap(`cd /data/t && rm b && mv a a.moved && chmod 4755 a.moved && chown 7:8 dir &&
		ln dir/x dir/x.hard && rm a.sym && ln -s a.moved a.sym && echo more >> dir/x && rm -r dir/sub &&
		mkdir newdir && echo n > newdir/n`)
	v3 := snap(`cd /data/t && rm -r newdir && echo n2 > newdir && rm dir/x.hard && chmod 700 dir`)

	// Roll back to v1 so that /data/t/dir comes from a lower layer; then
	// removing and recreating it makes it opaque in the upper directory.
	mustCall(t, c, "snapshot_rollback", map[string]any{"bot_id": "fid", "version": v1})
	v5 := snap(`cd /data/t && rm -r dir && mkdir dir && echo z > dir/z`) // v4 is the state before the rollback
	v6 := snap(`cd /data/t && echo w > dir/w && rm a.hard`)

	// Each version builds on the previous one of the same writable layer:
	// the layers tested here hold only what changed.
	var lineage struct {
		Versions []snapOut `json:"versions"`
	}
	mustCall(t, c, "snapshot_list", map[string]any{"bot_id": "fid"}).decode(t, &lineage)
	parents := map[int]int{}
	for _, v := range lineage.Versions {
		parents[v.Version] = v.Parent
	}
	if parents[v2] != v1 || parents[v3] != v2 || parents[v5] != v1 || parents[v6] != v5 {
		t.Fatalf("parents %v: want %d on %d, %d on %d, %d on %d, %d on %d", parents, v2, v1, v3, v2, v5, v1, v6, v5)
	}
	for _, v := range []int{v1, v2, v3, v5, v6} {
		res := mustCall(t, c, "snapshot_rollback", map[string]any{"bot_id": "fid", "version": v})
		if res.IsError {
			t.Fatalf("rollback to %d: %s", v, res.Text)
		}
		if got := e.execIn(t, "fid", "sh", "-c", treeScript); got != trees[v] {
			t.Fatalf("version %d rolled back to\n%s\nwant\n%s", v, got, trees[v])
		}
	}
	if strings.Contains(trees[v6], "./dir/x") || !strings.Contains(trees[v6], "./dir/w") {
		t.Fatalf("version %d does not show the opaque directory: %s", v6, trees[v6])
	}
	for _, v := range []int{v3, v6} {
		fork := fmt.Sprintf("fork-%d", v)
		mustCall(t, c, "workspace_fork", map[string]any{"bot_id": "fid", "version": v, "new_bot_id": fork})
		if got := e.execIn(t, fork, "sh", "-c", treeScript); got != trees[v] {
			t.Fatalf("fork of version %d:\n%s\nwant\n%s", v, got, trees[v])
		}
	}
}
