package imagebuild

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/binary"
)

// BusyboxRootfs creates in dir (which must be empty or absent) a minimal root
// filesystem around the static busybox binary at busyboxPath (Debian's
// busybox-static installs one at /bin/busybox): /bin/busybox and a symlink for
// each of its applets, /sbin, /usr/bin and /usr/sbin as links to /bin so that
// every usual PATH entry and `#!/usr/bin/env` work, root and nobody accounts,
// and the directories a workspace expects (/tmp, /root, /data, mount points
// for /proc, /sys and /dev).
func BusyboxRootfs(dir, busyboxPath string) error {
	if err := checkStatic(busyboxPath); err != nil {
		return err
	}
	applets, err := busyboxApplets(busyboxPath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("busybox rootfs: %s is not empty", dir)
	}

	for _, d := range []struct {
		name string
		mode os.FileMode
	}{
		{"bin", 0o755}, {"etc", 0o755}, {"usr", 0o755}, {"root", 0o700},
		{"tmp", 0o777 | os.ModeSticky}, {"data", 0o755}, {"proc", 0o555}, {"sys", 0o555},
		{"dev", 0o755}, {"run", 0o755}, {"var", 0o755}, {"var/tmp", 0o777 | os.ModeSticky},
	} {
		p := filepath.Join(dir, d.name)
		if err := os.Mkdir(p, d.mode); err != nil {
			return err
		}
		// Mkdir is subject to the umask; sticky and world-writable bits
		// must survive it.
		if err := os.Chmod(p, d.mode); err != nil {
			return err
		}
	}
	for link, target := range map[string]string{
		"sbin":     "bin",
		"usr/bin":  "../bin",
		"usr/sbin": "../bin",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			return err
		}
	}

	if err := copyFile(filepath.Join(dir, "bin", "busybox"), busyboxPath, 0o755); err != nil {
		return err
	}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			return err
		}
	}

	for name, content := range map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":    "root:x:0:\nnogroup:x:65534:\n",
		"etc/hostname": "berth\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// checkStatic rejects a dynamically linked busybox: the rootfs has no libc,
// so such a binary would fail in the container with a baffling "not found".
func checkStatic(path string) error {
	static, err := binary.IsStatic(path)
	if err != nil {
		return fmt.Errorf("busybox: %w", err)
	}
	if !static {
		return fmt.Errorf("busybox %s is dynamically linked; install Debian's busybox-static", path)
	}
	return nil
}

// busyboxApplets asks the binary for its applets, since builds differ.
func busyboxApplets(path string) ([]string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(path, "--list")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		// Guard against odd output: each name becomes a path under /bin.
		if a == "busybox" || strings.ContainsAny(a, "/\x00") || a == "." || a == ".." {
			continue
		}
		applets = append(applets, a)
	}
	if len(applets) == 0 {
		return nil, errors.New(path + " --list printed no applets")
	}
	return applets, nil
}

func copyFile(dst, src string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
