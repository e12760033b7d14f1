// Package nslock makes sure one berth at a time serves a containerd
// namespace. Two berths on one namespace would both reconcile, restart and
// clean up the same workspaces, each undoing the other's work in progress.
//
// The lock is an flock on a file named after the containerd address and
// the namespace in a host-wide directory (not the state directory: two
// berths with different state directories must still meet). The kernel
// releases it when its holder exits, however it exits, so a crashed berth
// never blocks the next one. The file holds a line saying who holds it, for
// the refusal message. It does not guard anything beyond this host, which
// is all berth supports: it bind-mounts host directories into workspaces.
//
// This package owns only the lock; it must not talk to containerd.
package nslock

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultDir is where the locks live: under /run, so a reboot clears them.
const DefaultDir = "/run/berth/namespaces"

// ErrHeld is returned (wrapped, with the holder) when another process
// holds the namespace.
var ErrHeld = errors.New("containerd namespace is served by another berth")

// Lock is a held namespace.
type Lock struct {
	f    *os.File
	path string
}

// Path is the lock file.
func (l *Lock) Path() string { return l.path }

// Release gives the namespace up.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the only descriptor drops the flock
	l.f = nil
	return err
}

// Acquire takes the namespace of the containerd at address for this
// process, describing itself as holder; it fails at once with ErrHeld,
// naming the holder, if another process has it.
func Acquire(dir, address, namespace, holder string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("namespace lock directory: %w", err)
	}
	path := filepath.Join(dir, key(address, namespace)+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("namespace lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			who, _ := io.ReadAll(io.LimitReader(f, 4096))
			return nil, fmt.Errorf("%w: namespace %q of containerd %s is held by %s (lock %s); stop that berth, or give this one another --namespace",
				ErrHeld, namespace, address, cmp.Or(strings.TrimSpace(string(who)), "a berth starting up"), path)
		}
		return nil, fmt.Errorf("namespace lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(holder+"\n"), 0)
	}
	return &Lock{f: f, path: path}, nil
}

// key names the lock of a namespace: the same for every spelling of the
// containerd address that leads to the same socket path.
func key(address, namespace string) string {
	addr := strings.TrimPrefix(address, "unix://")
	if abs, err := filepath.Abs(addr); err == nil {
		addr = abs
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(addr)); err == nil {
		addr = filepath.Join(dir, filepath.Base(addr))
	}
	sum := sha256.Sum256([]byte(addr + "\x00" + namespace))
	return hex.EncodeToString(sum[:12])
}
