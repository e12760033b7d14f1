package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fsResolvePath turns a path from a request into an absolute, clean
// container path. A relative path is relative to base (the data directory),
// so that a model can say "src/main.go" the way it would in a shell whose
// working directory is its workspace. ".." is allowed to climb out of base:
// the whole container is the bot's, and this is not a security check.
func fsResolvePath(base, p string) (string, error) {
	if p == "" {
		return "", fsErrorf(CodeInvalid, "path is empty")
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", fsErrorf(CodeInvalid, "path contains a NUL byte")
	}
	if len(p) > MaxPathLength {
		return "", fsErrorf(CodeInvalid, "path is %d bytes long; at most %d are allowed", len(p), MaxPathLength)
	}
	if !path.IsAbs(p) {
		p = fsDataDir(base) + "/" + p
	}
	p = path.Clean(p)
	if len(p) > MaxPathLength {
		return "", fsErrorf(CodeInvalid, "path is %d bytes long once resolved; at most %d are allowed", len(p), MaxPathLength)
	}
	return p, nil
}

// fsDataDir makes a configured data directory usable as a base: absolute
// and clean, whatever the configuration said.
func fsDataDir(dir string) string {
	if dir == "" || strings.IndexByte(dir, 0) >= 0 {
		return DefaultDataDir
	}
	return path.Clean("/" + dir)
}

func (s *server) fsPath(p string) (string, error) {
	return fsResolvePath(s.opts.DataDir, p)
}

// fsProtected are berth's own places in the container: the per-workspace
// host directory with the agent's socket, and where the agent binary is
// mounted. Deleting, moving or writing into them would cut the host off
// from the workspace, which a bot can do through a shell but should not be
// able to do by accident through a file tool.
var fsProtected = []string{ContainerDir, "/.berth"}

// fsWithin reports whether p is dir or below it; both are clean and
// absolute.
func fsWithin(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// fsCheckMutable refuses to change p when it is "/", inside one of berth's
// own directories, or (when whole trees are removed or moved away) above
// one. The real location of p's parent is checked as well, so a symlink
// does not open a way around.
func fsCheckMutable(p, op string, tree bool) error {
	candidates := []string{p}
	if r := fsRealParent(p); r != p {
		candidates = append(candidates, r)
	}
	for _, c := range candidates {
		if c == "/" {
			return fsErrorf(CodePermission, "refusing to %s / (the root of the workspace)", op)
		}
		for _, prot := range fsProtected {
			if fsWithin(c, prot) {
				return fsErrorf(CodePermission, "refusing to %s %s: %s belongs to berth (its agent's socket and binary live there)", op, p, prot)
			}
			if tree && fsWithin(prot, c) {
				return fsErrorf(CodePermission, "refusing to %s %s: it contains %s, which belongs to berth", op, p, prot)
			}
		}
	}
	return nil
}

// fsRealParent resolves the symlinks in p's deepest existing ancestor and
// keeps the rest (which does not exist yet, or is the final component that
// an operation acts on without following).
func fsRealParent(p string) string {
	dir, rest := path.Dir(p), path.Base(p)
	for {
		if real, err := filepath.EvalSymlinks(dir); err == nil && path.IsAbs(real) {
			return path.Join(real, rest)
		}
		if dir == "/" {
			return p
		}
		dir, rest = path.Dir(dir), path.Join(path.Base(dir), rest)
	}
}

// fsSkipWalk are the kernel's virtual trees: walking them from "/" would
// list thousands of entries nobody searches for, and reading some of their
// files blocks or has side effects. A walk that starts inside one of them
// is allowed to go there.
var fsSkipWalk = []string{"/proc", "/sys", "/dev"}

func fsSkipDirs(root string) map[string]bool {
	skip := make(map[string]bool, len(fsSkipWalk))
	for _, d := range fsSkipWalk {
		if !fsWithin(root, d) {
			skip[d] = true
		}
	}
	return skip
}

func fsType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return FileTypeFile
	case m.IsDir():
		return FileTypeDir
	case m&fs.ModeSymlink != 0:
		return FileTypeSymlink
	}
	return FileTypeOther
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
		return 0, fsErrorf(CodeInvalid, "mode %q is not octal permissions like \"0644\"", s)
	}
	var v uint32
	for _, c := range t {
		if c < '0' || c > '7' {
			return 0, fsErrorf(CodeInvalid, "mode %q is not octal permissions like \"0644\"", s)
		}
		v = v*8 + uint32(c-'0')
	}
	if v > 0o7777 {
		return 0, fsErrorf(CodeInvalid, "mode %q has bits above 07777", s)
	}
	return v, nil
}

func fsInfo(p string, fi fs.FileInfo) FileInfo {
	info := FileInfo{
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

// fsLstat describes p without following a final symlink.
func fsLstat(p string) (FileInfo, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return FileInfo{}, fsNotFound(p, err)
	}
	info := fsInfo(p, fi)
	if info.Type == FileTypeSymlink {
		// A link that changes between lstat and readlink is reported with
		// an empty target rather than failing the whole call.
		info.LinkTarget, _ = os.Readlink(p)
	}
	return info, nil
}

// fsNotFound rewords ENOENT for people; everything else is passed on.
func fsNotFound(p string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fsErrorf(CodeNotFound, "%s does not exist", p)
	}
	if errors.Is(err, syscall.ENOTDIR) {
		return fsErrorf(CodeNotDirectory, "%s: a parent of it is not a directory", p)
	}
	return err
}

// fsOpenRegular opens p (following symlinks) for reading and makes sure it
// is a regular file. O_NONBLOCK keeps a FIFO from blocking the open until a
// writer shows up; for regular files the flag means nothing.
func fsOpenRegular(p string) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, nil, fsErrorf(CodeInvalid, "%s: too many levels of symbolic links", p)
		}
		return nil, nil, fsNotFound(p, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, nil, err
	}
	switch {
	case fi.IsDir():
		_ = f.Close()
		return nil, nil, fsErrorf(CodeIsDirectory, "%s is a directory", p)
	case !fi.Mode().IsRegular():
		_ = f.Close()
		return nil, nil, fsErrorf(CodeInvalid, "%s is not a regular file (%s)", p, fsDescribeType(fi.Mode()))
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

// fsChown changes ownership without following a final symlink. An agent
// that is not root (tests, rootless setups) cannot give files away, and
// should still work, so there the failure is ignored.
func fsChown(p string, uid, gid int) error {
	if uid < 0 && gid < 0 {
		return nil
	}
	if err := os.Lchown(p, uid, gid); err != nil {
		if os.Geteuid() != 0 {
			return nil
		}
		return err
	}
	return nil
}

func fsFchown(f *os.File, uid, gid int) error {
	if uid < 0 && gid < 0 {
		return nil
	}
	if err := f.Chown(uid, gid); err != nil {
		if os.Geteuid() != 0 {
			return nil
		}
		return err
	}
	return nil
}

// fsStatOwner returns the owner of fi, for keeping it across a rewrite.
func fsStatOwner(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

// fsSyncDir makes a rename or create in dir durable. Failure is not
// reported: the operation itself succeeded and is visible; only its
// survival of a power cut is in doubt, which callers cannot act on.
func fsSyncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// fsMkdirAll creates p and its missing parents with mode 0755 (whatever
// the umask), owned by uid:gid, and reports whether it created p.
func fsMkdirAll(p string, uid, gid int) (bool, error) {
	fi, err := os.Stat(p)
	if err == nil {
		if !fi.IsDir() {
			return false, fsErrorf(CodeNotDirectory, "%s exists and is not a directory", p)
		}
		return false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return false, fsNotFound(p, err)
	}
	if parent := path.Dir(p); parent != p {
		if _, err := fsMkdirAll(parent, uid, gid); err != nil {
			return false, err
		}
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Created by someone else meanwhile; fine if it is a directory.
			if fi, serr := os.Stat(p); serr == nil && fi.IsDir() {
				return false, nil
			}
			return false, fsErrorf(CodeNotDirectory, "%s exists and is not a directory", p)
		}
		return false, err
	}
	if err := fsSetupNew(p, 0o755, uid, gid); err != nil {
		return true, err
	}
	return true, nil
}

// fsSetupNew gives a newly created entry its mode (not the umask's) and
// owner. chown before chmod, because chown clears setuid and setgid.
func fsSetupNew(p string, mode uint32, uid, gid int) error {
	if err := fsChown(p, uid, gid); err != nil {
		return err
	}
	return os.Chmod(p, fsGoMode(mode))
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

func fsStampOf(fi fs.FileInfo) (fsStamp, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fsStamp{}, false
	}
	return fsStamp{
		dev:   st.Dev,
		ino:   st.Ino,
		size:  st.Size,
		mtime: time.Unix(st.Mtim.Unix()),
		ctime: time.Unix(st.Ctim.Unix()),
	}, true
}
