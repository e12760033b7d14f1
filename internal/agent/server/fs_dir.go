package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// The agent runs as root inside a workspace whose files belong to the bot,
// and the bot's own processes can rename, swap and replace any of them
// while a file operation runs. A path checked and then used again is a
// different file by the time it is used (the attack was a loop of
// renameat2(RENAME_EXCHANGE) turning a directory into a symlink to
// /run/berth between the check and the rename). So every operation opens
// the directory it works in once, decides on that handle, and then does
// everything with *at calls on it: whatever happens to the path later, the
// handle stays the directory that was checked. Symlinks on the way to that
// directory are followed (the workspace's own, like /bin -> usr/bin, are
// legitimate); the final component of a change is never followed.

// fsID identifies a file: its device and inode.
type fsID struct{ dev, ino uint64 }

func fsIDOf(st *unix.Stat_t) fsID { return fsID{dev: uint64(st.Dev), ino: st.Ino} }

// fsDir is an open directory; its methods act on names in it.
type fsDir struct {
	f  *os.File
	fd int
	// path is what the directory was opened as, for messages and
	// results; it is never resolved again.
	path string
}

func fsNewDir(fd int, p string) *fsDir {
	return &fsDir{f: os.NewFile(uintptr(fd), p), fd: fd, path: p}
}

func (d *fsDir) Close() {
	if d != nil {
		_ = d.f.Close()
	}
}

// fsEINTR repeats a system call that a signal interrupted; the agent as
// PID 1 gets every forwarded signal.
func fsEINTR[T any](call func() (T, error)) (T, error) {
	for {
		v, err := call()
		if !errors.Is(err, unix.EINTR) {
			return v, err
		}
	}
}

// fsOpenDirAt opens name relative to dirfd as a directory. A final symlink
// is followed only with follow. Directories the agent may not read (an
// agent that is not root) are opened O_PATH, which is enough for *at calls.
func fsOpenDirAt(dirfd int, name string, follow bool, p string) (*fsDir, error) {
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := fsEINTR(func() (int, error) { return unix.Openat(dirfd, name, flags, 0) })
	if errors.Is(err, unix.EACCES) {
		fd, err = fsEINTR(func() (int, error) { return unix.Openat(dirfd, name, flags|unix.O_PATH, 0) })
	}
	if err != nil {
		if !follow && errors.Is(err, unix.ELOOP) {
			// O_NOFOLLOW on a symlink.
			err = unix.ENOTDIR
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	return fsNewDir(fd, p), nil
}

// fsOpenDir opens the directory p (absolute), following symlinks.
func fsOpenDir(p string) (*fsDir, error) {
	return fsOpenDirAt(unix.AT_FDCWD, p, true, p)
}

// fsParent opens the directory holding p's final component, following
// symlinks on the way, and returns that component. p is clean, absolute
// and not "/".
func fsParent(p string) (*fsDir, string, error) {
	dir, name := path.Dir(p), path.Base(p)
	d, err := fsOpenDir(dir)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, "", fsErrorf(wire.CodeNotFound, "directory %s does not exist", dir)
		case errors.Is(err, unix.ENOTDIR):
			return nil, "", fsErrorf(wire.CodeNotDirectory, "%s is not a directory", dir)
		}
		return nil, "", err
	}
	return d, name, nil
}

// join names an entry of d in messages.
func (d *fsDir) join(name string) string { return fsJoin(d.path, name) }

// realPath is where d is now, as the kernel sees it, for results that name
// the file that was really changed; d.path if that cannot be told.
func (d *fsDir) realPath() string {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(d.fd))
	if err != nil || !path.IsAbs(p) {
		return d.path
	}
	return p
}

func (d *fsDir) stat() (unix.Stat_t, error) {
	var st unix.Stat_t
	_, err := fsEINTR(func() (int, error) { return 0, unix.Fstat(d.fd, &st) })
	return st, err
}

// lstat describes name without following it.
func (d *fsDir) lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	_, err := fsEINTR(func() (int, error) { return 0, unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) })
	if err != nil {
		return st, &fs.PathError{Op: "lstat", Path: d.join(name), Err: err}
	}
	return st, nil
}

func (d *fsDir) openDir(name string) (*fsDir, error) {
	return fsOpenDirAt(d.fd, name, false, d.join(name))
}

// openFile opens name with flags, never following a final symlink.
func (d *fsDir) openFile(name string, flags int, mode uint32) (*os.File, error) {
	fd, err := fsEINTR(func() (int, error) {
		return unix.Openat(d.fd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.join(name), Err: err}
	}
	return os.NewFile(uintptr(fd), d.join(name)), nil
}

func (d *fsDir) readlink(name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(d.fd, name, buf)
		if err != nil {
			return "", &fs.PathError{Op: "readlink", Path: d.join(name), Err: err}
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

func (d *fsDir) mkdir(name string, mode uint32) error {
	if err := unix.Mkdirat(d.fd, name, mode); err != nil {
		return &fs.PathError{Op: "mkdir", Path: d.join(name), Err: err}
	}
	return nil
}

func (d *fsDir) unlink(name string, flags int) error {
	if err := unix.Unlinkat(d.fd, name, flags); err != nil {
		return &fs.PathError{Op: "remove", Path: d.join(name), Err: err}
	}
	return nil
}

func (d *fsDir) symlink(target, name string) error {
	if err := unix.Symlinkat(target, d.fd, name); err != nil {
		return &os.LinkError{Op: "symlink", Old: target, New: d.join(name), Err: err}
	}
	return nil
}

// rename renames name in d to toName in to, with renameat2 flags.
func (d *fsDir) rename(name string, to *fsDir, toName string, flags uint) error {
	if err := unix.Renameat2(d.fd, name, to.fd, toName, flags); err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(name), New: to.join(toName), Err: err}
	}
	return nil
}

// lchown gives name to uid:gid without following it. An agent that is not
// root (tests, rootless setups) cannot give files away and should still
// work, so there the failure is ignored.
func (d *fsDir) lchown(name string, uid, gid int) error {
	if uid < 0 && gid < 0 {
		return nil
	}
	if err := unix.Fchownat(d.fd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil && os.Geteuid() == 0 {
		return &fs.PathError{Op: "chown", Path: d.join(name), Err: err}
	}
	return nil
}

// setTimes sets name's modification time without following it; a failure
// costs a timestamp, not the operation.
func (d *fsDir) setTimes(name string, mtime time.Time) {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(mtime.UnixNano())}
	_ = unix.UtimesNanoAt(d.fd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// sync makes a rename or create in d durable. Failure is not reported:
// the operation itself succeeded and is visible; only its survival of a
// power cut is in doubt, which callers cannot act on.
func (d *fsDir) sync() { _ = unix.Fsync(d.fd) }

// names lists d's entries (without "." and "..").
func (d *fsDir) names() ([]string, error) {
	if _, err := d.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return d.f.Readdirnames(-1)
}

// fsSetupFD gives a newly created file, open as fd, its owner and mode
// (not the umask's): chown first, because chown clears setuid and setgid.
// Done on the descriptor, so a name swapped meanwhile changes nothing
// else. An O_PATH descriptor (a FIFO or device node, which must not be
// opened for real) takes its mode through /proc.
func fsSetupFD(fd int, mode uint32, uid, gid int) error {
	if uid >= 0 || gid >= 0 {
		if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil && os.Geteuid() == 0 {
			return &fs.PathError{Op: "chown", Path: "(new file)", Err: err}
		}
	}
	err := unix.Fchmod(fd, mode)
	if errors.Is(err, unix.EBADF) {
		err = unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode)
	}
	if err != nil {
		return &fs.PathError{Op: "chmod", Path: "(new file)", Err: err}
	}
	return nil
}

// createTemp creates a new hidden file in d named after base, for a
// rename over base once complete.
func (d *fsDir) createTemp(base string) (*os.File, string, error) {
	base = string(fsCutUTF8([]byte(base), 64))
	for range 100 {
		var rnd [6]byte
		_, _ = rand.Read(rnd[:])
		name := ".berth-" + base + "-" + hex.EncodeToString(rnd[:]) + ".tmp"
		f, err := d.openFile(name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, name, err
	}
	return nil, "", fmt.Errorf("creating a temporary file in %s: too many name collisions", d.path)
}

// tempName is a fresh hidden name in d for a copy of base.
func fsTempName(base string) string {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return ".berth-" + string(fsCutUTF8([]byte(base), 64)) + "-" + hex.EncodeToString(rnd[:]) + ".tmp"
}

// removeAll removes name from d and, if it is a directory, everything in
// it, descending through handles opened without following symlinks, so a
// symlink put anywhere in the tree meanwhile is removed, not followed.
// Directories that guard says belong to berth (a mount point inside the
// tree) stop the removal. An agent that is not root makes read-only
// directories writable to empty them.
func (d *fsDir) removeAll(name string, guard *fsProtect) error {
	err := unix.Unlinkat(d.fd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return &fs.PathError{Op: "remove", Path: d.join(name), Err: err}
	}
	if errors.Is(err, unix.EPERM) {
		// EISDIR on Linux, EPERM by POSIX; EPERM also for a file the
		// agent may not remove (sticky directory, immutable file).
		if st, serr := d.lstat(name); serr != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return &fs.PathError{Op: "remove", Path: d.join(name), Err: err}
		}
	}
	for attempt := 0; ; attempt++ {
		if err := d.emptyDir(name, guard); err != nil {
			return err
		}
		err := unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		// Something was created in it meanwhile: empty it again, a few
		// times, as os.RemoveAll does not even try.
		if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) || attempt >= 8 {
			return &fs.PathError{Op: "remove", Path: d.join(name), Err: err}
		}
	}
}

func (d *fsDir) emptyDir(name string, guard *fsProtect) error {
	sub, err := d.openDir(name)
	if errors.Is(err, unix.EACCES) && os.Geteuid() != 0 {
		_ = unix.Fchmodat(d.fd, name, 0o700, 0)
		sub, err = d.openDir(name)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer sub.Close()
	if prot := guard.is(sub); prot != "" {
		return fsErrorf(wire.CodePermission, "refusing to remove %s: it is %s, which belongs to berth", sub.path, prot)
	}
	fixed := false
	for {
		names, err := sub.names()
		if err != nil {
			return &fs.PathError{Op: "readdir", Path: sub.path, Err: err}
		}
		if len(names) == 0 {
			return nil
		}
		for _, n := range names {
			err := sub.removeAll(n, guard)
			if err != nil && !fixed && os.Geteuid() != 0 && errors.Is(err, unix.EACCES) {
				fixed = true
				_ = unix.Fchmod(sub.fd, 0o700)
				err = sub.removeAll(n, guard)
			}
			if err != nil {
				return err
			}
		}
	}
}

// fsProtect knows berth's own directories in the workspace (the host
// directory with the agent's socket, the agent's binary) by their handles,
// taken when the agent starts: a path names whatever the workspace put
// there since, a handle does not. No file operation creates, changes or
// removes anything in them, nor removes or moves a directory that holds
// them, nor reads them: a bot can cut itself off through a shell if it
// insists, but a file tool must not be the way, least of all for a bot
// whose user could not do it otherwise.
type fsProtect struct {
	dirs []fsProtected
}

type fsProtected struct {
	path string
	// fd stays open for the agent's life: what is above the directory is
	// found from it when needed.
	fd int
	id fsID
	// mnt is the directory's mount when it is the root of one (a bind
	// mount), 0 otherwise: everything on that mount is inside it.
	mnt uint64
}

// fsProtectedPaths are protected in a workspace.
var fsProtectedPaths = []string{wire.ContainerDir, "/.berth"}

var fsDefaultProtect = sync.OnceValue(func() *fsProtect { return newFSProtect(fsProtectedPaths) })

// newFSProtect opens the protected directories that exist; one that does
// not (an agent outside a workspace) has nothing to protect.
func newFSProtect(paths []string) *fsProtect {
	g := &fsProtect{}
	for _, p := range paths {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			_ = unix.Close(fd)
			continue
		}
		d := fsProtected{path: p, fd: fd, id: fsIDOf(&st)}
		if mnt, ok := fsMountID(fd); ok {
			if pfd, err := unix.Openat(fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
				if pm, ok := fsMountID(pfd); ok && pm != mnt {
					d.mnt = mnt
				}
				_ = unix.Close(pfd)
			}
		}
		g.dirs = append(g.dirs, d)
	}
	return g
}

// fsMountID is the mount that fd is on (statx STX_MNT_ID, Linux 5.8).
func fsMountID(fd int) (uint64, bool) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil || stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, false
	}
	return stx.Mnt_id, true
}

// s.fsGuard is the server's protection, taken when its routes were set up.
func (s *server) fsGuard() *fsProtect {
	if s.fsProt != nil {
		return s.fsProt
	}
	return fsDefaultProtect()
}

// is names the protected directory that d is, or "". Enough for a
// directory reached from one known not to be inside a protected one.
func (g *fsProtect) is(d *fsDir) string {
	if g == nil || len(g.dirs) == 0 {
		return ""
	}
	st, err := d.stat()
	if err != nil {
		return ""
	}
	id := fsIDOf(&st)
	for _, p := range g.dirs {
		if p.id == id {
			return p.path
		}
	}
	return ""
}

// fileIn names the protected directory that an open file (not a
// directory) lies in, as far as its mount tells, or "".
func (g *fsProtect) fileIn(fd int) string {
	if g == nil {
		return ""
	}
	var mnt uint64
	for _, p := range g.dirs {
		if p.mnt == 0 {
			continue
		}
		if mnt == 0 {
			var ok bool
			if mnt, ok = fsMountID(fd); !ok {
				return ""
			}
		}
		if mnt == p.mnt {
			return p.path
		}
	}
	return ""
}

// within names the protected directory that d is or lies inside, or "".
// It goes up from d itself through "..", which is where d is now, not
// where its path said it was.
func (g *fsProtect) within(d *fsDir) (string, error) {
	if g == nil || len(g.dirs) == 0 {
		return "", nil
	}
	if p := g.fileIn(d.fd); p != "" {
		return p, nil
	}
	var found string
	_, err := fsWalkUp(d.fd, func(id fsID) bool {
		for _, p := range g.dirs {
			if p.id == id {
				found = p.path
				return true
			}
		}
		return false
	})
	return found, err
}

// holds names the protected directory that the directory id is or holds
// (is an ancestor of), or "".
func (g *fsProtect) holds(id fsID) (string, error) {
	if g == nil {
		return "", nil
	}
	for _, p := range g.dirs {
		found, err := fsWalkUp(p.fd, func(cur fsID) bool { return cur == id })
		if err != nil {
			return "", err
		}
		if found {
			return p.path, nil
		}
	}
	return "", nil
}

// fsWalkUp calls visit with the identity of the directory fd and then of
// each directory above it, going up through "..", until visit returns true
// (reported as found) or the walk reaches a top, whose ".." is itself: the
// process's root, or for a directory reached through a magic link to
// another mount namespace, some other top. fd stays open; the directories
// opened on the way are closed.
func fsWalkUp(fd int, visit func(fsID) bool) (found bool, err error) {
	cur := fd
	defer func() {
		if cur != fd {
			_ = unix.Close(cur)
		}
	}()
	var prev fsID
	for depth := 0; depth < 4096; depth++ {
		var st unix.Stat_t
		if err := unix.Fstat(cur, &st); err != nil {
			return false, err
		}
		id := fsIDOf(&st)
		if depth > 0 && id == prev {
			return false, nil
		}
		if visit(id) {
			return true, nil
		}
		prev = id
		up, err := fsEINTR(func() (int, error) {
			return unix.Openat(cur, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		})
		if err != nil {
			return false, err
		}
		if cur != fd {
			_ = unix.Close(cur)
		}
		cur = up
	}
	return false, errors.New("directory nesting too deep")
}

// fsMutableParent opens the directory that p's final component is in, for
// an operation op on it (a verb for messages: "write", "delete"), and
// refuses when that directory is inside one of berth's, or, for an
// operation on a whole tree, when the entry is a directory that is or
// holds one. The caller acts on the returned name through the returned
// directory only.
func (s *server) fsMutableParent(p, op string, tree bool) (*fsDir, string, error) {
	if p == "/" {
		return nil, "", fsErrorf(wire.CodePermission, "refusing to %s / (the root of the workspace)", op)
	}
	d, name, err := fsParent(p)
	if err != nil {
		return nil, "", err
	}
	if err := s.fsCheckDir(d, p, op); err != nil {
		d.Close()
		return nil, "", err
	}
	if tree {
		if st, err := d.lstat(name); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			prot, err := s.fsGuard().holds(fsIDOf(&st))
			if err != nil {
				d.Close()
				return nil, "", err
			}
			if prot != "" {
				d.Close()
				if prot == p {
					return nil, "", fsErrorf(wire.CodePermission, "refusing to %s %s: it belongs to berth (its agent's socket and binary live there)", op, p)
				}
				return nil, "", fsErrorf(wire.CodePermission, "refusing to %s %s: it contains %s, which belongs to berth", op, p, prot)
			}
		}
	}
	return d, name, nil
}

// fsCheckDir refuses an operation op on p in (or on) the open directory d
// when d is one of berth's directories or inside one.
func (s *server) fsCheckDir(d *fsDir, p, op string) error {
	prot, err := s.fsGuard().within(d)
	if err != nil {
		return err
	}
	if prot != "" {
		return fsErrorf(wire.CodePermission, "refusing to %s %s: %s belongs to berth (its agent's socket and binary live there)", op, p, prot)
	}
	return nil
}

// fsInfoStat describes an entry from its stat.
func fsInfoStat(p string, st *unix.Stat_t) wire.FileInfo {
	info := wire.FileInfo{
		Path:    p,
		Name:    path.Base(p),
		Type:    fsTypeBits(st.Mode),
		Mode:    fmt.Sprintf("%04o", st.Mode&0o7777),
		ModTime: time.Unix(st.Mtim.Unix()).UTC(),
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		info.Size = st.Size
	}
	return info
}

func fsTypeBits(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return wire.FileTypeFile
	case unix.S_IFDIR:
		return wire.FileTypeDir
	case unix.S_IFLNK:
		return wire.FileTypeSymlink
	}
	return wire.FileTypeOther
}

// info describes name in d (named p in the result) without following it.
func (d *fsDir) info(name, p string) (wire.FileInfo, error) {
	st, err := d.lstat(name)
	if err != nil {
		return wire.FileInfo{}, fsNotFound(p, err)
	}
	info := fsInfoStat(p, &st)
	if info.Type == wire.FileTypeSymlink {
		// A link that changes between lstat and readlink is reported with
		// an empty target rather than failing the whole call.
		info.LinkTarget, _ = d.readlink(name)
	}
	return info, nil
}

// fsGoModeOf turns a stat's mode into Go's, for fsDescribeType.
func fsGoModeOf(mode uint32) fs.FileMode {
	m := fsGoMode(mode & 0o7777)
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFIFO:
		m |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		m |= fs.ModeSocket
	case unix.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		m |= fs.ModeDevice
	}
	return m
}

// close releases the handles of a protection made for one server (tests).
func (g *fsProtect) close() {
	for _, p := range g.dirs {
		_ = unix.Close(p.fd)
	}
	g.dirs = nil
}
