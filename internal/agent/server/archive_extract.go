package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// Extraction writes into a private staging directory through an os.Root,
// so that no name of the archive, and no symlink the archive itself has
// created, can reach outside it. The checks below are what keeps the
// result safe once it is moved into the target: an escape the root would
// stop must already be refused with a message that names the entry.

// archiveKind is what an entry creates.
type archiveKind int

const (
	archiveOther archiveKind = iota
	archiveDir
	archiveFile
	archiveSymlink
	archiveHardlink
)

// archiveEntry is one entry of a tar or zip archive, format-neutral.
type archiveEntry struct {
	name string
	kind archiveKind
	// what names an archiveOther entry in messages ("a named pipe").
	what string
	// mode holds permission bits as chmod(2) takes them.
	mode  uint32
	mtime time.Time
	size  int64
	// link is a symlink's target or a hard link's entry name.
	link string
}

const (
	// archiveMaxRetained bounds the memory the directory bookkeeping of one
	// import may take (names plus map overhead); an archive of a million
	// directories with long names must not exhaust the workspace.
	archiveMaxRetained = 256 << 20
	// archiveDirOverhead approximates a map entry besides its name.
	archiveDirOverhead = 64
	// archiveBlock is the granularity at which runs of zeros are left as
	// holes instead of being written.
	archiveBlock = 4096
)

// archiveDirMeta is what a directory entry asked for; it is applied after
// everything else, since creating entries inside a directory changes its
// modification time and a read-only mode would stop them.
type archiveDirMeta struct {
	mode  uint32
	mtime time.Time
}

type archiveExtractor struct {
	ctx context.Context
	// format names the archive's format in messages.
	format string
	root   *os.Root
	// within are the absolute paths an absolute symlink target may point
	// into: the target directory as requested and as resolved.
	within               []string
	maxEntries, maxBytes int64
	uid, gid             int
	res                  wire.ImportResult
	// dirs holds every directory created in the staging tree, with the
	// metadata of its entry, or nil for a parent the archive only implied.
	// A name found here is known to be a real directory, which is what
	// makes the check against entries through symlinks cheap.
	dirs map[string]*archiveDirMeta
	// restore recreates symlinks wherever they point (wire.ImportRequest
	// Restore); the root still never follows one out of the staging tree.
	restore  bool
	implied  int64
	retained int64
	buf      []byte
}

func newArchiveExtractor(ctx context.Context, root *os.Root, within []string, maxEntries, maxBytes int64, uid, gid int) *archiveExtractor {
	return &archiveExtractor{
		ctx:        ctx,
		root:       root,
		within:     within,
		maxEntries: maxEntries,
		maxBytes:   maxBytes,
		uid:        uid,
		gid:        gid,
		dirs:       make(map[string]*archiveDirMeta),
		buf:        make([]byte, archiveCopyBuffer),
	}
}

// archiveCleanName checks the name of an entry and returns it clean and
// relative; "." stands for the target directory itself. A name is refused
// rather than repaired (GNU tar strips a leading "/"), because an archive
// that needs repair was made carelessly or with intent, and the caller
// should know before anything lands.
func archiveCleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("the name is empty")
	case strings.IndexByte(name, 0) >= 0:
		return "", errors.New("the name contains a NUL byte")
	case len(name) > wire.MaxPathLength:
		return "", fmt.Errorf("the name is %d bytes long; at most %d are allowed", len(name), wire.MaxPathLength)
	case name[0] == '/':
		return "", errors.New("the name is absolute; archive entries must be relative")
	}
	for rest := name; ; {
		var comp string
		var more bool
		comp, rest, more = strings.Cut(rest, "/")
		if comp == ".." {
			return "", errors.New(`the name has a ".." component`)
		}
		if !more {
			break
		}
	}
	return path.Clean(name), nil
}

// archiveCheckSymlink decides whether a symlink at name (clean, relative
// to the target) may point to target. The target must stay inside the
// target directory however it is resolved, which a lexical clean cannot
// promise: with "up -> ." in the archive, "up/up/../.." cleans to "." but
// resolves to "../..". So ".." is only allowed before the first name,
// where it climbs real directories (no entry is created through a
// symlink), and names below that can only lead to entries of the target
// or to symlinks checked by the same rule. An absolute target must lie in
// one of within and contain no ".." at all.
func archiveCheckSymlink(name, target string, within []string) error {
	if err := archiveCheckLinkText(target); err != nil {
		return err
	}
	ups, named := 0, false
	for rest := target; ; {
		var comp string
		var more bool
		comp, rest, more = strings.Cut(rest, "/")
		switch comp {
		case "", ".":
		case "..":
			if named || target[0] == '/' {
				return fmt.Errorf(`its target %q has ".." after a name; only leading ".." are allowed, since a name may itself be a symlink`, fsShort(target))
			}
			ups++
		default:
			named = true
		}
		if !more {
			break
		}
	}
	if target[0] == '/' {
		t := path.Clean(target)
		for _, w := range within {
			if wire.PathWithin(t, w) {
				return nil
			}
		}
		return fmt.Errorf("its target %s is outside %s", fsShort(t), within[0])
	}
	depth := 0
	if dir := path.Dir(name); dir != "." {
		depth = strings.Count(dir, "/") + 1
	}
	if ups > depth {
		return fmt.Errorf("its target %q climbs %d levels from a directory %d levels below the target directory, out of it", fsShort(target), ups, depth)
	}
	return nil
}

// archiveCheckLinkText checks what any symlink target must be, wherever it
// points: what symlink(2) and a sane path take.
func archiveCheckLinkText(target string) error {
	switch {
	case target == "":
		return errors.New("its target is empty")
	case strings.IndexByte(target, 0) >= 0:
		return errors.New("its target contains a NUL byte")
	case len(target) > wire.MaxPathLength:
		return fmt.Errorf("its target is %d bytes long; at most %d are allowed", len(target), wire.MaxPathLength)
	}
	return nil
}

func (x *archiveExtractor) invalid(e *archiveEntry, format string, args ...any) error {
	return fsErrorf(wire.CodeInvalid, "entry %q: %s; nothing was imported", fsShort(e.name), fmt.Sprintf(format, args...))
}

// count accounts for one entry of the archive, before it is looked at.
func (x *archiveExtractor) count() error {
	x.res.Entries++
	if x.res.Entries > x.maxEntries {
		return fsErrorf(wire.CodeLimit, "the archive has more than %d entries (max_entries); nothing was imported", x.maxEntries)
	}
	if x.res.Entries%256 == 0 {
		return x.ctx.Err()
	}
	return nil
}

// add creates one entry in the staging tree; content is a file's data.
// A failure of the file system (no space, a name too long) is reported
// with the entry it happened at.
func (x *archiveExtractor) add(e *archiveEntry, content io.Reader) error {
	err := x.create(e, content)
	var fe *fsError
	if err == nil || errors.As(err, &fe) || x.ctx.Err() != nil {
		return err
	}
	return fmt.Errorf("entry %q: %w; nothing was imported", fsShort(e.name), err)
}

func (x *archiveExtractor) create(e *archiveEntry, content io.Reader) error {
	if e.kind == archiveOther {
		return x.invalid(e, "it is %s; only directories, regular files, symlinks and hard links can be imported", e.what)
	}
	name, err := archiveCleanName(e.name)
	if err != nil {
		return x.invalid(e, "%v", err)
	}
	if name == "." {
		if e.kind == archiveDir {
			// The target directory itself ("./" of `tar -C dir .`): it
			// exists already and keeps its own mode and owner.
			return nil
		}
		return x.invalid(e, "it names the target directory itself")
	}
	if err := x.parents(e, name); err != nil {
		return err
	}
	if meta, isDir := x.dirs[name]; isDir {
		if e.kind != archiveDir {
			return x.invalid(e, "an earlier entry made it a directory, which this entry would replace with a %s", archiveKindName(e.kind))
		}
		if meta == nil {
			x.res.Dirs++
		}
		x.dirs[name] = &archiveDirMeta{mode: e.mode &^ (unix.S_ISUID | unix.S_ISGID), mtime: e.mtime}
		return nil
	}
	switch e.kind {
	case archiveDir:
		return x.mkdir(e, name)
	case archiveFile:
		return x.file(e, name, content)
	case archiveSymlink:
		return x.symlink(e, name)
	default:
		return x.hardlink(e, name)
	}
}

func archiveKindName(k archiveKind) string {
	switch k {
	case archiveDir:
		return "directory"
	case archiveFile, archiveHardlink:
		return "file"
	case archiveSymlink:
		return "symlink"
	}
	return "special file"
}

// parents makes sure every directory above name exists in the staging tree
// and is a real directory, creating the missing ones. Directories only
// implied by names count against their own max_entries budget: one entry
// with a thousand components must not create a thousand directories for
// free.
func (x *archiveExtractor) parents(e *archiveEntry, name string) error {
	// Up to the deepest directory already made, which is usually the
	// parent itself.
	var missing []string
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		if _, ok := x.dirs[dir]; ok {
			break
		}
		missing = append(missing, dir)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		p := missing[i]
		err := x.root.Mkdir(p, 0o700)
		switch {
		case errors.Is(err, fs.ErrExist):
			// Not in dirs, so an earlier entry made it something else.
			fi, err := x.root.Lstat(p)
			switch {
			case err != nil:
				return err
			case fi.Mode()&fs.ModeSymlink != 0:
				return x.invalid(e, "it would be created through %q, a symlink of the archive", p)
			case !fi.IsDir():
				return x.invalid(e, "it needs %q to be a directory, but an earlier entry made it a file", p)
			}
		case err != nil:
			return err
		default:
			if err := x.chown(p); err != nil {
				return err
			}
		}
		x.implied++
		if x.implied > x.maxEntries {
			return fsErrorf(wire.CodeLimit, "the archive's names imply more than %d directories that it has no entries for (max_entries); nothing was imported", x.maxEntries)
		}
		if err := x.addDir(p, nil); err != nil {
			return err
		}
	}
	return nil
}

func (x *archiveExtractor) addDir(name string, meta *archiveDirMeta) error {
	x.retained += int64(len(name)) + archiveDirOverhead
	if x.retained > archiveMaxRetained {
		return fsErrorf(wire.CodeLimit, "the archive's directories take more than %d MiB to keep track of; import it in parts; nothing was imported", archiveMaxRetained>>20)
	}
	x.dirs[name] = meta
	return nil
}

// chown gives an entry to the workspace user, as fsChown does.
func (x *archiveExtractor) chown(name string) error {
	if x.uid < 0 && x.gid < 0 {
		return nil
	}
	if err := x.root.Lchown(name, x.uid, x.gid); err != nil && os.Geteuid() == 0 {
		return err
	}
	return nil
}

// existing explains why name cannot be created: something is there
// already. A file replaces a file and a symlink a symlink, as a later
// entry does in tar; anything else is a conflict inside the archive.
func (x *archiveExtractor) existing(e *archiveEntry, name string) error {
	fi, err := x.root.Lstat(name)
	if err != nil {
		return err
	}
	same := fi.Mode().IsRegular() && (e.kind == archiveFile || e.kind == archiveHardlink) ||
		fi.Mode()&fs.ModeSymlink != 0 && e.kind == archiveSymlink
	if !same {
		was := "file"
		if fi.Mode()&fs.ModeSymlink != 0 {
			was = "symlink"
		}
		return x.invalid(e, "an earlier entry made it a %s, which this entry would replace with a %s", was, archiveKindName(e.kind))
	}
	return x.root.Remove(name)
}

func (x *archiveExtractor) mkdir(e *archiveEntry, name string) error {
	err := x.root.Mkdir(name, 0o700)
	if errors.Is(err, fs.ErrExist) {
		// Not in dirs, so not a directory.
		return x.existing(e, name)
	}
	if err != nil {
		return err
	}
	if err := x.chown(name); err != nil {
		return err
	}
	x.res.Dirs++
	return x.addDir(name, &archiveDirMeta{mode: e.mode &^ (unix.S_ISUID | unix.S_ISGID), mtime: e.mtime})
}

func (x *archiveExtractor) file(e *archiveEntry, name string, content io.Reader) error {
	if left := x.maxBytes - x.res.Bytes; e.size > left {
		return fsErrorf(wire.CodeTooLarge, "entry %q: it is %d bytes long, more than the %d bytes left of max_bytes (%d); nothing was imported", fsShort(e.name), e.size, left, x.maxBytes)
	}
	if e.size < 0 {
		return x.invalid(e, "its size is negative")
	}
	const flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL | syscall.O_NOFOLLOW
	f, err := x.root.OpenFile(name, flags, 0o600)
	if errors.Is(err, fs.ErrExist) {
		if err := x.existing(e, name); err != nil {
			return err
		}
		f, err = x.root.OpenFile(name, flags, 0o600)
	}
	if err != nil {
		return err
	}
	err = x.content(e, f, content)
	if err == nil {
		// setuid and setgid are dropped, since they would now be for the
		// workspace user, as cp does. Sticky means nothing on a file.
		err = fsSetupFD(int(f.Fd()), e.mode&0o777, x.uid, x.gid)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if !e.mtime.IsZero() {
		if err := x.root.Chtimes(name, time.Time{}, e.mtime); err != nil {
			return err
		}
	}
	x.res.Files++
	x.res.Bytes += e.size
	return nil
}

// content writes exactly e.size bytes from r into the new file f. Whole
// blocks of zeros are skipped and left as holes: a sparse file stays
// sparse, and a bomb of zeros within max_bytes costs time, not disk.
func (x *archiveExtractor) content(e *archiveEntry, f *os.File, r io.Reader) error {
	if e.size == 0 {
		return nil
	}
	var zeros [archiveBlock]byte
	lr := io.LimitReader(r, e.size+1)
	var off int64
	holes := false
	for {
		n, rerr := archiveFill(lr, x.buf)
		if off+int64(n) > e.size {
			return x.invalid(e, "it holds more than the %d bytes it declares", e.size)
		}
		chunk := x.buf[:n]
		for len(chunk) > 0 {
			// A run of non-zero blocks is written at once.
			run := 0
			for run < len(chunk) {
				blk := chunk[run:min(run+archiveBlock, len(chunk))]
				if bytes.Equal(blk, zeros[:len(blk)]) {
					break
				}
				run += len(blk)
			}
			if run > 0 {
				if _, err := f.WriteAt(chunk[:run], off); err != nil {
					return err
				}
			} else {
				run = min(archiveBlock, len(chunk))
				holes = true
			}
			off += int64(run)
			chunk = chunk[run:]
		}
		if rerr == io.EOF {
			break
		}
		if errors.Is(rerr, io.ErrUnexpectedEOF) {
			return x.invalid(e, "the archive ends after %d of its %d bytes (truncated?)", off, e.size)
		}
		if rerr != nil {
			var fe *fsError
			if errors.As(rerr, &fe) || x.ctx.Err() != nil {
				return x.broken(rerr)
			}
			return x.invalid(e, "its data cannot be read from the archive: %v", rerr)
		}
		if err := x.ctx.Err(); err != nil {
			return err
		}
	}
	if off < e.size {
		return x.invalid(e, "the archive ends after %d of its %d bytes", off, e.size)
	}
	if holes {
		// Trailing holes were never written; the length must still be
		// right.
		return f.Truncate(e.size)
	}
	return nil
}

// archiveFill reads until buf is full or r fails; io.EOF ends the data.
func archiveFill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (x *archiveExtractor) symlink(e *archiveEntry, name string) error {
	check := func() error { return archiveCheckSymlink(name, e.link, x.within) }
	if x.restore {
		check = func() error { return archiveCheckLinkText(e.link) }
	}
	if err := check(); err != nil {
		return x.invalid(e, "symlink: %v", err)
	}
	err := x.root.Symlink(e.link, name)
	if errors.Is(err, fs.ErrExist) {
		if err := x.existing(e, name); err != nil {
			return err
		}
		err = x.root.Symlink(e.link, name)
	}
	if err != nil {
		return err
	}
	if err := x.chown(name); err != nil {
		return err
	}
	if !e.mtime.IsZero() {
		// Root.Chtimes follows a final symlink and os.Root has no
		// lutimes, so the parent, opened through the root, stands in.
		// A failure here costs a timestamp, not the import.
		if d, err := x.root.Open(path.Dir(name)); err == nil {
			ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(e.mtime.UnixNano())}
			_ = unix.UtimesNanoAt(int(d.Fd()), path.Base(name), ts, unix.AT_SYMLINK_NOFOLLOW)
			_ = d.Close()
		}
	}
	x.res.Symlinks++
	return nil
}

func (x *archiveExtractor) hardlink(e *archiveEntry, name string) error {
	target, err := archiveCleanName(e.link)
	if err != nil {
		return x.invalid(e, "hard link to %q: %v", fsShort(e.link), err)
	}
	notEarlier := func(why string) error {
		return x.invalid(e, "hard link to %q, %s; a hard link must point to an earlier regular file of the same archive", fsShort(e.link), why)
	}
	if target == "." || target == name {
		return notEarlier("which is not a file")
	}
	// The target's directory must be one the archive made, so a link
	// cannot reach through one of the archive's symlinks either.
	if dir := path.Dir(target); dir != "." {
		if _, ok := x.dirs[dir]; !ok {
			return notEarlier("which is not in the archive")
		}
	}
	fi, err := x.root.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return notEarlier("which is not in the archive")
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return notEarlier("which is not a regular file")
	}
	err = x.root.Link(target, name)
	if errors.Is(err, fs.ErrExist) {
		if err := x.existing(e, name); err != nil {
			return err
		}
		err = x.root.Link(target, name)
	}
	if err != nil {
		return err
	}
	x.res.Files++
	x.res.Hardlinks++
	return nil
}

// finish gives every directory its mode (implied ones 0755) and its
// modification time, deepest first, so that a read-only directory does
// not stop the changes below it.
func (x *archiveExtractor) finish() error {
	names := make([]string, 0, len(x.dirs))
	for n := range x.dirs {
		names = append(names, n)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	for i, n := range names {
		if i%1024 == 0 {
			if err := x.ctx.Err(); err != nil {
				return err
			}
		}
		meta := x.dirs[n]
		mode := uint32(0o755)
		if meta != nil {
			mode = meta.mode
		}
		if err := x.root.Chmod(n, fsGoMode(mode)); err != nil {
			return err
		}
		if meta != nil && !meta.mtime.IsZero() {
			if err := x.root.Chtimes(n, time.Time{}, meta.mtime); err != nil {
				return err
			}
		}
	}
	return nil
}
