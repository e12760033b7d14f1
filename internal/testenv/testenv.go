// Package testenv gives berth's tests real components to run against: the
// private containerd started by `make test` (scripts/containerd.sh), locally
// built test images, and an in-process registry on loopback.
//
// It is for tests only. It never mocks containerd and never skips: a test
// that needs containerd fails with directions when none is configured, so a
// green run always means the real thing was exercised.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// EnvContainerd names the variable that holds the socket of the containerd
// the tests use; `make test` sets it to the private daemon it starts.
const EnvContainerd = "BERTH_TEST_CONTAINERD"

// Snapshotter is the snapshotter test images are unpacked for; the test
// machines run overlayfs.
const Snapshotter = "overlayfs"

// ContainerdAddress returns the containerd socket the tests must use.
func ContainerdAddress(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(EnvContainerd)
	if addr == "" {
		t.Fatalf("%s is not set: run the tests with `make test`, which starts a private containerd "+
			"(or start one with `scripts/containerd.sh up DIR` and set %s=DIR/containerd.sock)",
			EnvContainerd, EnvContainerd)
	}
	return addr
}

// Client connects to the test containerd and closes the connection when the
// test ends.
func Client(t testing.TB) *client.Client {
	t.Helper()
	addr := ContainerdAddress(t)
	c, err := client.New(addr, client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatalf("connect to containerd at %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Namespace returns a containerd namespace unique to this test and removes
// everything in it (tasks, containers, images, leases, snapshots, content)
// when the test ends, so that tests neither see nor leak each other's state.
// Call it after Client, so that the cleanup runs before the client closes.
func Namespace(t testing.TB, c *client.Client) string {
	t.Helper()
	ns := uniqueNamespace(t.Name())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := removeNamespace(namespaces.WithNamespace(ctx, ns), c, ns); err != nil {
			t.Logf("testenv: cleaning up namespace %s: %v", ns, err)
		}
	})
	return ns
}

// uniqueNamespace derives a readable, valid namespace name from a test name.
// containerd allows [A-Za-z0-9] runs joined by single '.', '_' or '-', up to
// 76 characters.
func uniqueNamespace(testName string) string {
	var b strings.Builder
	dash := true
	for _, r := range strings.ToLower(testName) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	name := strings.TrimRight(b.String(), "-")
	if len(name) > 48 {
		name = strings.TrimRight(name[:48], "-")
	}
	var suffix [4]byte
	rand.Read(suffix[:])
	if name == "" {
		return "berth-test-" + hex.EncodeToString(suffix[:])
	}
	return "berth-test-" + name + "-" + hex.EncodeToString(suffix[:])
}

// removeNamespace deletes what a test left in ns, children before parents,
// because containerd refuses to delete a namespace that is not empty.
func removeNamespace(ctx context.Context, c *client.Client, ns string) error {
	var errs []error
	keep := func(err error) {
		if err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}

	containers, err := c.Containers(ctx)
	keep(err)
	for _, ctr := range containers {
		if task, err := ctr.Task(ctx, nil); err == nil {
			_ = task.Kill(ctx, syscall.SIGKILL, client.WithKillAll)
			_, err = task.Delete(ctx, client.WithProcessKill)
			keep(err)
		}
		keep(ctr.Delete(ctx, client.WithSnapshotCleanup))
	}

	is := c.ImageService()
	imgs, err := is.List(ctx)
	keep(err)
	for _, img := range imgs {
		keep(is.Delete(ctx, img.Name))
	}

	ls := c.LeasesService()
	all, err := ls.List(ctx)
	keep(err)
	for _, l := range all {
		keep(ls.Delete(ctx, l, leases.SynchronousDelete))
	}

	// Snapshots form chains; removing leaves repeatedly removes them all.
	// Stop when a round makes no progress, rather than loop forever.
	sn := c.SnapshotService(Snapshotter)
	for {
		var keys []string
		err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			keys = append(keys, info.Name)
			return nil
		})
		keep(err)
		removed := 0
		for _, k := range keys {
			// NotFound counts: containerd's own GC may have got there first.
			if err := sn.Remove(ctx, k); err == nil || errdefs.IsNotFound(err) {
				removed++
			}
		}
		if removed == len(keys) || removed == 0 {
			if removed == 0 && len(keys) > 0 {
				errs = append(errs, errors.New("cannot remove snapshots "+strings.Join(keys, ", ")))
			}
			break
		}
	}

	cs := c.ContentStore()
	var blobs []digest.Digest
	keep(cs.Walk(ctx, func(info content.Info) error {
		blobs = append(blobs, info.Digest)
		return nil
	}))
	for _, d := range blobs {
		keep(cs.Delete(ctx, d))
	}

	keep(c.NamespaceService().Delete(ctx, ns))
	return errors.Join(errs...)
}
