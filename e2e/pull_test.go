package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// TestPullWithProgress creates a workspace from an image that only the
// loopback registry has, and watches byte-level progress.
func TestPullWithProgress(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{BytesPerSecond: 8 << 20})
	ref := reg.PushRandomImage(t, "berth/pull:progress", 3, 2<<20)

	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			e := newEnv(t)
			c := cl.connect(e)
			var progress progressLog
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			res, err := c.call(ctx, "workspace_create", map[string]any{"bot_id": "pulled", "image": ref, "pull_policy": "always"}, progress.add)
			if err != nil {
				t.Fatal(err)
			}
			var out createOut
			res.decode(t, &out)
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

// TestPullCancelled cancels a create in the middle of a slow pull and
// checks that nothing is left: no workspace, no image, no blobs, no lease.
func TestPullCancelled(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{BytesPerSecond: 512 << 10})
	ref := reg.PushRandomImage(t, "berth/pull:cancel", 2, 4<<20)

	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			e := newEnv(t)
			blobsBefore := e.blobs(t)
			c := cl.connect(e)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			started := make(chan struct{})
			var once bool
			done := make(chan error, 1)
			go func() {
				_, err := c.call(ctx, "workspace_create", map[string]any{"bot_id": "cancelled", "image": ref}, func(ev progressEvent) {
					if ev.Progress > 0 && !once {
						once = true
						close(started)
					}
				})
				done <- err
			}()
			select {
			case <-started:
			case err := <-done:
				t.Fatalf("create ended before any bytes arrived: %v", err)
			case <-time.After(time.Minute):
				t.Fatal("no download progress within a minute")
			}
			cancel()
			if err := <-done; err == nil {
				t.Fatal("cancelled call returned no error")
			}

			// The server finishes its clean-up after the client gave up.
			deadline := time.Now().Add(30 * time.Second)
			for {
				leftovers := e.leftovers(t, blobsBefore, ref)
				if leftovers == "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("cancelled pull left %s", leftovers)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if res := mustCall(t, c, "workspace_get", map[string]any{"bot_id": "cancelled"}); !res.IsError {
				t.Fatalf("a cancelled create left a workspace: %s", res.Text)
			}
		})
	}
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
