package runtime_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestContainerdSuite holds the containerd runtime to the behaviour the
// fake runtime is also held to, so tests written against the fake speak
// for containerd as far as the suite reaches.
func TestContainerdSuite(t *testing.T) {
	runtimetest.Suite(t, func(t *testing.T) runtimetest.Env {
		c := testenv.Client(t)
		ns := testenv.Namespace(t, c)
		addr := testenv.ContainerdAddress(t)
		archive := testenv.BusyboxArchive(t)
		img := testenv.ImportArchive(t, addr, ns, archive)
		r, err := runtime.NewContainerd(runtime.Options{Address: addr, Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return runtimetest.Env{
			Runtime: r, Image: img, Snapshotter: testenv.Snapshotter,
			Args: []string{"sleep", "3600"}, Archive: archive,
			Crash: func(t *testing.T, id string) {
				t.Helper()
				ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), time.Minute)
				defer cancel()
				ctr, err := c.LoadContainer(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				task, err := ctr.Task(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				exited, err := task.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				select {
				case <-exited:
				case <-ctx.Done():
					t.Fatal("the killed task did not exit")
				}
			},
		}
	})
}
