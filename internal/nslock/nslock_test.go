package nslock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAcquire: a second holder of the same namespace is refused with the
// first's description, other namespaces and other containerds are free,
// and the namespace is free again once released.
func TestAcquire(t *testing.T) {
	dir := t.TempDir()
	sockDir := t.TempDir()
	sock := filepath.Join(sockDir, "containerd.sock")
	a, err := Acquire(dir, sock, "berth", "pid 1 (berth A, state dir /a)")
	if err != nil {
		t.Fatal(err)
	}
	// The same socket through a symlinked directory and a unix:// prefix.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(sockDir, link); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "unix://"+filepath.Join(link, "containerd.sock"), "berth", "pid 2 (berth B, state dir /b)")
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "pid 1 (berth A, state dir /a)") {
		t.Fatalf("second berth on the namespace: %v; want ErrHeld naming berth A", err)
	}
	other, err := Acquire(dir, sock, "other", "c")
	if err != nil {
		t.Fatalf("another namespace: %v", err)
	}
	other.Release()
	elsewhere, err := Acquire(dir, filepath.Join(t.TempDir(), "containerd.sock"), "berth", "d")
	if err != nil {
		t.Fatalf("another containerd: %v", err)
	}
	elsewhere.Release()
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	b, err := Acquire(dir, sock, "berth", "pid 2")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	data, _ := os.ReadFile(b.Path())
	if string(data) != "pid 2\n" {
		t.Errorf("lock file names %q, want the new holder", data)
	}
	b.Release()
}
