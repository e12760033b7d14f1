package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestSnapshotLongLineage: a lineage of 300 versions, each a tiny change
// on the one before, rolls back to its first and last versions and forks;
// each comes back with exactly its files, and no workspace mounts more
// than 32 version layers (every 32nd version is stored compacted).
// snapshot_list pages the lineage.
func TestSnapshotLongLineage(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "long"})
	const n = 300
	start := time.Now()
	for i := 1; i <= n; i++ {
		execute(t, c, "long", map[string]any{"command": fmt.Sprintf("echo %d >> /data/log && touch /data/f-%d && rm -f /data/f-%d", i, i, i-1)})
		var v snapOut
		mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "long"}).decode(t, &v)
		if v.Version != i {
			t.Fatalf("snapshot %d got version %d", i, v.Version)
		}
	}
	t.Logf("%d versions in %v", n, time.Since(start))

	var lineage struct {
		Versions []struct {
			snapOut
			Compacted bool  `json:"compacted"`
			Disk      int64 `json:"disk_bytes"`
		} `json:"versions"`
		Disk  int64 `json:"disk_bytes"`
		Total int   `json:"total_versions"`
		Next  int   `json:"next_offset"`
	}
	// Pages of 100 by default; one page of up to 1000 on request.
	for _, page := range []struct{ offset, limit, want, next int }{{0, 0, 100, 100}, {200, 0, 100, 0}, {250, 30, 30, 280}, {0, 1000, n, 0}} {
		lineage.Versions, lineage.Next = nil, 0 // decoding into old entries would keep their omitted fields
		mustCall(t, c, "snapshot_list", map[string]any{"bot_id": "long", "offset": page.offset, "limit": page.limit}).decode(t, &lineage)
		if len(lineage.Versions) != page.want || lineage.Versions[0].Version != page.offset+1 || lineage.Total != n || lineage.Next != page.next {
			t.Fatalf("snapshot_list offset %d limit %d: %d versions from %d, total %d, next %d; want %d, total %d, next %d",
				page.offset, page.limit, len(lineage.Versions), lineage.Versions[0].Version, lineage.Total, lineage.Next, page.want, n, page.next)
		}
	}
	var compacted []int
	var total int64
	for i, v := range lineage.Versions {
		if v.Version != i+1 || (i > 0 && v.Parent != i) {
			t.Fatalf("version %d at %d with parent %d: the lineage must keep numbers and parents", v.Version, i+1, v.Parent)
		}
		if v.Compacted {
			compacted = append(compacted, v.Version)
		}
		total += v.Disk
	}
	if want := []int{33, 65, 97, 129, 161, 193, 225, 257, 289}; fmt.Sprint(compacted) != fmt.Sprint(want) {
		t.Fatalf("compacted versions %v, want %v", compacted, want)
	}
	if lineage.Disk != total || total <= 0 {
		t.Fatalf("lineage disk_bytes %d, the versions' sum %d", lineage.Disk, total)
	}

	// state is what version v holds: its file and the log so far.
	state := func(v int) string {
		var b strings.Builder
		fmt.Fprintf(&b, "f-%d\nlog\n", v)
		for i := 1; i <= v; i++ {
			fmt.Fprintf(&b, "%d\n", i)
		}
		return b.String()
	}
	check := func(bot string, v int) {
		t.Helper()
		if got := execute(t, c, bot, map[string]any{"command": "ls /data && cat /data/log"}).Stdout; got != state(v) {
			t.Fatalf("%s on version %d has\n%s\nwant\n%s", bot, v, got, state(v))
		}
		// The root filesystem's overlay: version layers, the image's one.
		mi := execute(t, c, bot, map[string]any{"command": "cat /proc/self/mountinfo"}).Stdout
		if lowers := rootLowerDirs(t, mi); lowers > 32+1 {
			t.Fatalf("%s on version %d mounts %d lower directories", bot, v, lowers)
		}
	}
	for _, v := range []int{1, n, 32, 33} {
		res := mustCall(t, c, "snapshot_rollback", map[string]any{"bot_id": "long", "version": v})
		if res.IsError {
			t.Fatalf("rollback to %d: %s", v, res.Text)
		}
		check("long", v)
	}
	for _, v := range []int{1, n} {
		fork := fmt.Sprintf("long-fork-%d", v)
		mustCall(t, c, "workspace_fork", map[string]any{"bot_id": "long", "version": v, "new_bot_id": fork})
		check(fork, v)
	}
}

// rootLowerDirs counts the lower directories of the overlay mounted at /
// in a /proc/self/mountinfo.
func rootLowerDirs(t *testing.T, mountinfo string) int {
	t.Helper()
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != "/" || !strings.Contains(line, " - overlay ") {
			continue
		}
		for _, o := range strings.Split(f[len(f)-1], ",") {
			if dirs, ok := strings.CutPrefix(o, "lowerdir="); ok {
				return len(strings.Split(dirs, ":"))
			}
		}
	}
	t.Fatalf("no overlay at / in\n%s", mountinfo)
	return 0
}
