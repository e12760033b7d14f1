package server

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func ownerOf(t *testing.T, p string) uint32 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

// TestPrepareDataDir: a workspace whose user is not root gets its data
// directory, whether it is missing or root's; someone else's directory and
// a symlink are left alone.
func TestPrepareDataDir(t *testing.T) {
	nobody := &Credential{UID: 65534, GID: 65534}
	runnerFor := func(dir string, cred *Credential) *runner {
		s := &server{opts: Options{DataDir: dir, User: cred}}
		return &runner{s: s}
	}
	base := t.TempDir()

	missing := filepath.Join(base, "missing", "data")
	if err := runnerFor(missing, nobody).prepareDataDir(); err != nil {
		t.Fatal(err)
	}
	if ownerOf(t, missing) != 65534 {
		t.Fatalf("a created data dir must belong to the user, got uid %d", ownerOf(t, missing))
	}

	rootOwned := filepath.Join(base, "root-owned")
	if err := os.Mkdir(rootOwned, 0o755); err != nil {
		t.Fatal(err)
	}
	inside := filepath.Join(rootOwned, "keep")
	if err := os.WriteFile(inside, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runnerFor(rootOwned, nobody).prepareDataDir(); err != nil {
		t.Fatal(err)
	}
	if ownerOf(t, rootOwned) != 65534 || ownerOf(t, inside) != 0 {
		t.Fatalf("root's data dir must go to the user, its contents stay: dir %d, file %d", ownerOf(t, rootOwned), ownerOf(t, inside))
	}

	other := filepath.Join(base, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := runnerFor(other, nobody).prepareDataDir(); err != nil {
		t.Fatal(err)
	}
	if ownerOf(t, other) != 1000 {
		t.Fatalf("a data dir someone else owns must stay theirs, got uid %d", ownerOf(t, other))
	}

	target := filepath.Join(base, "target")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := runnerFor(link, nobody).prepareDataDir(); err == nil {
		t.Fatal("a data dir that is a symlink must be refused")
	}
	if ownerOf(t, target) != 0 {
		t.Fatal("the symlink's target changed owner")
	}

	rootUser := filepath.Join(base, "root-user")
	if err := runnerFor(rootUser, &Credential{}).prepareDataDir(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rootUser); !os.IsNotExist(err) {
		t.Fatal("a root workspace's data dir is left to the image")
	}
}
