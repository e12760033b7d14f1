package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// TestPullWithProgress creates a workspace from an image that only the
// loopback registry has, and watches byte-level progress. The registry holds
// the pull after its first bytes until the client has seen them reported, so
// the test sees a pull midway however fast or busy the machine is.
func TestPullWithProgress(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})

	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			// An image per client: containerd shares blobs between
			// namespaces, so pulling the same image again would
			// transfer no bytes at all.
			ref := reg.PushRandomImage(t, "berth/pull:"+cl.name, 3, 2<<20)
			reg.HoldBlobs(256 << 10)
			defer reg.ReleaseBlobs()

			e := newEnv(t)
			c := cl.connect(e)
			var progress progressLog
			midway := make(chan struct{})
			var sawMidway sync.Once
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			type result struct {
				res *toolResult
				err error
			}
			done := make(chan result, 1)
			go func() {
				res, err := c.call(ctx, "workspace_create", map[string]any{"bot_id": "pulled", "image": ref, "pull_policy": "always"}, func(ev progressEvent) {
					progress.add(ev)
					if ev.Total > 0 && ev.Progress > 0 && ev.Progress < ev.Total {
						sawMidway.Do(func() { close(midway) })
					}
				})
				done <- result{res, err}
			}()
			select {
			case <-midway:
			case r := <-done:
				t.Fatalf("create ended while the registry held the pull (%v); progress %+v", r.err, progress.all())
			case <-ctx.Done():
				t.Fatalf("no byte progress while the registry held the pull midway; progress %+v", progress.all())
			}
			reg.ReleaseBlobs()
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			var out createOut
			r.res.decode(t, &out)
			if !out.Created || !out.Pulled || out.Workspace.Status != "running" {
				t.Fatalf("want a pulled, running workspace: %+v", out)
			}
			events := progress.all()
			var withBytes []progressEvent
			for _, ev := range events {
				if ev.Total > 0 {
					withBytes = append(withBytes, ev)
				}
			}
			if len(withBytes) < 2 {
				t.Fatalf("want several byte progress events, got %+v", events)
			}
			last := withBytes[len(withBytes)-1]
			// 3 layers of 2 MiB plus busybox: the total covers this image's blobs only.
			if last.Total < 6<<20 || last.Total > 16<<20 || last.Progress != last.Total {
				t.Fatalf("final progress %+v: want all of a 6-16 MiB image", last)
			}
			for i := 1; i < len(events); i++ {
				if events[i].Progress < events[i-1].Progress {
					t.Fatalf("progress went backwards: %+v then %+v", events[i-1], events[i])
				}
			}
		})
	}
}

// TestPullCancelled cancels a create in the middle of a pull and checks that
// nothing is left: no workspace, no image, no blobs, no lease. The registry
// holds the pull after its first bytes, so the cancel lands midway for certain.
func TestPullCancelled(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ref := reg.PushRandomImage(t, "berth/pull:cancel", 2, 4<<20)

	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			e := newEnv(t)
			c := cl.connect(e)
			cancelPullMidway(t, e, c, reg, ref, "cancelled")
			if res := mustCall(t, c, "workspace_get", map[string]any{"bot_id": "cancelled"}); !res.IsError {
				t.Fatalf("a cancelled create left a workspace: %s", res.Text)
			}
		})
	}
}

// cancelPullMidway creates bot's workspace from ref with a call that it
// cancels once the registry, holding the pull after its first bytes, has
// sent some: the cancel lands midway for certain. It returns once the server
// has cleaned up (no image, blobs or lease of the pull left).
func cancelPullMidway(t *testing.T, e *env, c mcpClient, reg *testenv.Registry, ref, bot string) {
	t.Helper()
	reg.HoldBlobs(256 << 10)
	defer reg.ReleaseBlobs()
	blobsBefore := e.blobs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		_, err := c.call(ctx, "workspace_create", map[string]any{"bot_id": bot, "image": ref}, func(ev progressEvent) {
			if ev.Progress > 0 {
				once.Do(func() { close(started) })
			}
		})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("create ended before any bytes arrived: %v", err)
	case <-time.After(3 * time.Minute):
		t.Fatal("no download progress within 3 minutes while the registry held the pull")
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("cancelled call returned no error")
	}
	// The server finishes its clean-up after the client gave up.
	waitFor(t, "the cancelled pull's clean-up", func() bool { return e.leftovers(t, blobsBefore, ref) == "" })
}

// blobs lists the digests in the env's content store.
func (e *env) blobs(t *testing.T) map[string]bool {
	t.Helper()
	c := testenv.Client(t)
	ctx := namespaces.WithNamespace(context.Background(), e.namespace)
	out := map[string]bool{}
	if err := c.ContentStore().Walk(ctx, func(info content.Info) error {
		out[info.Digest.String()] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// leftovers describes what a failed pull of ref left behind, or "".
func (e *env) leftovers(t *testing.T, blobsBefore map[string]bool, ref string) string {
	t.Helper()
	c := testenv.Client(t)
	ctx := namespaces.WithNamespace(context.Background(), e.namespace)
	if _, err := c.GetImage(ctx, ref); err == nil {
		return "an image record"
	}
	for d := range e.blobs(t) {
		if !blobsBefore[d] {
			return "blob " + d
		}
	}
	if ls, err := c.LeasesService().List(ctx); err == nil && len(ls) > 0 {
		return "a lease " + ls[0].ID
	}
	if ctrs, err := c.Containers(ctx); err == nil && len(ctrs) > 0 {
		return "a container " + ctrs[0].ID()
	}
	return ""
}
