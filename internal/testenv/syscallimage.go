package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// SyscallsRef names the test image that holds the syscalls helper
// (internal/testenv/syscalls) on top of busybox.
const SyscallsRef = "docker.io/berth-test/syscalls:latest"

// SyscallsPath is where the helper is in that image.
const SyscallsPath = "/usr/local/bin/berth-syscalls"

const syscallsArchiveFormat = "syscalls-v1"

var syscallsArchive struct {
	once sync.Once
	path string
	err  error
}

// SyscallsArchive returns the path of an OCI archive holding an image named
// SyscallsRef: busybox with the helper at SyscallsPath, built static. Like
// BusyboxArchive, it is cached under the temp directory.
func SyscallsArchive(t testing.TB) string {
	t.Helper()
	syscallsArchive.once.Do(func() {
		var bin string
		bin, syscallsArchive.err = buildStaticHelper("./internal/testenv/syscalls", "berth-syscalls")
		if syscallsArchive.err == nil {
			syscallsArchive.path, syscallsArchive.err = buildArchive(syscallsArchiveFormat, "syscalls", SyscallsRef,
				[]imageFile{{path: SyscallsPath, src: bin, mode: 0o755}})
		}
	})
	if syscallsArchive.err != nil {
		t.Fatalf("build the syscalls test image: %v", syscallsArchive.err)
	}
	return syscallsArchive.path
}

// buildStaticHelper builds the package pkg of this module with
// CGO_ENABLED=0 into the testenv cache, named by its digest so a path never
// changes content while another test process runs it.
func buildStaticHelper(pkg, name string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("test helpers are built with the go command: %w", err)
	}
	root, err := moduleRoot(goBin)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), "berth-testenv")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmpDir, err := os.MkdirTemp(dir, name+"-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, name)
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", tmp, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out.Bytes())
	}
	sum, err := fileDigest(tmp)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name+"-"+sum[:16])
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return path, os.Rename(tmp, path)
}
