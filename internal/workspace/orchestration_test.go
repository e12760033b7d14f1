package workspace

// Tests of the Manager's orchestration on runtimetest.Fake: what a failed
// step leaves, what delete removes, what reconcile restarts, what the
// per-bot locks let run together. runtimetest.Suite holds containerd to
// the behaviour the fake shows here; the agent, a real process in
// production, is stood in for by the waitAgent seam.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
	"github.com/containerd/errdefs"
)

const fakeImage = "docker.io/library/debian:latest"

type fakeEnv struct {
	rt  *runtimetest.Fake
	m   *Manager
	dir string

	mu sync.Mutex
	// agentWait runs where the Manager waits for a started agent; nil
	// answers at once.
	agentWait func(bot string) error
	waited    []string
}

func newFakeEnv(t *testing.T) *fakeEnv {
	t.Helper()
	rt := runtimetest.NewFake()
	rt.AddImage(fakeImage, "PATH=/usr/bin:/bin")
	e := &fakeEnv{rt: rt, dir: t.TempDir()}
	e.m = e.newManager(t)
	return e
}

// newManager is a Manager over the env's runtime and state directory, as a
// restarted berth would have.
func (e *fakeEnv) newManager(t *testing.T) *Manager {
	m := NewManager(e.rt, Options{
		StateDir: e.dir, DefaultImage: "debian", Snapshotter: runtimetest.DefaultSnapshotter,
		AgentBinary: staticELF(t), AgentTimeout: time.Minute, StopGrace: time.Second, Version: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	m.waitAgent = func(ctx context.Context, bot string, pid uint32) error {
		e.mu.Lock()
		e.waited = append(e.waited, bot)
		wait := e.agentWait
		e.mu.Unlock()
		if wait != nil {
			return wait(bot)
		}
		return nil
	}
	return m
}

func (e *fakeEnv) setAgentWait(fn func(bot string) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.agentWait = fn
}

func (e *fakeEnv) waitedFor() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.waited)
}

func (e *fakeEnv) create(t *testing.T, bot string) Workspace {
	t.Helper()
	res, err := e.m.Create(t.Context(), CreateRequest{BotID: bot}, nil)
	if err != nil {
		t.Fatalf("create %s: %v", bot, err)
	}
	return res.Workspace
}

func (e *fakeEnv) container(t *testing.T, bot string) runtime.Container {
	t.Helper()
	c, err := e.rt.Container(t.Context(), bot)
	if err != nil {
		t.Fatalf("container %s: %v", bot, err)
	}
	return c
}

// delete deletes bot's workspace and returns Delete's error; what else
// Delete reports (whether there was a workspace to delete) is not what
// these tests are about.
func (e *fakeEnv) delete(t *testing.T, bot string, o DeleteOptions) error {
	return lastError(e.m.Delete(t.Context(), bot, o))
}

func lastError(results ...any) error {
	err, _ := results[len(results)-1].(error)
	return err
}

// wantNothingOf checks that no trace of bot's workspace is left: no
// container, no snapshot, no host files.
func (e *fakeEnv) wantNothingOf(t *testing.T, bot string) {
	t.Helper()
	if _, err := e.rt.Container(t.Context(), bot); !errdefs.IsNotFound(err) {
		t.Errorf("container %s is left: %v", bot, err)
	}
	if snaps, err := e.rt.ListSnapshots(t.Context(), runtimetest.DefaultSnapshotter, LabelBot, bot); err != nil || len(snaps) != 0 {
		t.Errorf("snapshots of %s left: %v %v", bot, snaps, err)
	}
	for _, p := range []string{e.m.runDir(bot), e.m.logPath(bot), e.m.mcpServersPath(bot)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left: %v", p, err)
		}
	}
}

// staticELF writes the smallest file checkAgentBinary accepts: an ELF
// header with no program headers, so no interpreter. The fake runtime
// never runs it.
func staticELF(t *testing.T) string {
	t.Helper()
	h := make([]byte, 64)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1                // 64-bit, little endian, version 1
	binary.LittleEndian.PutUint16(h[16:], 2)  // executable
	binary.LittleEndian.PutUint16(h[18:], 62) // x86-64
	binary.LittleEndian.PutUint32(h[20:], 1)
	binary.LittleEndian.PutUint16(h[52:], 64) // header size
	binary.LittleEndian.PutUint16(h[54:], 56) // program header size
	binary.LittleEndian.PutUint16(h[58:], 64) // section header size
	path := filepath.Join(t.TempDir(), "berth")
	if err := os.WriteFile(path, h, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCreateOnFake(t *testing.T) {
	e := newFakeEnv(t)
	res, err := e.m.Create(t.Context(), CreateRequest{BotID: "alpha", Env: map[string]string{"B": "2", "A": "1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || res.Workspace.Status != "running" || res.Workspace.Image != fakeImage {
		t.Errorf("create = %+v, want a created, running workspace of %s", res, fakeImage)
	}
	c := e.container(t, "alpha")
	if c.Status != runtime.TaskRunning || c.Labels[LabelBot] != "alpha" || c.Labels[labelDesired] != desiredRunning || c.Labels[labelEnvNames] != "A,B" {
		t.Errorf("container = %+v", c)
	}
	if got := e.waitedFor(); !slices.Equal(got, []string{"alpha"}) {
		t.Errorf("waited for the agents of %v, want [alpha]", got)
	}
	if st, err := os.Stat(e.m.runDir("alpha")); err != nil || !st.IsDir() {
		t.Errorf("agent directory: %v", err)
	}

	again, err := e.m.Create(t.Context(), CreateRequest{BotID: "alpha"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || again.Workspace.PID != c.PID {
		t.Errorf("second create = %+v, want the existing workspace (pid %d)", again, c.PID)
	}
	if got := e.waitedFor(); len(got) != 1 {
		t.Errorf("the second create started something: waited for %v", got)
	}
}

// A create that fails at any step leaves nothing behind, and the next
// create of the same bot succeeds.
func TestCreateRollbackOnFake(t *testing.T) {
	boom := errors.New("injected failure")
	for _, step := range []string{"EnsureImage", "CreateContainer", "SetLabels", "StartTask", "agent"} {
		t.Run(step, func(t *testing.T) {
			e := newFakeEnv(t)
			if step == "agent" {
				e.setAgentWait(func(string) error { return boom })
			} else {
				e.rt.SetHook(func(op, _ string) error {
					if op == step {
						return boom
					}
					return nil
				})
			}
			_, err := e.m.Create(t.Context(), CreateRequest{BotID: "alpha"}, nil)
			if !errors.Is(err, boom) {
				t.Fatalf("create with a failing %s: %v, want the failure", step, err)
			}
			e.wantNothingOf(t, "alpha")

			e.rt.SetHook(nil)
			e.setAgentWait(nil)
			if ws := e.create(t, "alpha"); ws.Status != "running" {
				t.Errorf("create after the failure: %+v", ws)
			}
		})
	}
}

func TestDeleteOnFake(t *testing.T) {
	t.Run("everything", func(t *testing.T) {
		e := newFakeEnv(t)
		e.create(t, "alpha")
		e.create(t, "bravo")
		for range 2 {
			if _, err := e.m.CreateSnapshot(t.Context(), "alpha", "", nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.delete(t, "alpha", DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.wantNothingOf(t, "alpha")
		if c := e.container(t, "bravo"); c.Status != runtime.TaskRunning {
			t.Errorf("deleting alpha touched bravo: %+v", c)
		}
	})
	t.Run("keep snapshots", func(t *testing.T) {
		e := newFakeEnv(t)
		e.create(t, "alpha")
		if _, err := e.m.CreateSnapshot(t.Context(), "alpha", "keep", nil); err != nil {
			t.Fatal(err)
		}
		if err := e.delete(t, "alpha", DeleteOptions{KeepSnapshots: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.rt.Container(t.Context(), "alpha"); !errdefs.IsNotFound(err) {
			t.Errorf("container left: %v", err)
		}
		snaps, err := e.rt.ListSnapshots(t.Context(), runtimetest.DefaultSnapshotter, LabelBot, "alpha")
		if err != nil || len(snaps) != 1 || snaps[0].Labels[labelSnapName] != "keep" {
			t.Errorf("snapshots after delete with keep: %+v %v, want version 1", snaps, err)
		}
	})
	// Preserving /data goes through the agent; when it fails, delete must
	// not have removed anything. A stopped workspace is started for it.
	for _, stopped := range []bool{false, true} {
		t.Run(fmt.Sprintf("preserve fails, stopped=%v", stopped), func(t *testing.T) {
			e := newFakeEnv(t)
			e.create(t, "alpha")
			if _, err := e.m.CreateSnapshot(t.Context(), "alpha", "", nil); err != nil {
				t.Fatal(err)
			}
			if stopped {
				if _, err := e.m.Stop(t.Context(), "alpha", 0); err != nil {
					t.Fatal(err)
				}
			}
			err := e.delete(t, "alpha", DeleteOptions{PreserveData: true})
			if err == nil || !strings.Contains(err.Error(), "nothing was deleted") {
				t.Fatalf("delete with a failing preserve: %v, want a refusal that says nothing was deleted", err)
			}
			c := e.container(t, "alpha")
			if c.Status != runtime.TaskRunning {
				t.Errorf("workspace after the failed preserve is %s, want running (started to preserve)", c.Status)
			}
			if snaps, _ := e.rt.ListSnapshots(t.Context(), runtimetest.DefaultSnapshotter, LabelBot, "alpha"); len(snaps) != 1 {
				t.Errorf("snapshots after the failed preserve: %+v", snaps)
			}
			if e.m.HasPreservedData("alpha") {
				t.Error("a failed preserve left a backup")
			}
			if got := e.waitedFor(); stopped && len(got) != 2 {
				t.Errorf("waited for agents %v: the stopped workspace should have been started to preserve", got)
			}
		})
	}
}

// A restarted berth leaves running workspaces alone, keeps stopped ones
// stopped and restarts those that died (or lost their task) while it was
// away.
func TestReconcileOnFake(t *testing.T) {
	e := newFakeEnv(t)
	ctx := t.Context()
	for _, bot := range []string{"running", "stopped", "died", "rebooted"} {
		e.create(t, bot)
	}
	if _, err := e.m.Stop(ctx, "stopped", 0); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Exit("died", 137); err != nil {
		t.Fatal(err)
	}
	// A host reboot leaves the container without a task, still meant to run.
	if err := e.rt.StopTask(ctx, "rebooted", time.Second); err != nil {
		t.Fatal(err)
	}
	runningPID := e.container(t, "running").PID

	var mu sync.Mutex
	started := map[string]int{}
	e.rt.SetHook(func(op, id string) error {
		if op == "StartTask" {
			mu.Lock()
			started[id]++
			mu.Unlock()
		}
		return nil
	})
	m2 := e.newManager(t)
	if err := m2.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"died": 1, "rebooted": 1}; fmt.Sprint(started) != fmt.Sprint(want) {
		t.Errorf("reconcile started %v, want %v", started, want)
	}
	if c := e.container(t, "running"); c.Status != runtime.TaskRunning || c.PID != runningPID {
		t.Errorf("running workspace after reconcile: %+v, want it untouched (pid %d)", c, runningPID)
	}
	if c := e.container(t, "stopped"); c.Status == runtime.TaskRunning || c.Labels[labelDesired] != desiredStopped {
		t.Errorf("stopped workspace after reconcile: %+v, want it stopped", c)
	}
	for _, bot := range []string{"died", "rebooted"} {
		if c := e.container(t, bot); c.Status != runtime.TaskRunning {
			t.Errorf("%s after reconcile is %s, want running", bot, c.Status)
		}
	}
}

// Mutations of one bot wait for each other; other bots' do not wait.
func TestLockingOnFake(t *testing.T) {
	e := newFakeEnv(t)
	ctx := t.Context()
	e.create(t, "alpha")
	e.create(t, "bravo")
	for _, bot := range []string{"alpha", "bravo"} {
		if _, err := e.m.Stop(ctx, bot, 0); err != nil {
			t.Fatal(err)
		}
	}

	alphaIn, alphaRelease, bravoIn := make(chan struct{}), make(chan struct{}), make(chan struct{})
	e.setAgentWait(func(bot string) error {
		switch bot {
		case "alpha":
			close(alphaIn)
			<-alphaRelease
		case "bravo":
			close(bravoIn)
		}
		return nil
	})
	startErr := make(chan error, 1)
	go func() { _, err := e.m.Start(ctx, "alpha"); startErr <- err }()
	<-alphaIn

	// While alpha's start waits for its agent, nothing else may touch alpha.
	var mu sync.Mutex
	var during []string
	e.rt.SetHook(func(op, id string) error {
		if id == "alpha" {
			mu.Lock()
			during = append(during, op)
			mu.Unlock()
		}
		return nil
	})
	stopErr := make(chan error, 1)
	go func() { _, err := e.m.Stop(ctx, "alpha", 0); stopErr <- err }()

	// bravo starts while alpha's lock is held.
	bravoErr := make(chan error, 1)
	go func() { _, err := e.m.Start(ctx, "bravo"); bravoErr <- err }()
	select {
	case <-bravoIn:
	case <-time.After(time.Minute):
		t.Fatal("bravo's start waited for alpha's")
	}
	if err := <-bravoErr; err != nil {
		t.Fatal(err)
	}

	// Wait until the stop of alpha is queued on alpha's lock, then check it
	// did nothing before it got there.
	for {
		e.m.locks.mu.Lock()
		l := e.m.locks.locks["alpha"]
		queued := l != nil && l.refs == 2
		e.m.locks.mu.Unlock()
		if queued {
			break
		}
		select {
		case err := <-stopErr:
			t.Fatalf("the stop of alpha finished while alpha's start held its lock: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	e.rt.SetHook(nil)
	mu.Lock()
	if len(during) > 0 {
		t.Errorf("while alpha's start held its lock, alpha saw %v", during)
	}
	mu.Unlock()

	close(alphaRelease)
	if err := <-startErr; err != nil {
		t.Fatal(err)
	}
	if err := <-stopErr; err != nil {
		t.Fatal(err)
	}
	// The stop ran after the start, whole: alpha ends stopped.
	if c := e.container(t, "alpha"); c.Status == runtime.TaskRunning || c.Labels[labelDesired] != desiredStopped {
		t.Errorf("alpha after start then stop: %+v", c)
	}
	if c := e.container(t, "bravo"); c.Status != runtime.TaskRunning {
		t.Errorf("bravo after its start: %+v", c)
	}
}

// A rollback first saves the current state, then restarts the workspace on
// the version, which stays until nothing builds on it; a stopped workspace
// is rolled back without being started.
func TestRollbackOnFake(t *testing.T) {
	e := newFakeEnv(t)
	ctx := t.Context()
	e.create(t, "alpha")
	v1, err := e.m.CreateSnapshot(ctx, "alpha", "first", nil)
	if err != nil {
		t.Fatal(err)
	}
	ws, pre, err := e.m.Rollback(ctx, "alpha", v1.Version, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pre.Version != 2 || pre.Source != SourcePreRollback || ws.Status != "running" {
		t.Errorf("rollback = %+v, pre %+v: want a running workspace and version 2 saved before it", ws, pre)
	}
	lin, err := e.m.ListSnapshots(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if lin.BasedOn != 1 || len(lin.Versions) != 2 {
		t.Errorf("lineage after rollback: %+v, want based on 1 with versions 1 and 2", lin)
	}
	if err := e.m.DeleteSnapshot(ctx, "alpha", 1); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("delete of the version the workspace builds on: %v, want FailedPrecondition", err)
	}
	if _, _, err := e.m.Rollback(ctx, "alpha", 9, nil); !errdefs.IsNotFound(err) {
		t.Errorf("rollback to a missing version: %v, want NotFound", err)
	}

	if _, err := e.m.Stop(ctx, "alpha", 0); err != nil {
		t.Fatal(err)
	}
	waits := len(e.waitedFor())
	ws, _, err = e.m.Rollback(ctx, "alpha", 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ws.Status == "running" || len(e.waitedFor()) != waits {
		t.Errorf("rollback of a stopped workspace started it: %+v", ws)
	}
	// The state saved before it (version 3) builds on version 1, and so
	// does version 2 (the changes since version 1), on which the workspace
	// now builds: version 3 goes, version 1 stays.
	if err := e.m.DeleteSnapshot(ctx, "alpha", 3); err != nil {
		t.Errorf("delete version 3: %v", err)
	}
	if err := e.m.DeleteSnapshot(ctx, "alpha", 1); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("delete of version 1 under version 2: %v, want FailedPrecondition", err)
	}
}
