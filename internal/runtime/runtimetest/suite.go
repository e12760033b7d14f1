package runtimetest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/containerd/errdefs"
)

// Env is one implementation under test, fresh for one test: nothing but
// Image in it.
type Env struct {
	Runtime runtime.Runtime
	// Image is present in Runtime and unpacked for Snapshotter.
	Image       string
	Snapshotter string
	// Args run a process in Image that lives until it is stopped.
	Args []string
	// Archive is the path of an OCI archive that holds Image by name.
	Archive string
	// Crash ends the container's running process from outside the
	// runtime, as the OOM killer would, and returns once it has exited.
	Crash func(t *testing.T, id string)
}

// Suite checks the behaviour berth relies on of every runtime.Runtime:
// what each operation leaves behind, as the others observe it, and the
// errdefs class of each refusal. newEnv makes a fresh Env per subtest.
//
// It is for implementations what containerd's snapshotter test suite is
// for snapshotters: runtime.Containerd and Fake both pass it, so tests
// written against Fake hold for containerd as far as Suite reaches.
func Suite(t *testing.T, newEnv func(t *testing.T) Env) {
	for _, c := range []struct {
		name string
		fn   func(t *testing.T, e Env)
	}{
		{"Containers", checkContainers},
		{"Tasks", checkTasks},
		{"Network", checkNetwork},
		{"LabelsAndListing", checkLabels},
		{"Snapshots", checkSnapshots},
		{"Fork", checkFork},
		{"Images", checkImages},
		{"Metrics", checkMetrics},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newEnv(t)) })
	}
}

// grace is short: Suite's processes need no time to shut down, and
// SIGKILL after it is part of what StopTask promises.
const grace = 100 * time.Millisecond

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (e Env) spec(id string, labels map[string]string) runtime.ContainerSpec {
	return runtime.ContainerSpec{
		ID: id, Image: e.Image, Snapshotter: e.Snapshotter, Labels: labels,
		Hostname: id, Args: e.Args,
	}
}

func (e Env) create(t *testing.T, id string, labels map[string]string) {
	t.Helper()
	if err := e.Runtime.CreateContainer(ctxOf(t), e.spec(id, labels)); err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
}

func (e Env) start(t *testing.T, id string) uint32 {
	t.Helper()
	pid, err := e.Runtime.StartTask(ctxOf(t), id, filepath.Join(t.TempDir(), id+".log"))
	if err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	if pid == 0 {
		t.Fatalf("start %s: pid 0", id)
	}
	return pid
}

func (e Env) stop(t *testing.T, id string) {
	t.Helper()
	if err := e.Runtime.StopTask(ctxOf(t), id, grace); err != nil {
		t.Fatalf("stop %s: %v", id, err)
	}
}

func (e Env) container(t *testing.T, id string) runtime.Container {
	t.Helper()
	c, err := e.Runtime.Container(ctxOf(t), id)
	if err != nil {
		t.Fatalf("container %s: %v", id, err)
	}
	return c
}

func (e Env) snapshot(t *testing.T, id, key string, labels map[string]string) runtime.SnapshotInfo {
	t.Helper()
	info, _, err := e.Runtime.SnapshotContainer(ctxOf(t), id, key, labels)
	if err != nil {
		t.Fatalf("snapshot %s as %s: %v", id, key, err)
	}
	return info
}

func (e Env) snapshotKeys(t *testing.T, labelKey, labelValue string) []string {
	t.Helper()
	infos, err := e.Runtime.ListSnapshots(ctxOf(t), e.Snapshotter, labelKey, labelValue)
	if err != nil {
		t.Fatalf("list snapshots: %v", err)
	}
	keys := []string{}
	for _, i := range infos {
		keys = append(keys, i.Key)
	}
	return keys
}

// wantClass fails unless err is of the errdefs class is names.
func wantClass(t *testing.T, what string, err error, is func(error) bool, class string) {
	t.Helper()
	if err == nil || !is(err) {
		t.Errorf("%s: got %v, want an error of class %s", what, err, class)
	}
}

func wantStatus(t *testing.T, c runtime.Container, want runtime.TaskStatus) {
	t.Helper()
	if c.Status != want {
		t.Errorf("container %s is %s, want %s", c.ID, c.Status, want)
	}
}

func checkContainers(t *testing.T, e Env) {
	ctx, rt := ctxOf(t), e.Runtime
	if err := rt.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	_, err := rt.Container(ctx, "suite-none")
	wantClass(t, "Container of a missing container", err, errdefs.IsNotFound, "NotFound")
	_, err = rt.StartTask(ctx, "suite-none", filepath.Join(t.TempDir(), "log"))
	wantClass(t, "StartTask of a missing container", err, errdefs.IsNotFound, "NotFound")
	wantClass(t, "StopTask of a missing container", rt.StopTask(ctx, "suite-none", grace), errdefs.IsNotFound, "NotFound")
	wantClass(t, "DeleteContainer of a missing container", rt.DeleteContainer(ctx, "suite-none"), errdefs.IsNotFound, "NotFound")
	wantClass(t, "SetLabels of a missing container", rt.SetLabels(ctx, "suite-none", map[string]string{"a": "b"}), errdefs.IsNotFound, "NotFound")
	_, err = rt.ProcessEnv(ctx, "suite-none")
	wantClass(t, "ProcessEnv of a missing container", err, errdefs.IsNotFound, "NotFound")

	spec := e.spec("ws", map[string]string{"suite/bot": "ws", "suite/other": "x"})
	spec.Env = []string{"SUITE_A=1"}
	spec.RunAsRoot = true
	if err := rt.CreateContainer(ctx, spec); err != nil {
		t.Fatal(err)
	}
	c := e.container(t, "ws")
	if c.ID != "ws" || c.Image != e.Image || c.Snapshotter != e.Snapshotter {
		t.Errorf("container = %+v, want id ws, image %s, snapshotter %s", c, e.Image, e.Snapshotter)
	}
	if c.Labels["suite/bot"] != "ws" || c.Labels["suite/other"] != "x" {
		t.Errorf("labels = %v, want the spec's", c.Labels)
	}
	if c.CreatedAt.IsZero() {
		t.Error("no creation time")
	}
	wantStatus(t, c, runtime.TaskNone)
	env, err := rt.ProcessEnv(ctx, "ws")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(env, "SUITE_A=1") || !slices.ContainsFunc(env, func(s string) bool { return strings.HasPrefix(s, runtime.ImageUserEnv+"=") }) {
		t.Errorf("process env %v lacks the spec's SUITE_A=1 or %s (RunAsRoot)", env, runtime.ImageUserEnv)
	}

	wantClass(t, "CreateContainer of an existing id", rt.CreateContainer(ctx, e.spec("ws", nil)), errdefs.IsAlreadyExists, "AlreadyExists")
	bad := e.spec("suite-bad", nil)
	bad.Image = "docker.io/berth-test/absent:latest"
	wantClass(t, "CreateContainer from a missing image", rt.CreateContainer(ctx, bad), errdefs.IsNotFound, "NotFound")
	bad = e.spec("suite-bad", nil)
	bad.Devices = []string{"suite.example/none=0"}
	wantClass(t, "CreateContainer with an unknown device", rt.CreateContainer(ctx, bad), errdefs.IsInvalidArgument, "InvalidArgument")
	if _, err := rt.Container(ctx, "suite-bad"); !errdefs.IsNotFound(err) {
		t.Errorf("a failed create left container suite-bad behind: %v", err)
	}
	if err := rt.CheckDevices(nil); err != nil {
		t.Errorf("CheckDevices of none: %v", err)
	}
	wantClass(t, "CheckDevices of an unknown device", rt.CheckDevices([]string{"suite.example/none=0"}), errdefs.IsInvalidArgument, "InvalidArgument")

	if err := rt.DeleteContainer(ctx, "ws"); err != nil {
		t.Fatal(err)
	}
	_, err = rt.Container(ctx, "ws")
	wantClass(t, "Container after DeleteContainer", err, errdefs.IsNotFound, "NotFound")
	// The writable layer went with the container: the id is free again.
	e.create(t, "ws", nil)
	if err := rt.DeleteContainer(ctx, "ws"); err != nil {
		t.Fatal(err)
	}
}

func checkTasks(t *testing.T, e Env) {
	ctx, rt := ctxOf(t), e.Runtime
	e.create(t, "ws", map[string]string{"suite/bot": "ws"})
	pid := e.start(t, "ws")
	c := e.container(t, "ws")
	wantStatus(t, c, runtime.TaskRunning)
	if c.PID != pid {
		t.Errorf("running pid %d, StartTask said %d", c.PID, pid)
	}
	if again := e.start(t, "ws"); again != pid {
		t.Errorf("StartTask of a running task started another (pid %d, was %d)", again, pid)
	}

	e.stop(t, "ws")
	wantStatus(t, e.container(t, "ws"), runtime.TaskNone)
	if err := rt.StopTask(ctx, "ws", grace); err != nil {
		t.Errorf("StopTask of a stopped container: %v", err)
	}

	e.start(t, "ws")
	wantStatus(t, e.container(t, "ws"), runtime.TaskRunning)
	e.Crash(t, "ws")
	c = e.container(t, "ws")
	wantStatus(t, c, runtime.TaskStopped)
	if c.ExitStatus == 0 {
		t.Error("a killed process reports exit status 0")
	}
	// A task that died on its own is replaced by the next start.
	e.start(t, "ws")
	wantStatus(t, e.container(t, "ws"), runtime.TaskRunning)

	// Deleting a running container takes its task along.
	if err := rt.DeleteContainer(ctx, "ws"); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Container(ctx, "ws"); !errdefs.IsNotFound(err) {
		t.Errorf("container after delete: %v", err)
	}
}

// checkNetwork: a container's network changes between runs, and the
// labels set meanwhile stay. A namespace path needs a namespace, which
// the suite has no business making; host and loopback-only cover the spec
// rewrite both ways.
func checkNetwork(t *testing.T, e Env) {
	ctx, rt := ctxOf(t), e.Runtime
	if err := rt.SetNetwork(ctx, "missing", runtime.Network{}); !errdefs.IsNotFound(err) {
		t.Errorf("SetNetwork of a missing container: %v, want NotFound", err)
	}
	e.create(t, "ws", map[string]string{"suite/bot": "ws"})
	if err := rt.SetNetwork(ctx, "ws", runtime.Network{Host: true, NetnsPath: "/x"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("SetNetwork of host plus a namespace: %v, want InvalidArgument", err)
	}
	if err := rt.SetNetwork(ctx, "ws", runtime.Network{Host: true}); err != nil {
		t.Fatal(err)
	}
	if err := rt.SetLabels(ctx, "ws", map[string]string{"suite/after": "yes"}); err != nil {
		t.Fatal(err)
	}
	// Unchanged: nothing to do, and no error.
	if err := rt.SetNetwork(ctx, "ws", runtime.Network{Host: true}); err != nil {
		t.Fatal(err)
	}
	e.start(t, "ws")
	wantStatus(t, e.container(t, "ws"), runtime.TaskRunning)
	e.stop(t, "ws")
	if err := rt.SetNetwork(ctx, "ws", runtime.Network{}); err != nil {
		t.Fatal(err)
	}
	e.start(t, "ws")
	c := e.container(t, "ws")
	wantStatus(t, c, runtime.TaskRunning)
	if c.Labels["suite/after"] != "yes" || c.Labels["suite/bot"] != "ws" {
		t.Errorf("labels after SetNetwork: %v", c.Labels)
	}
	e.stop(t, "ws")
}

func checkLabels(t *testing.T, e Env) {
	ctx, rt := ctxOf(t), e.Runtime
	e.create(t, "a", map[string]string{"suite/bot": "a"})
	e.create(t, "b", map[string]string{"suite/bot": "b"})
	e.create(t, "c", map[string]string{"suite/other": "c"})
	ids := func(key string) []string {
		t.Helper()
		ctrs, err := rt.Containers(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, c := range ctrs {
			out = append(out, c.ID)
		}
		slices.Sort(out)
		return out
	}
	if got := ids("suite/bot"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("containers labelled suite/bot: %v, want [a b]", got)
	}
	if got := ids("suite/none"); len(got) != 0 {
		t.Errorf("containers labelled suite/none: %v, want none", got)
	}
	if err := rt.SetLabels(ctx, "a", map[string]string{"suite/x": "1", "suite/bot": ""}); err != nil {
		t.Fatal(err)
	}
	la := e.container(t, "a").Labels
	if la["suite/x"] != "1" {
		t.Errorf("labels of a: %v, want suite/x=1 set", la)
	}
	if _, ok := la["suite/bot"]; ok {
		t.Errorf("labels of a: %v, want suite/bot removed by its empty value", la)
	}
	if got := ids("suite/bot"); !slices.Equal(got, []string{"b"}) {
		t.Errorf("containers labelled suite/bot after removing a's: %v, want [b]", got)
	}
	if err := rt.SetLabels(ctx, "b", map[string]string{"suite/bot": "b2"}); err != nil {
		t.Fatal(err)
	}
	if got := e.container(t, "b").Labels["suite/bot"]; got != "b2" {
		t.Errorf("label replaced: %q, want b2", got)
	}
}

func checkSnapshots(t *testing.T, e Env) {
	ctx, rt, snap := ctxOf(t), e.Runtime, e.Snapshotter
	e.create(t, "ws", map[string]string{"suite/bot": "ws"})
	e.start(t, "ws")

	_, _, err := rt.SnapshotContainer(ctx, "ws", "", nil)
	wantClass(t, "SnapshotContainer without a key", err, errdefs.IsInvalidArgument, "InvalidArgument")
	_, _, err = rt.SnapshotContainer(ctx, "suite-none", "suite-k", nil)
	wantClass(t, "SnapshotContainer of a missing container", err, errdefs.IsNotFound, "NotFound")

	labels := map[string]string{"suite/bot": "ws", "suite/v": "1"}
	v1 := e.snapshot(t, "ws", "suite-v1", labels)
	if v1.Key != "suite-v1" || v1.Labels["suite/bot"] != "ws" || v1.Labels["suite/v"] != "1" || v1.LayerSize <= 0 || v1.Created.IsZero() {
		t.Errorf("snapshot info %+v: want key suite-v1, the labels given, a layer size and a time", v1)
	}
	wantStatus(t, e.container(t, "ws"), runtime.TaskRunning)
	_, _, err = rt.SnapshotContainer(ctx, "ws", "suite-v1", labels)
	wantClass(t, "SnapshotContainer to an existing key", err, errdefs.IsAlreadyExists, "AlreadyExists")
	v2 := e.snapshot(t, "ws", "suite-v2", map[string]string{"suite/bot": "ws"})
	// A version holds what changed since the previous one and builds on
	// it; a snapshotter whose changes cannot be read on their own may
	// build every version on the image instead.
	if v1.Parent == "" || (v2.Parent != "suite-v1" && v2.Parent != v1.Parent) {
		t.Errorf("parents %q and %q: the first snapshot of a fresh container builds on its image, the second on the first (or the image)", v1.Parent, v2.Parent)
	}
	if got := e.snapshotKeys(t, "suite/bot", "ws"); !slices.Equal(got, []string{"suite-v1", "suite-v2"}) {
		t.Errorf("snapshots of ws: %v, want [suite-v1 suite-v2], oldest first", got)
	}
	if got := e.snapshotKeys(t, "suite/bot", "other"); len(got) != 0 {
		t.Errorf("snapshots of other: %v, want none", got)
	}

	d, err := rt.DiffSnapshots(ctx, snap, "suite-v1", "suite-v2", runtime.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Changes) != 0 || d.Truncated {
		t.Errorf("diff of two snapshots of an unchanged layer: %+v, want none", d)
	}
	_, err = rt.DiffSnapshots(ctx, snap, "", "suite-v1", runtime.Page{})
	wantClass(t, "DiffSnapshots without a key", err, errdefs.IsInvalidArgument, "InvalidArgument")
	_, err = rt.DiffSnapshots(ctx, snap, "suite-v1", "suite-v2", runtime.Page{Offset: -1})
	wantClass(t, "DiffSnapshots from a negative offset", err, errdefs.IsInvalidArgument, "InvalidArgument")
	_, err = rt.DiffSnapshots(ctx, snap, "suite-v1", "suite-none", runtime.Page{})
	wantClass(t, "DiffSnapshots to a missing snapshot", err, errdefs.IsNotFound, "NotFound")

	wantClass(t, "RollbackContainer of a running container", rt.RollbackContainer(ctx, "ws", "suite-v1"), errdefs.IsFailedPrecondition, "FailedPrecondition")
	e.stop(t, "ws")
	wantClass(t, "RollbackContainer to a missing snapshot", rt.RollbackContainer(ctx, "ws", "suite-none"), errdefs.IsNotFound, "NotFound")
	wantClass(t, "RollbackContainer of a missing container", rt.RollbackContainer(ctx, "suite-none", "suite-v1"), errdefs.IsNotFound, "NotFound")
	if err := rt.RollbackContainer(ctx, "ws", "suite-v1"); err != nil {
		t.Fatal(err)
	}
	c := e.container(t, "ws")
	wantStatus(t, c, runtime.TaskNone)
	if c.Labels["suite/bot"] != "ws" {
		t.Errorf("rollback changed the container's labels: %v", c.Labels)
	}
	wantClass(t, "DeleteSnapshot of the base of a rolled-back container", rt.DeleteSnapshot(ctx, snap, "suite-v1"), errdefs.IsFailedPrecondition, "FailedPrecondition")

	// After a rollback, snapshots build on the version rolled back to.
	v3 := e.snapshot(t, "ws", "suite-v3", map[string]string{"suite/bot": "ws"})
	if v3.Parent != "suite-v1" {
		t.Errorf("snapshot after rollback to suite-v1 has parent %q", v3.Parent)
	}
	wantClass(t, "DeleteSnapshot of a snapshot another builds on", rt.DeleteSnapshot(ctx, snap, "suite-v1"), errdefs.IsFailedPrecondition, "FailedPrecondition")
	if err := rt.DeleteSnapshot(ctx, snap, "suite-v2"); err != nil {
		t.Fatal(err)
	}
	if got := e.snapshotKeys(t, "suite/bot", "ws"); !slices.Equal(got, []string{"suite-v1", "suite-v3"}) {
		t.Errorf("snapshots after deleting suite-v2: %v, want [suite-v1 suite-v3]", got)
	}
	wantClass(t, "DeleteSnapshot of a deleted snapshot", rt.DeleteSnapshot(ctx, snap, "suite-v2"), errdefs.IsNotFound, "NotFound")
	wantClass(t, "DeleteSnapshot of an image layer", rt.DeleteSnapshot(ctx, snap, v1.Parent), errdefs.IsInvalidArgument, "InvalidArgument")

	// The rolled-back container runs again.
	e.start(t, "ws")
	wantStatus(t, e.container(t, "ws"), runtime.TaskRunning)

	if err := rt.DeleteContainer(ctx, "ws"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"suite-v3", "suite-v1"} {
		if err := rt.DeleteSnapshot(ctx, snap, k); err != nil {
			t.Errorf("delete %s once nothing builds on it: %v", k, err)
		}
	}
	if got := e.snapshotKeys(t, "", ""); len(got) != 0 {
		t.Errorf("snapshots left: %v", got)
	}
	if err := rt.ReconcileSnapshots(ctx); err != nil {
		t.Errorf("reconcile with nothing to repair: %v", err)
	}
}

func checkFork(t *testing.T, e Env) {
	ctx, rt, snap := ctxOf(t), e.Runtime, e.Snapshotter
	e.create(t, "ws", map[string]string{"suite/bot": "ws"})
	e.start(t, "ws")
	e.snapshot(t, "ws", "suite-v1", map[string]string{"suite/bot": "ws"})

	wantClass(t, "CreateContainerFromSnapshot without a parent", rt.CreateContainerFromSnapshot(ctx, e.spec("fork", nil), ""), errdefs.IsInvalidArgument, "InvalidArgument")
	wantClass(t, "CreateContainerFromSnapshot of a missing snapshot", rt.CreateContainerFromSnapshot(ctx, e.spec("fork", nil), "suite-none"), errdefs.IsNotFound, "NotFound")
	if err := rt.CreateContainerFromSnapshot(ctx, e.spec("fork", map[string]string{"suite/bot": "fork"}), "suite-v1"); err != nil {
		t.Fatal(err)
	}
	c := e.container(t, "fork")
	wantStatus(t, c, runtime.TaskNone)
	if c.Labels["suite/bot"] != "fork" || c.Image != e.Image {
		t.Errorf("fork = %+v", c)
	}
	e.start(t, "fork")
	wantStatus(t, e.container(t, "fork"), runtime.TaskRunning)
	wantStatus(t, e.container(t, "ws"), runtime.TaskRunning)
	// Snapshots of the fork build on the snapshot it was made from.
	if f1 := e.snapshot(t, "fork", "suite-fork-v1", map[string]string{"suite/bot": "fork"}); f1.Parent != "suite-v1" {
		t.Errorf("snapshot of the fork has parent %q, want suite-v1", f1.Parent)
	}
	wantClass(t, "DeleteSnapshot of a fork's base", rt.DeleteSnapshot(ctx, snap, "suite-v1"), errdefs.IsFailedPrecondition, "FailedPrecondition")
	if err := rt.DeleteContainer(ctx, "fork"); err != nil {
		t.Fatal(err)
	}
	if err := rt.DeleteSnapshot(ctx, snap, "suite-fork-v1"); err != nil {
		t.Fatal(err)
	}
	if err := rt.DeleteSnapshot(ctx, snap, "suite-v1"); err != nil {
		t.Errorf("delete the fork's base after the fork: %v", err)
	}
}

func checkImages(t *testing.T, e Env) {
	ctx, rt := ctxOf(t), e.Runtime
	const absent = "docker.io/berth-test/absent:latest"
	img, err := rt.Image(ctx, e.Image)
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != e.Image || img.Digest == "" {
		t.Errorf("image = %+v, want name %s and a digest", img, e.Image)
	}
	_, err = rt.Image(ctx, absent)
	wantClass(t, "Image of a missing image", err, errdefs.IsNotFound, "NotFound")
	got, err := rt.EnsureImage(ctx, e.Image, runtime.PullIfNotPresent, e.Snapshotter, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != e.Image || got.Digest != img.Digest || got.Pulled {
		t.Errorf("EnsureImage of a present image = %+v, want it as it is, not pulled", got)
	}
	_, err = rt.EnsureImage(ctx, absent, runtime.PullNever, e.Snapshotter, nil)
	wantClass(t, "EnsureImage of a missing image that may not be pulled", err, errdefs.IsNotFound, "NotFound")

	f, err := os.Open(e.Archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	imported, err := rt.ImportImages(ctx, f, e.Snapshotter, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(imported, func(i runtime.Image) bool { return i.Name == e.Image }) {
		t.Errorf("import of the archive gave %+v, want %s among them", imported, e.Image)
	}

	e.create(t, "ws", nil)
	e.start(t, "ws")
	e.snapshot(t, "ws", "suite-v1", map[string]string{"suite/bot": "ws"})
	const ref = "berth.local/snapshots/ws:v1"
	_, err = rt.ExportSnapshot(ctx, e.Snapshotter, "suite-none", e.Image, ref, nil)
	wantClass(t, "ExportSnapshot of a missing snapshot", err, errdefs.IsNotFound, "NotFound")
	exp, err := rt.ExportSnapshot(ctx, e.Snapshotter, "suite-v1", e.Image, ref, map[string]string{"suite/owner": "ws"})
	if err != nil {
		t.Fatal(err)
	}
	if exp.Name != ref || exp.Labels["suite/owner"] != "ws" {
		t.Errorf("export = %+v", exp)
	}
	if got, err := rt.Image(ctx, ref); err != nil || got.Labels["suite/owner"] != "ws" || got.Digest != exp.Digest {
		t.Errorf("exported image as listed: %+v, %v; want it as ExportSnapshot said", got, err)
	}
	list, err := rt.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range list {
		names = append(names, i.Name)
	}
	if !slices.IsSorted(names) || !slices.Contains(names, ref) || !slices.Contains(names, e.Image) {
		t.Errorf("images %v: want %s and %s, sorted by name", names, e.Image, ref)
	}
	// An image made from a snapshot serves workspaces like any other, once
	// unpacked as every image must be before a container is made from it.
	exported := e.spec("from-export", nil)
	exported.Image = ref
	wantClass(t, "CreateContainer from an image not unpacked", rt.CreateContainer(ctx, exported), errdefs.IsNotFound, "NotFound")
	if _, err := rt.EnsureImage(ctx, ref, runtime.PullNever, e.Snapshotter, nil); err != nil {
		t.Errorf("unpack the exported image: %v", err)
	} else if err := rt.CreateContainer(ctx, exported); err != nil {
		t.Errorf("create from the exported image: %v", err)
	} else if err := rt.DeleteContainer(ctx, "from-export"); err != nil {
		t.Error(err)
	}
	if err := rt.DeleteImage(ctx, ref); err != nil {
		t.Fatal(err)
	}
	_, err = rt.Image(ctx, ref)
	wantClass(t, "Image after DeleteImage", err, errdefs.IsNotFound, "NotFound")
	wantClass(t, "DeleteImage of a missing image", rt.DeleteImage(ctx, ref), errdefs.IsNotFound, "NotFound")
}

func checkMetrics(t *testing.T, e Env) {
	ctx, rt := ctxOf(t), e.Runtime
	e.create(t, "ws", nil)
	_, err := rt.Stats(ctx, "ws")
	wantClass(t, "Stats of a container without a task", err, errdefs.IsNotFound, "NotFound")
	e.start(t, "ws")
	if _, err := rt.Stats(ctx, "ws"); err != nil {
		t.Errorf("Stats of a running container: %v", err)
	}
	if n, err := rt.StorageUsage(ctx, "ws"); err != nil || n < 0 {
		t.Errorf("StorageUsage = %d, %v", n, err)
	}
	_, err = rt.Stats(ctx, "suite-none")
	wantClass(t, "Stats of a missing container", err, errdefs.IsNotFound, "NotFound")
	_, err = rt.StorageUsage(ctx, "suite-none")
	wantClass(t, "StorageUsage of a missing container", err, errdefs.IsNotFound, "NotFound")
}
