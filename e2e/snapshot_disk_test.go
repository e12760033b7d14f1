package e2e

import (
	"strings"
	"testing"
)

// TestSnapshotDiskAccounted: snapshot_list shows the disk each version
// takes and the lineage's total; a version that a later one is stored on
// cannot be deleted (and nothing changes); deleting versions returns their
// space to containerd's root once its garbage collector ran.
func TestSnapshotDiskAccounted(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "disk"})
	for _, script := range []string{
		"head -c 8388608 /dev/urandom > /data/a",
		"head -c 8388608 /dev/urandom > /data/b",
		"echo tiny > /data/c",
	} {
		execute(t, c, "disk", map[string]any{"command": script})
		mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "disk"})
	}
	type lineage struct {
		Versions []struct {
			Version int   `json:"version"`
			Disk    int64 `json:"disk_bytes"`
		} `json:"versions"`
		Disk int64 `json:"disk_bytes"`
	}
	list := func() lineage {
		var l lineage
		mustCall(t, c, "snapshot_list", map[string]any{"bot_id": "disk"}).decode(t, &l)
		return l
	}
	l := list()
	if len(l.Versions) != 3 {
		t.Fatalf("versions %+v", l.Versions)
	}
	v1, v2, v3 := l.Versions[0].Disk, l.Versions[1].Disk, l.Versions[2].Disk
	t.Logf("disk: v1 %d, v2 %d, v3 %d, lineage %d bytes", v1, v2, v3, l.Disk)
	if v1 < 8<<20 || v2 < 8<<20 || v2 > 9<<20 || v3 > 1<<20 || l.Disk != v1+v2+v3 {
		t.Fatalf("disk: v1 %d, v2 %d, v3 %d, lineage %d bytes: want 8 MiB, 8 MiB, a few KB and their sum", v1, v2, v3, l.Disk)
	}

	res, err := c.call(t.Context(), "snapshot_delete", map[string]any{"bot_id": "disk", "version": 2}, nil)
	if err != nil || !res.IsError || !strings.Contains(res.Text, "stored as changes on version 2") {
		t.Fatalf("delete version 2 under version 3: %v %+v", err, res)
	}
	if got := list(); len(got.Versions) != 3 || got.Disk != l.Disk {
		t.Fatalf("a refused delete changed the lineage: %+v", got)
	}

	before := e.rootUsage(t)
	for _, v := range []int{3, 2} {
		if res := mustCall(t, c, "snapshot_delete", map[string]any{"bot_id": "disk", "version": v}); res.IsError {
			t.Fatalf("delete version %d: %s", v, res.Text)
		}
	}
	after := e.rootUsage(t)
	t.Logf("containerd root: %d bytes before deleting versions 3 and 2 (%d bytes listed), %d after: %d freed", before, v2+v3, after, before-after)
	if before-after < v2 {
		t.Fatalf("deleting versions of %d bytes freed %d", v2+v3, before-after)
	}
	if got := list(); len(got.Versions) != 1 || got.Disk != v1 {
		t.Fatalf("after deleting versions 3 and 2: %+v", got)
	}
}
