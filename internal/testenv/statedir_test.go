package testenv

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestStateDirUnmountsWhatIsBelow: a network namespace bound below a state
// directory (here a tmpfs with a bind mount of a file on it, the way berth
// binds a namespace) is unmounted and the directory removed when the test
// that made it ends.
func TestStateDirUnmountsWhatIsBelow(t *testing.T) {
	var dir string
	t.Run("user", func(t *testing.T) {
		dir = StateDir(t)
		nsDir := filepath.Join(dir, "network", "netns")
		if err := os.MkdirAll(nsDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", nsDir, "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(nsDir, "bot")
		if err := os.WriteFile(target, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("/proc/self/ns/net", target, "", syscall.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		if got := mountsBelow(t, dir); len(got) != 2 || got[0] != target || got[1] != nsDir {
			t.Fatalf("mounts below %s: %q, want the namespace, then the tmpfs", dir, got)
		}
	})
	if got := mountsBelow(t, dir); len(got) != 0 {
		t.Fatalf("still mounted after the test: %q", got)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("state dir %s still there: %v", dir, err)
	}
}
