package runtime

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/berth-dev/berth/internal/testenv"
)

func TestCreateContainerFromSnapshot(t *testing.T) {
	e := newSnapEnv(t)
	e.mustExec("echo base > /f")
	e.snapshot("ws-v1")
	src, err := e.r.Container(e.ctx, e.id)
	if err != nil {
		t.Fatal(err)
	}

	spec := ContainerSpec{
		ID: "fork", Image: src.Image, Snapshotter: testenv.Snapshotter,
		Labels: map[string]string{"test/bot": "fork"}, Hostname: "fork",
		Args: []string{"sleep", "3600"},
	}
	if err := e.r.CreateContainerFromSnapshot(e.ctx, spec, "ws-nope"); !errdefs.IsNotFound(err) {
		t.Fatalf("fork from a missing snapshot: %v, want NotFound", err)
	}
	if err := e.r.CreateContainerFromSnapshot(e.ctx, spec, e.id); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("fork from an active snapshot: %v, want InvalidArgument", err)
	}
	if _, err := e.r.Container(e.ctx, "fork"); !errdefs.IsNotFound(err) {
		t.Fatalf("failed forks left a container: %v", err)
	}

	if err := e.r.CreateContainerFromSnapshot(e.ctx, spec, "ws-v1"); err != nil {
		t.Fatal(err)
	}
	f := &snapEnv{t: t, r: e.r, c: e.c, ctx: e.ctx, id: "fork", log: filepath.Join(t.TempDir(), "fork.log")}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), time.Minute)
		defer cancel()
		if err := e.r.DeleteContainer(ctx, "fork"); err != nil && !errdefs.IsNotFound(err) {
			t.Logf("cleanup fork: %v", err)
		}
	})
	if err := e.r.CreateContainerFromSnapshot(e.ctx, spec, "ws-v1"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second fork with the same ID: %v, want AlreadyExists", err)
	}
	if p := f.activeParent(); p != "ws-v1" {
		t.Fatalf("fork's writable layer on %q, want ws-v1", p)
	}
	got, err := e.r.Container(e.ctx, "fork")
	if err != nil || got.Image != src.Image || got.Labels["test/bot"] != "fork" {
		t.Fatalf("fork: %+v, %v", got, err)
	}
	f.start()

	if out := f.mustExec("cat /f; hostname"); out != "base\nfork\n" {
		t.Fatalf("fork sees %q", out)
	}
	f.mustExec("echo fork > /f && echo only > /g")
	e.mustExec("echo src > /f && echo mine > /h")
	if out := e.mustExec("cat /f; test -e /g && echo g; cat /h"); out != "src\nmine\n" {
		t.Fatalf("source sees %q", out)
	}
	if out := f.mustExec("cat /f /g; test -e /h && echo h; true"); out != "fork\nonly\n" {
		t.Fatalf("fork sees %q", out)
	}

	// The snapshot is the base of the fork's writable layer.
	if err := e.r.DeleteSnapshot(e.ctx, testenv.Snapshotter, "ws-v1"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("delete the fork's base: %v, want FailedPrecondition", err)
	}
	// A snapshot of the fork is incremental on its base.
	fv := f.snapshot("fork-v1")
	if fv.Parent != "ws-v1" {
		t.Fatalf("fork snapshot on %q, want ws-v1", fv.Parent)
	}
	d, err := e.r.DiffSnapshots(e.ctx, testenv.Snapshotter, "ws-v1", "fork-v1", Page{})
	if err != nil {
		t.Fatal(err)
	}
	if got := formatChanges(d.Changes); got != "modified file /f 5\nadded file /g 5\n" {
		t.Fatalf("fork's changes:\n%s", got)
	}

	f.stop()
	if err := e.r.DeleteContainer(e.ctx, "fork"); err != nil {
		t.Fatal(err)
	}
	if err := e.r.DeleteSnapshot(e.ctx, testenv.Snapshotter, "fork-v1"); err != nil {
		t.Fatal(err)
	}
	if err := e.r.DeleteSnapshot(e.ctx, testenv.Snapshotter, "ws-v1"); err != nil {
		t.Fatalf("delete ws-v1 once the fork is gone: %v", err)
	}
	e.noLeftovers()
}
