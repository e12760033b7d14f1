package nslock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func holder(pid int, stateDir string) Holder {
	return Holder{PID: pid, Host: "h", Transport: "stdio", StateDir: stateDir, Since: time.Unix(0, 0)}
}

// TestAcquire: a second holder of the same namespace is refused with the
// first's description, other namespaces and other containerds are free,
// and the namespace is free again once released.
func TestAcquire(t *testing.T) {
	dir := t.TempDir()
	sockDir := t.TempDir()
	sock := filepath.Join(sockDir, "containerd.sock")
	a, err := Acquire(dir, sock, "berth", holder(1, "/a"))
	if err != nil {
		t.Fatal(err)
	}
	// The same socket through a symlinked directory and a unix:// prefix.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(sockDir, link); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "unix://"+filepath.Join(link, "containerd.sock"), "berth", holder(2, "/b"))
	var held *HeldError
	if !errors.Is(err, ErrHeld) || !errors.As(err, &held) || !strings.Contains(err.Error(), "berth pid 1 on h (serve --stdio, state dir /a") {
		t.Fatalf("second berth on the namespace: %v; want ErrHeld naming berth A", err)
	}
	if held.Holder.PID != 1 || held.Holder.StateDir != "/a" || held.Path != a.Path() {
		t.Errorf("refusal carries %+v, want berth A's record and lock", held)
	}
	other, err := Acquire(dir, sock, "other", holder(3, "/c"))
	if err != nil {
		t.Fatalf("another namespace: %v", err)
	}
	other.Release()
	elsewhere, err := Acquire(dir, filepath.Join(t.TempDir(), "containerd.sock"), "berth", holder(4, "/d"))
	if err != nil {
		t.Fatalf("another containerd: %v", err)
	}
	elsewhere.Release()
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	b, err := Acquire(dir, sock, "berth", holder(2, "/b"))
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	if h, isHeld, err := Read(b.Path()); err != nil || !isHeld || h.PID != 2 {
		t.Errorf("lock file names %+v (held %v, %v), want the new holder", h, isHeld, err)
	}
	b.Release()
}

// TestUpdateAndRead: an HTTP holder's record, updated once it listens, is
// what Read and a refused berth see; a released lock reads as free.
func TestUpdateAndRead(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	h := Holder{PID: 7, Host: "h", Transport: "http", StateDir: "/s", HTTPAddr: "127.0.0.1:0", TokenFile: "/s/token"}
	l, err := Acquire(dir, sock, "berth", h)
	if err != nil {
		t.Fatal(err)
	}
	h.HTTPAddr, h.Listening = "127.0.0.1:41234", true
	if err := l.Update(h); err != nil {
		t.Fatal(err)
	}
	got, isHeld, err := Read(l.Path())
	if err != nil || !isHeld || got.HTTPAddr != "127.0.0.1:41234" || !got.Listening || got.TokenFile != "/s/token" {
		t.Fatalf("Read: %+v held=%v %v", got, isHeld, err)
	}
	var held *HeldError
	if _, err := Acquire(dir, sock, "berth", holder(8, "/t")); !errors.As(err, &held) || held.Holder.HTTPAddr != "127.0.0.1:41234" ||
		!strings.Contains(err.Error(), "serve --http 127.0.0.1:41234") {
		t.Fatalf("refusal: %v", err)
	}
	l.Release()
	if _, isHeld, err := Read(l.Path()); err != nil || isHeld {
		t.Fatalf("after release: held=%v %v", isHeld, err)
	}
}

// TestOldRecord: a plain line from an older berth is shown as it is.
func TestOldRecord(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	l, err := Acquire(dir, sock, "berth", holder(1, "/a"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if err := os.WriteFile(l.Path(), []byte("berth pid 9 (old)\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var held *HeldError
	if _, err := Acquire(dir, sock, "berth", holder(2, "/b")); !errors.As(err, &held) || held.Holder.PID != 0 ||
		!strings.Contains(err.Error(), "held by berth pid 9 (old) (lock") {
		t.Fatalf("refusal: %v", err)
	}
}
