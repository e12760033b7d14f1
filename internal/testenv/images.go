package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/berth-dev/berth/internal/imagebuild"
)

// BusyboxRef names the busybox test image in archives and after import.
const BusyboxRef = "docker.io/berth-test/busybox:latest"

// EnvBusybox names the variable that overrides the static busybox binary the
// test image is built from.
const EnvBusybox = "BERTH_TEST_BUSYBOX"

const defaultBusybox = "/bin/busybox"

// archiveFormat changes whenever the image BusyboxArchive builds changes for
// the same busybox binary, so stale cached archives are not reused.
const archiveFormat = "busybox-v1"

// busyboxCreated pins the image's timestamps so that every build of the
// archive from the same binary has the same digest, and re-imports are no-ops.
var busyboxCreated = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

var busybox struct {
	once sync.Once
	path string
	err  error
}

// BusyboxPath returns the static busybox binary test images are built from.
func BusyboxPath() string {
	if p := os.Getenv(EnvBusybox); p != "" {
		return p
	}
	return defaultBusybox
}

// BusyboxArchive returns the path of an OCI archive holding a busybox image
// named BusyboxRef, with the usual PATH. It is built once per binary and
// cached under the temp directory, so every test process after the first
// reuses it.
func BusyboxArchive(t testing.TB) string {
	t.Helper()
	busybox.once.Do(func() {
		busybox.path, busybox.err = buildBusyboxArchive()
	})
	if busybox.err != nil {
		t.Fatalf("build busybox test image: %v (run `scripts/containerd.sh install` to get busybox-static)", busybox.err)
	}
	return busybox.path
}

func buildBusyboxArchive() (string, error) {
	return buildArchive(archiveFormat, "busybox", BusyboxRef, nil)
}

// imageFile is a host file to copy into a test image.
type imageFile struct {
	path string // absolute path in the image
	src  string // path on the host
	mode os.FileMode
}

// buildArchive builds an OCI archive of the busybox root filesystem plus
// extra, named ref, and caches it in the temp directory as prefix-KEY.tar.
// KEY covers format (which names what the caller puts in the image), the
// busybox binary and the extra files, so an archive is reused exactly when
// the same build would give the same image.
func buildArchive(format, prefix, ref string, extra []imageFile) (string, error) {
	bin := BusyboxPath()
	sum, err := fileDigest(bin)
	if err != nil {
		return "", err
	}
	keyText := format + "\x00" + sum
	for _, f := range extra {
		d, err := fileDigest(f.src)
		if err != nil {
			return "", err
		}
		keyText += fmt.Sprintf("\x00%s\x00%o\x00%s", f.path, f.mode, d)
	}
	dir := filepath.Join(os.TempDir(), "berth-testenv")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	key := sha256.Sum256([]byte(keyText))
	path := filepath.Join(dir, prefix+"-"+hex.EncodeToString(key[:8])+".tar")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}

	rootfs, err := os.MkdirTemp(dir, "rootfs-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(rootfs)
	if err := imagebuild.BusyboxRootfs(rootfs, bin); err != nil {
		return "", err
	}
	for _, f := range extra {
		if err := copyIntoRootfs(rootfs, f); err != nil {
			return "", err
		}
	}
	// Test binaries run in parallel, one process per package: build under a
	// private name and rename, so a reader never sees half an archive.
	tmp, err := os.CreateTemp(dir, prefix+"-*.tar.tmp")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	err = imagebuild.WriteArchive(context.Background(), tmp, rootfs, ref, imagebuild.Config{
		Env:     []string{imagebuild.DefaultPathEnv},
		Created: busyboxCreated,
	})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

// copyIntoRootfs copies f into the root filesystem at rootfs, creating the
// parent directories it lacks with mode 0755.
func copyIntoRootfs(rootfs string, f imageFile) error {
	if !filepath.IsAbs(f.path) || filepath.Clean(f.path) != f.path || f.path == "/" {
		return fmt.Errorf("image path %q is not a clean absolute file path", f.path)
	}
	dst := filepath.Join(rootfs, f.path)
	var missing []string
	for d := filepath.Dir(dst); d != rootfs; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		// Chmod too: Mkdir is subject to the umask, and a tight one would
		// hide the file from the image's non-root users.
		if err := os.Mkdir(missing[i], 0o755); err != nil {
			return err
		}
		if err := os.Chmod(missing[i], 0o755); err != nil {
			return err
		}
	}
	in, err := os.Open(f.src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	// OpenFile's mode is subject to the umask.
	return os.Chmod(dst, f.mode)
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ImportArchive imports the OCI archive at archivePath into namespace of the
// containerd at address, unpacks it for Snapshotter, and returns the name of
// the (first) image it holds.
func ImportArchive(t testing.TB, address, namespace, archivePath string) string {
	t.Helper()
	name, err := importArchive(address, namespace, archivePath)
	if err != nil {
		t.Fatalf("import %s into containerd namespace %s: %v", archivePath, namespace, err)
	}
	return name
}

func importArchive(address, namespace, archivePath string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctx = namespaces.WithNamespace(ctx, namespace)

	c, err := client.New(address, client.WithTimeout(10*time.Second))
	if err != nil {
		return "", err
	}
	defer c.Close()

	f, err := os.Open(archivePath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// The default platform matcher is the host's, which is what the archive
	// was built for and what the snapshotter can run.
	imgs, err := c.Import(ctx, f)
	if err != nil {
		return "", err
	}
	if len(imgs) == 0 {
		return "", errors.New("archive names no image (index.json lacks an image name annotation)")
	}
	if err := client.NewImage(c, imgs[0]).Unpack(ctx, Snapshotter); err != nil {
		return "", fmt.Errorf("unpack %s: %w", imgs[0].Name, err)
	}
	return imgs[0].Name, nil
}
