package runtime

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// reapOrphanShim clears what containerd 1.6 leaves when its client dies
// in the middle of deleting a task: containerd forgets the task, but its
// shim keeps running and keeps the task's bundle directory, so every new
// task for the container fails with "already exists" until the host
// reboots. berth runs as root beside containerd, so it can finish the
// deletion itself: kill that one shim (matched by namespace, container id
// and this containerd's address), detach its rootfs mount and remove the
// bundle, which is the shim's working directory. A client that dies while
// the shim starts leaves the bundle without a shim; containerd's error
// then names the bundle, and that is removed the same way. Only called
// when containerd lists no task for the container.
func (r *Containerd) reapOrphanShim(namespace, id string, createErr error) (bool, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false, err
	}
	want := []string{"-namespace", namespace, "-id", id, "-address", r.opts.Address}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(raw, []byte("containerd-shim")) {
			continue
		}
		if !hasArgs(strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00"), want) {
			continue
		}
		bundle, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			return false, err
		}
		// Never remove anything but a runtime v2 bundle of this container.
		if filepath.Base(bundle) != id || filepath.Base(filepath.Dir(bundle)) != namespace ||
			!strings.Contains(bundle, "io.containerd.runtime.v2.task") {
			return false, fmt.Errorf("orphaned shim %d works in %s, which is not a task bundle; not touching it", pid, bundle)
		}
		_ = unix.Kill(pid, unix.SIGKILL)
		for range 50 {
			if _, err := os.Stat(filepath.Join("/proc", e.Name())); err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		return true, removeBundle(bundle)
	}
	if m := bundleExists.FindStringSubmatch(createErr.Error()); m != nil {
		bundle := m[1]
		if filepath.Base(bundle) == id && filepath.Base(filepath.Dir(bundle)) == namespace {
			return true, removeBundle(bundle)
		}
	}
	return false, nil
}

// bundleExists matches containerd's error for a leftover bundle directory.
var bundleExists = regexp.MustCompile(`mkdir (/\S*/io\.containerd\.runtime\.v2\.task/[^/\s]+/[^/\s:]+): file exists`)

func removeBundle(bundle string) error {
	_ = unix.Unmount(filepath.Join(bundle, "rootfs"), unix.MNT_DETACH)
	return os.RemoveAll(bundle)
}

// hasArgs reports whether args holds each flag of want followed by its value.
func hasArgs(args, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for j := 0; j+1 < len(args); j++ {
			if args[j] == want[i] && args[j+1] == want[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
