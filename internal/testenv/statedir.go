package testenv

import (
	"os"
	"sort"
	"syscall"
	"testing"

	"github.com/moby/sys/mountinfo"
)

// StateDir makes a state directory for one berth under /tmp (short, since
// agent sockets live below it) and removes it when the test ends, after
// unmounting what berth mounted below it: the network namespaces of
// workspaces the test did not delete would otherwise stay bound there,
// each keeping its namespace and veth pair alive on the host after the
// test. Register it before anything that must be cleaned up first (the
// containerd namespace, the berth process): cleanups run last-in first-out.
func StateDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "be")
	if err != nil {
		t.Fatal(err)
	}
	// Failures are logged, not failed: a berth that is still exiting may
	// write below dir while it goes, and that is no fault of the test.
	t.Cleanup(func() {
		for _, m := range mountsBelow(t, dir) {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
				t.Logf("testenv: unmount %s: %v", m, err)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("testenv: remove state dir: %v", err)
		}
	})
	return dir
}

// mountsBelow lists the mount points at or below dir, deepest first.
func mountsBelow(t testing.TB, dir string) []string {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Logf("testenv: reading mountinfo: %v", err)
		return nil
	}
	out := make([]string, 0, len(mounts))
	for _, m := range mounts {
		out = append(out, m.Mountpoint)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}
