// Package nslock makes sure one berth at a time serves a containerd
// namespace. Two berths on one namespace would both reconcile, restart and
// clean up the same workspaces, each undoing the other's work in progress.
//
// The lock is an flock on a file named after the containerd address and
// the namespace in a host-wide directory (not the state directory: two
// berths with different state directories must still meet). The kernel
// releases it when its holder exits, however it exits, so a crashed berth
// never blocks the next one. The file holds a record of who holds it (a
// JSON line): for the refusal message, and so that a stdio berth refused
// the namespace can reach the holder's HTTP endpoint instead. It does not
// guard anything beyond this host, which is all berth supports: it
// bind-mounts host directories into workspaces.
//
// This package owns only the lock; it must not talk to containerd.
package nslock

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDir is where the locks live: under /run, so a reboot clears them.
const DefaultDir = "/run/berth/namespaces"

// ErrHeld is returned (wrapped in a *HeldError) when another process holds
// the namespace.
var ErrHeld = errors.New("containerd namespace is served by another berth")

// Holder describes the berth that holds a namespace.
type Holder struct {
	PID       int       `json:"pid"`
	Host      string    `json:"host"`
	Transport string    `json:"transport"` // "stdio" or "http"
	StateDir  string    `json:"state_dir"`
	Since     time.Time `json:"since"`
	// HTTPAddr is the address an HTTP berth was asked to listen on, then,
	// once it listens, the address it listens on (see Listening).
	HTTPAddr string `json:"http_addr,omitempty"`
	// Listening is set once HTTPAddr is the bound address: before that,
	// a port 0 or a host name says nothing about where to connect.
	Listening bool `json:"listening,omitempty"`
	// TokenFile is where the admin token of an HTTP berth is, when it took
	// it from a file; empty with NoAuth or a token from --token/BERTH_TOKEN.
	TokenFile string `json:"token_file,omitempty"`
	NoAuth    bool   `json:"no_auth,omitempty"`

	// raw is a record this package could not parse (an older berth's
	// plain line, or one caught half written), shown as it is.
	raw string
}

// String says who the holder is, for people.
func (h Holder) String() string {
	if h.PID == 0 {
		return cmp.Or(h.raw, "a berth starting up")
	}
	how := "--stdio"
	if h.Transport == "http" {
		how = "--http " + h.HTTPAddr
	}
	return fmt.Sprintf("berth pid %d on %s (serve %s, state dir %s, since %s)", h.PID, h.Host, how, h.StateDir, h.Since.UTC().Format(time.RFC3339))
}

// HeldError is the refusal: the namespace and who holds it.
type HeldError struct {
	Namespace, Address string
	Path               string // the lock file
	Holder             Holder
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%v: namespace %q of containerd %s is held by %s (lock %s); stop that berth, or give this one another --namespace",
		ErrHeld, e.Namespace, e.Address, e.Holder, e.Path)
}

func (e *HeldError) Unwrap() error { return ErrHeld }

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

// Update replaces the holder record, as when an HTTP berth has bound its
// address.
func (l *Lock) Update(h Holder) error {
	return writeRecord(l.f, h)
}

// Acquire takes the namespace of the containerd at address for this
// process, describing itself as holder; it fails at once with a
// *HeldError (wrapping ErrHeld) naming the holder, if another process has
// it.
func Acquire(dir, address, namespace string, holder Holder) (*Lock, error) {
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
			return nil, &HeldError{Namespace: namespace, Address: address, Path: path, Holder: readRecord(f)}
		}
		return nil, fmt.Errorf("namespace lock %s: %w", path, err)
	}
	_ = writeRecord(f, holder)
	return &Lock{f: f, path: path}, nil
}

// Read returns the record in the lock file at path and whether a process
// still holds the lock, without taking it.
func Read(path string) (h Holder, held bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return Holder{}, false, err
	}
	defer f.Close()
	// A shared lock is refused only while the holder's exclusive one lasts;
	// taken, it is dropped at once by the Close above.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		return Holder{}, false, nil
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		return Holder{}, false, err
	}
	return readRecord(f), true, nil
}

func writeRecord(f *os.File, h Holder) error {
	line, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err = f.WriteAt(append(line, '\n'), 0)
	return err
}

func readRecord(f *os.File) Holder {
	data, _ := io.ReadAll(io.LimitReader(io.NewSectionReader(f, 0, 4096), 4096))
	var h Holder
	if err := json.Unmarshal(data, &h); err != nil || h.PID == 0 {
		return Holder{raw: strings.TrimSpace(string(data))}
	}
	return h
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
