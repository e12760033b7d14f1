package testenv

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
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
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Logf("testenv: %v", err)
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountPath(fields[4])
		if p == dir || strings.HasPrefix(p, dir+string(filepath.Separator)) {
			out = append(out, p)
		}
	}
	if err := sc.Err(); err != nil {
		t.Logf("testenv: reading mountinfo: %v", err)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
