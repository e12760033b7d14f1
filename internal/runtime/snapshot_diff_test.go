package runtime

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/berth-dev/berth/internal/testenv"
)

func (e *snapEnv) diff(from, to string, page Page) SnapshotDiff {
	e.t.Helper()
	d, err := e.r.DiffSnapshots(e.ctx, testenv.Snapshotter, from, to, page)
	if err != nil {
		e.t.Fatalf("diff %s to %s: %v", from, to, err)
	}
	return d
}

func formatChanges(cs []Change) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%s %s %s %d\n", c.Kind, c.Type, c.Path, c.Size)
	}
	return b.String()
}

func TestDiffSnapshots(t *testing.T) {
	e := newSnapEnv(t)
	e.mustExec("mkdir /work && echo a > /work/a && echo b > /work/b && ln -s /etc/passwd /work/link && echo x > /work/del")
	e.snapshot("ws-v1")
	e.mustExec("echo bb >> /work/b && rm /work/del && echo c > /work/c && mkdir /work/sub && echo d > /work/sub/d && ln -s /etc /work/sub/l")
	e.snapshot("ws-v2")

	want := "" +
		"modified file /work/b 5\n" +
		"added file /work/c 2\n" +
		"deleted file /work/del 2\n" +
		"added dir /work/sub 0\n" +
		"added file /work/sub/d 2\n" +
		"added symlink /work/sub/l 0\n"
	d := e.diff("ws-v1", "ws-v2", Page{})
	if got := formatChanges(d.Changes); got != want || d.Total != 6 || d.NextOffset != 0 || d.Truncated {
		t.Fatalf("diff v1 to v2: total %d next %d truncated %v\n%s\nwant\n%s", d.Total, d.NextOffset, d.Truncated, got, want)
	}

	// Paging walks the same sorted list.
	var paged []Change
	offset, pages := 0, 0
	for {
		p := e.diff("ws-v1", "ws-v2", Page{Offset: offset, Limit: 3})
		if p.Total != 6 || len(p.Changes) > 3 {
			t.Fatalf("page at %d: %+v", offset, p)
		}
		paged = append(paged, p.Changes...)
		pages++
		if p.NextOffset == 0 {
			break
		}
		if p.NextOffset != offset+3 {
			t.Fatalf("page at %d: next offset %d", offset, p.NextOffset)
		}
		offset = p.NextOffset
	}
	if pages != 2 || !reflect.DeepEqual(paged, d.Changes) {
		t.Fatalf("%d pages: %s", pages, formatChanges(paged))
	}
	if p := e.diff("ws-v1", "ws-v2", Page{Offset: 100}); len(p.Changes) != 0 || p.NextOffset != 0 || p.Total != 6 {
		t.Fatalf("page past the end: %+v", p)
	}

	// Past the cap, the result says it is incomplete.
	diffChangeCap = 4
	t.Cleanup(func() { diffChangeCap = DiffMaxChanges })
	d = e.diff("ws-v1", "ws-v2", Page{Limit: 3})
	diffChangeCap = DiffMaxChanges
	if d.Total != 4 || !d.Truncated || len(d.Changes) != 3 || d.NextOffset != 3 {
		t.Fatalf("truncated diff: %+v", d)
	}

	// The live writable layer, while the task runs.
	e.mustExec("rm -r /work/sub && echo e > /work/e")
	want = "" +
		"added file /work/e 2\n" +
		"deleted dir /work/sub 0\n"
	if got := formatChanges(e.diff("ws-v2", e.id, Page{}).Changes); got != want {
		t.Fatalf("diff v2 to live:\n%s\nwant\n%s", got, want)
	}
	// And backwards, from the live layer to a snapshot.
	want = "" +
		"deleted file /work/e 2\n" +
		"added dir /work/sub 0\n" +
		"added file /work/sub/d 2\n" +
		"added symlink /work/sub/l 0\n"
	if got := formatChanges(e.diff(e.id, "ws-v2", Page{}).Changes); got != want {
		t.Fatalf("diff live to v2:\n%s\nwant\n%s", got, want)
	}
	if d := e.diff("ws-v2", "ws-v2", Page{}); d.Total != 0 || len(d.Changes) != 0 {
		t.Fatalf("diff of a snapshot with itself: %+v", d)
	}

	if _, err := e.r.DiffSnapshots(e.ctx, testenv.Snapshotter, "ws-v1", "ws-nope", Page{}); !errdefs.IsNotFound(err) {
		t.Fatalf("diff to a missing snapshot: %v, want NotFound", err)
	}
	if _, err := e.r.DiffSnapshots(e.ctx, testenv.Snapshotter, "", "ws-v1", Page{}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("diff without from: %v, want InvalidArgument", err)
	}
	if _, err := e.r.DiffSnapshots(e.ctx, testenv.Snapshotter, "ws-v1", "ws-v2", Page{Offset: -1}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("negative offset: %v, want InvalidArgument", err)
	}
	e.noLeftovers()
	for _, k := range e.snapshotKeys() {
		if strings.Contains(k, ".diff-") {
			t.Errorf("diff view left: %s", k)
		}
	}
}
