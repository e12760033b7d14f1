package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// fsResolvePath turns a path from a request into an absolute, clean
// container path. A relative path is relative to base (the data directory),
// so that a model can say "src/main.go" the way it would in a shell whose
// working directory is its workspace. ".." is allowed to climb out of base:
// the whole container is the bot's, and this is not a security check.
func fsResolvePath(base, p string) (string, error) {
	if p == "" {
		return "", fsErrorf(wire.CodeInvalid, "path is empty")
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", fsErrorf(wire.CodeInvalid, "path contains a NUL byte")
	}
	if len(p) > wire.MaxPathLength {
		return "", fsErrorf(wire.CodeInvalid, "path is %d bytes long; at most %d are allowed", len(p), wire.MaxPathLength)
	}
	if !path.IsAbs(p) {
		p = fsDataDir(base) + "/" + p
	}
	p = path.Clean(p)
	if len(p) > wire.MaxPathLength {
		return "", fsErrorf(wire.CodeInvalid, "path is %d bytes long once resolved; at most %d are allowed", len(p), wire.MaxPathLength)
	}
	return p, nil
}

// fsDataDir makes a configured data directory usable as a base: absolute
// and clean, whatever the configuration said.
func fsDataDir(dir string) string {
	if dir == "" || strings.IndexByte(dir, 0) >= 0 {
		return wire.DefaultDataDir
	}
	return path.Clean("/" + dir)
}

func (s *server) fsPath(p string) (string, error) {
	return fsResolvePath(s.opts.DataDir, p)
}

// fsSkipWalk are the kernel's virtual trees: walking them from "/" would
// list thousands of entries nobody searches for, and reading some of their
// files blocks or has side effects. A walk that starts inside one of them
// is allowed to go there.
var fsSkipWalk = []string{"/proc", "/sys", "/dev"}

func fsSkipDirs(root string) map[string]bool {
	skip := make(map[string]bool, len(fsSkipWalk))
	for _, d := range fsSkipWalk {
		if !wire.PathWithin(root, d) {
			skip[d] = true
		}
	}
	return skip
}

func fsType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return wire.FileTypeFile
	case m.IsDir():
		return wire.FileTypeDir
	case m&fs.ModeSymlink != 0:
		return wire.FileTypeSymlink
	}
	return wire.FileTypeOther
}

// fsModeBits returns the permission bits as chmod(2) takes them: Go keeps
// setuid, setgid and sticky apart from Perm.
func fsModeBits(m fs.FileMode) uint32 {
	bits := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		bits |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		bits |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		bits |= unix.S_ISVTX
	}
	return bits
}

// fsGoMode is the inverse of fsModeBits, for os.Chmod.
func fsGoMode(bits uint32) fs.FileMode {
	m := fs.FileMode(bits & 0o777)
	if bits&unix.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if bits&unix.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if bits&unix.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// fsParseMode accepts octal permissions as people write them: "644",
// "0644", "0o644", "4755".
func fsParseMode(s string) (uint32, error) {
	t := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	if t == "" || len(t) > 5 {
		return 0, fsErrorf(wire.CodeInvalid, "mode %q is not octal permissions like \"0644\"", s)
	}
	var v uint32
	for _, c := range t {
		if c < '0' || c > '7' {
			return 0, fsErrorf(wire.CodeInvalid, "mode %q is not octal permissions like \"0644\"", s)
		}
		v = v*8 + uint32(c-'0')
	}
	if v > 0o7777 {
		return 0, fsErrorf(wire.CodeInvalid, "mode %q has bits above 07777", s)
	}
	return v, nil
}

func fsInfo(p string, fi fs.FileInfo) wire.FileInfo {
	info := wire.FileInfo{
		Path:    p,
		Name:    path.Base(p),
		Type:    fsType(fi.Mode()),
		Mode:    fmt.Sprintf("%04o", fsModeBits(fi.Mode())),
		ModTime: fi.ModTime().UTC(),
	}
	if fi.Mode().IsRegular() {
		info.Size = fi.Size()
	}
	return info
}

// fsLstat describes p without following a final symlink. berth's own
// directories and what is in them are not shown.
func (s *server) fsLstat(p string) (wire.FileInfo, error) {
	if p == "/" {
		d, err := fsOpenDir("/")
		if err != nil {
			return wire.FileInfo{}, err
		}
		defer d.Close()
		st, err := d.stat()
		if err != nil {
			return wire.FileInfo{}, err
		}
		return fsInfoStat(p, &st), nil
	}
	d, name, err := fsParent(p)
	if err != nil {
		return wire.FileInfo{}, err
	}
	defer d.Close()
	if err := s.fsCheckDir(d, p, "read"); err != nil {
		return wire.FileInfo{}, err
	}
	info, err := d.info(name, p)
	if err != nil {
		return wire.FileInfo{}, err
	}
	if info.Type == wire.FileTypeDir {
		if sub, err := d.openDir(name); err == nil {
			prot := s.fsGuard().is(sub)
			sub.Close()
			if prot != "" {
				return wire.FileInfo{}, fsErrorf(wire.CodePermission, "refusing to read %s: it belongs to berth", p)
			}
		}
	}
	return info, nil
}

// fsNotFound rewords ENOENT for people; everything else is passed on.
func fsNotFound(p string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fsErrorf(wire.CodeNotFound, "%s does not exist", p)
	}
	if errors.Is(err, syscall.ENOTDIR) {
		return fsErrorf(wire.CodeNotDirectory, "%s: a parent of it is not a directory", p)
	}
	return err
}

// fsOpenRegular opens p (following symlinks) for reading and makes sure it
// is a regular file. The file is first opened O_PATH, which has no effect
// on what it is (a FIFO would block until a writer shows up, a device may
// rewind a tape), and only a regular file is then opened for reading,
// through that handle, so it is the same file.
func (s *server) fsOpenRegular(p string) (*os.File, fs.FileInfo, error) {
	fd, err := fsEINTR(func() (int, error) { return unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0) })
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, nil, fsErrorf(wire.CodeInvalid, "%s: too many levels of symbolic links", p)
		}
		return nil, nil, fsNotFound(p, &fs.PathError{Op: "open", Path: p, Err: err})
	}
	defer func() { _ = unix.Close(fd) }()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, nil, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return nil, nil, fsErrorf(wire.CodeIsDirectory, "%s is a directory", p)
	default:
		return nil, nil, fsErrorf(wire.CodeInvalid, "%s is not a regular file (%s); only regular files can be read", p, fsDescribeType(fsGoModeOf(st.Mode)))
	}
	if prot := s.fsGuard().fileIn(fd); prot != "" {
		return nil, nil, fsErrorf(wire.CodePermission, "refusing to read %s: %s belongs to berth", p, prot)
	}
	rfd, err := fsEINTR(func() (int, error) {
		return unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, nil, fsNotFound(p, &fs.PathError{Op: "open", Path: p, Err: err})
	}
	f := os.NewFile(uintptr(rfd), p)
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

func fsDescribeType(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m.IsDir():
		return "a directory"
	}
	return "a special file"
}

// fsOwner is who new files and directories belong to: the image's user,
// so that the bot's commands can change what the file tools made. -1 means
// "leave as created" (root, the agent).
func (s *server) fsOwner() (uid, gid int) {
	if u := s.opts.User; u != nil {
		return int(u.UID), int(u.GID)
	}
	return -1, -1
}

// fsMkdirAll opens directory p, creating it and its missing parents with
// mode 0755 (whatever the umask), owned by uid:gid, and reports whether
// it created p. It goes down from "/" one handle at a time, so each
// directory is created in the one just opened (after checking that it is
// not one of berth's), whatever is renamed meanwhile; existing symlinks on
// the way are followed.
func (s *server) fsMkdirAll(p string, uid, gid int) (*fsDir, bool, error) {
	if d, err := fsOpenDir(p); err == nil {
		return d, false, nil
	} else if errors.Is(err, unix.ENOTDIR) {
		return nil, false, fsErrorf(wire.CodeNotDirectory, "%s (or a directory above it) exists and is not a directory", p)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	cur, err := fsOpenDir("/")
	if err != nil {
		return nil, false, err
	}
	created := false
	for rest := strings.TrimPrefix(p, "/"); rest != ""; {
		var name string
		name, rest, _ = strings.Cut(rest, "/")
		at := cur.join(name)
		next, err := fsOpenDirAt(cur.fd, name, true, at)
		created = false
		if errors.Is(err, fs.ErrNotExist) {
			next, err = s.fsMkdirIn(cur, name, at, uid, gid)
			if errors.Is(err, fs.ErrExist) {
				// Created by someone else meanwhile; fine if it is a
				// directory.
				next, err = fsOpenDirAt(cur.fd, name, true, at)
			} else {
				created = err == nil
			}
		}
		cur.Close()
		if errors.Is(err, unix.ENOTDIR) {
			return nil, false, fsErrorf(wire.CodeNotDirectory, "%s exists and is not a directory", at)
		}
		if err != nil {
			return nil, false, err
		}
		cur = next
	}
	return cur, created, nil
}

// fsMkdirIn creates directory name in d, mode 0755 owned by uid:gid, and
// opens it.
func (s *server) fsMkdirIn(d *fsDir, name, p string, uid, gid int) (*fsDir, error) {
	if err := s.fsCheckDir(d, p, "create"); err != nil {
		return nil, err
	}
	if err := d.mkdir(name, 0o700); err != nil {
		return nil, err
	}
	sub, err := d.openDir(name)
	if err != nil {
		return nil, err
	}
	if err := fsSetupFD(sub.fd, 0o755, uid, gid); err != nil {
		sub.Close()
		return nil, err
	}
	return sub, nil
}

// fsPathLocks serializes the agent's own rewrites of one file, so that an
// expected-revision check and the rename that follows it are not
// interleaved with another write through the agent. Writers outside the
// agent are caught by re-checking the file just before the rename.
type fsPathLocks struct {
	mu sync.Mutex
	m  map[string]*fsPathLock
}

type fsPathLock struct {
	mu   sync.Mutex
	refs int
}

var fsLocks = &fsPathLocks{m: make(map[string]*fsPathLock)}

func (l *fsPathLocks) lock(p string) (unlock func()) {
	l.mu.Lock()
	pl := l.m[p]
	if pl == nil {
		pl = &fsPathLock{}
		l.m[p] = pl
	}
	pl.refs++
	l.mu.Unlock()
	pl.mu.Lock()
	return func() {
		pl.mu.Unlock()
		l.mu.Lock()
		pl.refs--
		if pl.refs == 0 {
			delete(l.m, p)
		}
		l.mu.Unlock()
	}
}

// fsStamp identifies a version of a file cheaply, to avoid hashing it twice
// when it has not changed.
type fsStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime time.Time
}

func fsStampOf(st *unix.Stat_t) fsStamp {
	return fsStamp{
		dev:   uint64(st.Dev),
		ino:   st.Ino,
		size:  st.Size,
		mtime: time.Unix(st.Mtim.Unix()),
		ctime: time.Unix(st.Ctim.Unix()),
	}
}
