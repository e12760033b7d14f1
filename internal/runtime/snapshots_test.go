package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/berth-dev/berth/internal/testenv"
)

// snapEnv is one running busybox container in a private namespace of the
// test containerd, with the runtime and a raw client to check its claims.
type snapEnv struct {
	t   *testing.T
	r   *Containerd
	c   *containerd.Client
	ctx context.Context // in the test namespace, for the raw client
	id  string
	log string
}

func newSnapEnv(t *testing.T) *snapEnv {
	t.Helper()
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	addr := testenv.ContainerdAddress(t)
	img := testenv.ImportArchive(t, addr, ns, testenv.BusyboxArchive(t))
	r, err := NewContainerd(Options{Address: addr, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), 2*time.Minute)
	t.Cleanup(cancel)
	e := &snapEnv{t: t, r: r, c: c, ctx: ctx, id: "ws", log: filepath.Join(t.TempDir(), "ws.log")}
	t.Cleanup(e.cleanup)
	err = r.CreateContainer(ctx, ContainerSpec{
		ID: e.id, Image: img, Snapshotter: testenv.Snapshotter,
		Labels: map[string]string{"test/bot": e.id}, Hostname: e.id,
		Args: []string{"sleep", "3600"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.start()
	return e
}

func (e *snapEnv) start() uint32 {
	e.t.Helper()
	pid, err := e.r.StartTask(e.ctx, e.id, e.log)
	if err != nil {
		e.t.Fatal(err)
	}
	return pid
}

func (e *snapEnv) stop() {
	e.t.Helper()
	if err := e.r.StopTask(e.ctx, e.id, time.Second); err != nil {
		e.t.Fatal(err)
	}
}

// cleanup empties the namespace before testenv removes it, collecting
// garbage synchronously: testenv's removal loop takes a snapshot that
// containerd's background collector removes under it for a failure.
func (e *snapEnv) cleanup() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), time.Minute)
	defer cancel()
	if err := e.r.DeleteContainer(ctx, e.id); err != nil && !errdefs.IsNotFound(err) {
		e.t.Logf("cleanup: %v", err)
	}
	is := e.c.ImageService()
	imgs, _ := is.List(ctx)
	for _, img := range imgs {
		_ = is.Delete(ctx, img.Name)
	}
	sn := e.c.SnapshotService(testenv.Snapshotter)
	for range 10 {
		var keys []string
		_ = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			keys = append(keys, info.Name)
			return nil
		})
		if len(keys) == 0 {
			break
		}
		for _, k := range keys {
			_ = sn.Remove(ctx, k)
		}
	}
	lm := e.c.LeasesService()
	if l, err := lm.Create(ctx, leases.WithRandomID()); err == nil {
		_ = lm.Delete(ctx, l, leases.SynchronousDelete)
	}
}

var execSeq atomic.Int64

// exec runs sh -c script in the container with containerd directly.
func (e *snapEnv) exec(script string) (string, error) {
	e.t.Helper()
	ctr, err := e.c.LoadContainer(e.ctx, e.id)
	if err != nil {
		return "", err
	}
	task, err := ctr.Task(e.ctx, nil)
	if err != nil {
		return "", err
	}
	spec, err := ctr.Spec(e.ctx)
	if err != nil {
		return "", err
	}
	pspec := *spec.Process
	pspec.Args = []string{"sh", "-c", script}
	pspec.Terminal = false
	logPath := filepath.Join(e.t.TempDir(), "exec.log")
	proc, err := task.Exec(e.ctx, fmt.Sprintf("x%d", execSeq.Add(1)), &pspec, cio.LogFile(logPath))
	if err != nil {
		return "", err
	}
	status, err := proc.Wait(e.ctx)
	if err != nil {
		return "", err
	}
	if err := proc.Start(e.ctx); err != nil {
		proc.Delete(e.ctx)
		return "", err
	}
	st := <-status
	if _, err := proc.Delete(e.ctx); err != nil {
		return "", err
	}
	out, _ := os.ReadFile(logPath)
	if st.ExitCode() != 0 {
		return string(out), fmt.Errorf("exit code %d", st.ExitCode())
	}
	return string(out), nil
}

func (e *snapEnv) mustExec(script string) string {
	e.t.Helper()
	out, err := e.exec(script)
	if err != nil {
		e.t.Fatalf("exec %q: %v (output %q)", script, err, out)
	}
	return out
}

func (e *snapEnv) snapshot(key string) SnapshotInfo {
	e.t.Helper()
	before, err := e.r.Container(e.ctx, e.id)
	if err != nil {
		e.t.Fatal(err)
	}
	start := time.Now()
	info, paused, err := e.r.SnapshotContainer(e.ctx, e.id, key, map[string]string{"test/bot": e.id})
	if err != nil {
		e.t.Fatalf("snapshot %s: %v", key, err)
	}
	e.t.Logf("snapshot %s: layer %d bytes, usage %d bytes, paused %v, took %v", key, info.LayerSize, info.Size, paused, time.Since(start))
	after, err := e.r.Container(e.ctx, e.id)
	if err != nil {
		e.t.Fatal(err)
	}
	if before.Status == TaskRunning {
		if paused <= 0 {
			e.t.Errorf("snapshot of a running task reports no pause")
		}
		if after.Status != TaskRunning || after.PID != before.PID {
			e.t.Fatalf("task after snapshot: %s pid %d, want running pid %d", after.Status, after.PID, before.PID)
		}
	}
	if _, ok := after.Labels[LabelSnapshotPaused]; ok {
		e.t.Errorf("pause label left on the container")
	}
	if info.Key != key || info.LayerSize <= 0 || info.Labels["test/bot"] != e.id {
		e.t.Fatalf("snapshot info %+v", info)
	}
	return info
}

// activeParent is the parent of the container's writable layer.
func (e *snapEnv) activeParent() string {
	e.t.Helper()
	ctr, err := e.c.LoadContainer(e.ctx, e.id)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := ctr.Info(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	st, err := e.c.SnapshotService(info.Snapshotter).Stat(e.ctx, info.SnapshotKey)
	if err != nil {
		e.t.Fatal(err)
	}
	return st.Parent
}

// gc runs containerd's garbage collector to completion.
func (e *snapEnv) gc() {
	e.t.Helper()
	lm := e.c.LeasesService()
	l, err := lm.Create(e.ctx, leases.WithRandomID())
	if err != nil {
		e.t.Fatal(err)
	}
	if err := lm.Delete(e.ctx, l, leases.SynchronousDelete); err != nil {
		e.t.Fatal(err)
	}
}

func (e *snapEnv) snapshotKeys(filters ...string) []string {
	e.t.Helper()
	var keys []string
	err := e.c.SnapshotService(testenv.Snapshotter).Walk(e.ctx, func(_ context.Context, info snapshots.Info) error {
		keys = append(keys, info.Name)
		return nil
	}, filters...)
	if err != nil {
		e.t.Fatal(err)
	}
	return keys
}

func (e *snapEnv) noLeftovers() {
	e.t.Helper()
	ls, err := e.c.LeasesService().List(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(ls) > 0 {
		e.t.Errorf("leases left: %v", ls)
	}
	for _, k := range e.snapshotKeys() {
		if strings.Contains(k, ".lower-") || strings.Contains(k, ".apply-") || strings.Contains(k, ".flat-") || strings.Contains(k, ".rollback-") {
			e.t.Errorf("temporary snapshot left: %s", k)
		}
	}
}

func TestSnapshotRollbackDelete(t *testing.T) {
	e := newSnapEnv(t)
	imageTop := e.activeParent()

	e.mustExec("echo one > /one && dd if=/dev/urandom of=/big1 bs=1M count=1 2>/dev/null")
	v1 := e.snapshot("ws-v1")
	if v1.Parent != imageTop {
		t.Fatalf("v1 parent %q, want the image's top layer %q", v1.Parent, imageTop)
	}
	if v1.LayerSize < 1<<20 {
		t.Fatalf("v1 layer %d bytes, holds less than the 1 MiB written", v1.LayerSize)
	}
	if _, _, err := e.r.SnapshotContainer(e.ctx, e.id, "ws-v1", nil); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second snapshot named ws-v1: %v, want AlreadyExists", err)
	}

	// v2 holds what changed since v1, on top of it: not the 1 MiB again.
	e.mustExec("echo two > /two && rm /one")
	v2 := e.snapshot("ws-v2")
	if v2.Parent != "ws-v1" || v2.LayerSize >= 1<<20 {
		t.Fatalf("v2 %+v, v1 %+v: want a small layer on ws-v1", v2, v1)
	}

	list, err := e.r.ListSnapshots(e.ctx, testenv.Snapshotter, "test/bot", e.id)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Key != "ws-v1" || list[1].Key != "ws-v2" || list[1].Parent != "ws-v1" {
		t.Fatalf("ListSnapshots: %+v", list)
	}
	if other, err := e.r.ListSnapshots(e.ctx, testenv.Snapshotter, "test/bot", "other"); err != nil || len(other) != 0 {
		t.Fatalf("ListSnapshots of another bot: %v %+v", err, other)
	}

	// Committed snapshots survive garbage collection.
	e.gc()
	for _, s := range []SnapshotInfo{v1, v2} {
		if _, err := e.c.SnapshotService(testenv.Snapshotter).Stat(e.ctx, s.Key); err != nil {
			t.Fatalf("%s after GC: %v", s.Key, err)
		}
	}
	e.noLeftovers()

	if err := e.r.RollbackContainer(e.ctx, e.id, "ws-v1"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("rollback of a running container: %v, want FailedPrecondition", err)
	}
	e.stop()
	if err := e.r.RollbackContainer(e.ctx, e.id, "ws-nope"); !errdefs.IsNotFound(err) {
		t.Fatalf("rollback to a missing snapshot: %v, want NotFound", err)
	}
	if err := e.r.RollbackContainer(e.ctx, e.id, "ws-v1"); err != nil {
		t.Fatal(err)
	}
	if p := e.activeParent(); p != "ws-v1" {
		t.Fatalf("active parent after rollback %q, want ws-v1", p)
	}
	e.start()
	if out := e.mustExec("cat /one; test -e /two && echo two exists; wc -c < /big1"); out != "one\n1048576\n" {
		t.Fatalf("after rollback to v1: %q", out)
	}

	// After a rollback, snapshots are incremental on top of the target.
	e.mustExec("echo three > /three")
	v3 := e.snapshot("ws-v3")
	if v3.Parent != "ws-v1" || v3.LayerSize >= v1.LayerSize {
		t.Fatalf("v3 %+v: want an incremental layer on ws-v1", v3)
	}

	for _, key := range []string{"ws-v1"} {
		if err := e.r.DeleteSnapshot(e.ctx, testenv.Snapshotter, key); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("delete %s, a parent: %v, want FailedPrecondition", key, err)
		}
	}
	if err := e.r.DeleteSnapshot(e.ctx, testenv.Snapshotter, imageTop); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("delete an image layer: %v, want InvalidArgument", err)
	}
	if err := e.r.DeleteSnapshot(e.ctx, testenv.Snapshotter, "ws-v2"); err != nil {
		t.Fatal(err)
	}
	if err := e.r.DeleteSnapshot(e.ctx, testenv.Snapshotter, "ws-v2"); !errdefs.IsNotFound(err) {
		t.Fatalf("delete ws-v2 again: %v, want NotFound", err)
	}
	if err := e.r.DeleteSnapshot(e.ctx, testenv.Snapshotter, "ws-v3"); err != nil {
		t.Fatal(err)
	}
	// ws-v1 is still the base of the container's writable layer.
	if err := e.r.DeleteSnapshot(e.ctx, testenv.Snapshotter, "ws-v1"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("delete ws-v1 under the container: %v, want FailedPrecondition", err)
	}
	e.gc()
	list, err = e.r.ListSnapshots(e.ctx, testenv.Snapshotter, "", "")
	if err != nil || len(list) != 1 || list[0].Key != "ws-v1" {
		t.Fatalf("ListSnapshots after deletes: %v %+v", err, list)
	}
	e.noLeftovers()
}

// TestSnapshotLarge measures a snapshot of a 100 MiB change.
func TestSnapshotLarge(t *testing.T) {
	e := newSnapEnv(t)
	e.mustExec("dd if=/dev/urandom of=/big bs=1M count=100 2>/dev/null")
	v := e.snapshot("ws-big")
	if v.LayerSize < 100<<20 {
		t.Fatalf("layer %d bytes", v.LayerSize)
	}
	// A stopped container is snapshotted without a pause.
	e.stop()
	if _, paused, err := e.r.SnapshotContainer(e.ctx, e.id, "ws-big-stopped", nil); err != nil || paused != 0 {
		t.Fatalf("snapshot of a stopped container: paused %v, %v", paused, err)
	}
	e.noLeftovers()
}

// TestSnapshotCancelled cancels a snapshot while the task is paused: the
// task must run again and nothing may be left behind.
func TestSnapshotCancelled(t *testing.T) {
	e := newSnapEnv(t)
	e.mustExec("dd if=/dev/urandom of=/big bs=1M count=200 2>/dev/null")
	before, err := e.r.Container(e.ctx, e.id)
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := e.c.LoadContainer(e.ctx, e.id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Cancel as soon as the task is seen paused, while the layer is written.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sawPause := make(chan bool, 1)
	go func() {
		defer cancel()
		for ctx.Err() == nil {
			if st, err := task.Status(e.ctx); err == nil && st.Status == containerd.Paused {
				sawPause <- true
				return
			}
			time.Sleep(time.Millisecond)
		}
		sawPause <- false
	}()
	_, paused, err := e.r.SnapshotContainer(ctx, e.id, "ws-cancelled", nil)
	t.Logf("cancelled snapshot: paused %v, err %v", paused, err)
	if !<-sawPause {
		t.Fatal("the task was never seen paused")
	}
	if err == nil {
		t.Fatal("a snapshot cancelled while paused succeeded")
	}
	after, err := e.r.Container(e.ctx, e.id)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != TaskRunning || after.PID != before.PID {
		t.Fatalf("task after a cancelled snapshot: %s pid %d", after.Status, after.PID)
	}
	if _, ok := after.Labels[LabelSnapshotPaused]; ok {
		t.Fatal("pause label left")
	}
	e.gc()
	if keys := e.snapshotKeys(`name~="ws-cancelled"`); len(keys) > 0 {
		t.Fatalf("snapshots left: %v", keys)
	}
	if st, err := e.c.ContentStore().ListStatuses(e.ctx); err != nil || len(st) > 0 {
		t.Fatalf("ingests left: %v %+v", err, st)
	}
	e.noLeftovers()
}

// TestSnapshotReconcile recreates what a berth killed mid-operation leaves
// and checks that ReconcileSnapshots repairs it.
func TestSnapshotReconcile(t *testing.T) {
	e := newSnapEnv(t)
	e.mustExec("echo one > /one")
	e.snapshot("ws-v1")
	e.mustExec("echo two > /two")

	// Killed while the task was paused, with a half-made layer under a lease.
	ctr, err := e.c.LoadContainer(e.ctx, e.id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctr.SetLabels(e.ctx, map[string]string{LabelSnapshotPaused: "ws-v2"}); err != nil {
		t.Fatal(err)
	}
	if err := task.Pause(e.ctx); err != nil {
		t.Fatal(err)
	}
	lm := e.c.LeasesService()
	l, err := lm.Create(e.ctx, leases.WithRandomID(), leases.WithLabel(labelSnapshotOp, "snapshot:ws-v2"))
	if err != nil {
		t.Fatal(err)
	}
	sn := e.c.SnapshotService(testenv.Snapshotter)
	if _, err := sn.View(leases.WithLease(e.ctx, l.ID), "ws-v2.lower-dead", e.activeParent()); err != nil {
		t.Fatal(err)
	}
	if err := e.r.ReconcileSnapshots(e.ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := task.Status(e.ctx); err != nil || st.Status != containerd.Running {
		t.Fatalf("task after reconcile: %v %v", st.Status, err)
	}
	if labels, _ := ctr.Labels(e.ctx); labels[LabelSnapshotPaused] != "" {
		t.Fatal("pause label kept")
	}
	if keys := e.snapshotKeys(`name=="ws-v2.lower-dead"`); len(keys) > 0 {
		t.Fatalf("leased leftovers kept: %v", keys)
	}
	e.noLeftovers()

	// Killed in the middle of a rollback: the old layer is set aside and
	// the container has none.
	e.stop()
	info, err := ctr.Info(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	hold := info.SnapshotKey + ".rollback-1"
	if err := sn.Commit(e.ctx, hold, info.SnapshotKey, snapshots.WithLabels(map[string]string{
		labelGCRoot: "x", LabelRollbackOf: e.id, LabelRollbackTo: "ws-v1",
	})); err != nil {
		t.Fatal(err)
	}
	if err := e.r.ReconcileSnapshots(e.ctx); err != nil {
		t.Fatal(err)
	}
	if p := e.activeParent(); p != "ws-v1" {
		t.Fatalf("active parent after reconciling a rollback: %q", p)
	}
	e.noLeftovers()
	e.start()
	if out := e.mustExec("cat /one; test -e /two && echo two exists; true"); out != "one\n" {
		t.Fatalf("after the reconciled rollback: %q", out)
	}

	// The same, with the target deleted meanwhile: the old layer comes back.
	e.mustExec("echo four > /four")
	e.stop()
	info, _ = ctr.Info(e.ctx)
	hold = info.SnapshotKey + ".rollback-2"
	if err := sn.Commit(e.ctx, hold, info.SnapshotKey, snapshots.WithLabels(map[string]string{
		labelGCRoot: "x", LabelRollbackOf: e.id, LabelRollbackTo: "ws-gone",
	})); err != nil {
		t.Fatal(err)
	}
	if err := e.r.ReconcileSnapshots(e.ctx); err != nil {
		t.Fatal(err)
	}
	if p := e.activeParent(); p != hold {
		t.Fatalf("active parent %q, want the restored old layer %s", p, hold)
	}
	hi, err := sn.Stat(e.ctx, hold)
	if err != nil {
		t.Fatal(err)
	}
	if hi.Labels[LabelRollbackOf] != "" || hi.Labels[labelGCRoot] != "" {
		t.Fatalf("restored layer still marked: %v", hi.Labels)
	}
	e.start()
	if out := e.mustExec("cat /one /four"); out != "one\nfour\n" {
		t.Fatalf("after restoring the old layer: %q", out)
	}
	if err := e.r.ReconcileSnapshots(e.ctx); err != nil {
		t.Fatal(err)
	}
}
