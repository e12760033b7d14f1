package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"sync"
	"syscall"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// Moving a staged import into its target. The staged tree is laid over the
// target: a directory that exists in both is merged into, an entry the
// target lacks is renamed into place whole, a file or symlink replaces a
// file or symlink. Every clash (a directory against anything else, or an
// entry the import will not replace) is found before the first rename, so
// a refused import leaves the target as it was; a rename that fails
// anyway (the workspace changed the target meanwhile) is undone.
//
// Symlinks in the target are never followed: a symlink where the archive
// has a directory is a clash, not a way out of the target.

// archiveMergeMu serializes the merges of all imports, so that two imports
// into overlapping trees cannot interleave their checks and renames.
var archiveMergeMu sync.Mutex

// How a planned step was carried out, for undoing it.
type archiveHow int

const (
	archivePending archiveHow = iota
	archiveRenamed
	archiveExchanged
	archiveBackedUp
)

type archiveOp struct {
	// rel is the entry's path relative to the target (and to the staged
	// tree).
	rel string
	// replace says an entry of the target is replaced.
	replace bool
	how     archiveHow
	backup  string
}

type archiveMerge struct {
	// target is the directory imported into, realP its path.
	target *fsDir
	guard  *fsProtect
	realP  string
	// staging is the base name of the staging directory in realP.
	staging     string
	root        *os.Root
	dev         uint64
	ops         []archiveOp
	replaced    int64
	keepStaging bool
}

func (m *archiveMerge) staged(rel string) string {
	return path.Join(m.staging, archiveStagingTree, rel)
}

func (m *archiveMerge) run(ctx context.Context) error {
	// Through the handle that was checked, not by its path again.
	root, err := os.OpenRoot(fsFDPath(m.target.fd))
	if err != nil {
		return err
	}
	defer func() { _ = root.Close() }()
	m.root = root
	fi, err := root.Lstat(m.staged(""))
	if err != nil {
		return err
	}
	m.dev = archiveDev(fi)

	archiveMergeMu.Lock()
	defer archiveMergeMu.Unlock()
	if err := m.plan(ctx, ""); err != nil {
		return err
	}
	// From here on the import goes through or is undone; a client that
	// hangs up must not leave it half applied.
	return m.apply()
}

func archiveDev(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Dev
	}
	return 0
}

func archiveDescribe(m fs.FileMode) string {
	if m.IsRegular() {
		return "a file"
	}
	return fsDescribeType(m)
}

// plan compares the staged directory rel with the same directory of the
// target, which both exist.
func (m *archiveMerge) plan(ctx context.Context, rel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, err := m.root.Open(m.staged(rel))
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	_ = d.Close()
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, n := range names {
		r := path.Join(rel, n)
		dest := fsJoin(m.realP, r)
		if rel == "" && n == m.staging {
			return fsErrorf(wire.CodeConflict, "the archive has an entry %q, the name of this import's own staging directory; nothing was imported", n)
		}
		sfi, err := m.root.Lstat(m.staged(r))
		if err != nil {
			return err
		}
		dfi, err := m.root.Lstat(r)
		if errors.Is(err, fs.ErrNotExist) {
			m.ops = append(m.ops, archiveOp{rel: r})
			continue
		}
		if err != nil {
			return fsNotFound(dest, err)
		}
		sm, dm := sfi.Mode(), dfi.Mode()
		switch {
		case sm.IsDir() && dm.IsDir():
			if err := m.checkProtected(r, dest); err != nil {
				return err
			}
			if archiveDev(dfi) != m.dev {
				return fsErrorf(wire.CodeInvalid, "%s is on another file system than %s (a mount point); import into %s itself; nothing was imported", dest, m.realP, dest)
			}
			if err := m.plan(ctx, r); err != nil {
				return err
			}
		case sm.IsDir():
			return fsErrorf(wire.CodeNotDirectory, "the archive has a directory %q where %s is %s; nothing was imported", r, dest, archiveDescribe(dm))
		case dm.IsDir():
			return fsErrorf(wire.CodeIsDirectory, "the archive has %s %q where %s is a directory; nothing was imported", archiveDescribe(sm), r, dest)
		case dm.IsRegular() || dm&fs.ModeSymlink != 0:
			m.ops = append(m.ops, archiveOp{rel: r, replace: true})
			m.replaced++
		default:
			return fsErrorf(wire.CodeConflict, "the archive has %s %q where %s is %s, which import does not replace; nothing was imported", archiveDescribe(sm), r, dest, archiveDescribe(dm))
		}
	}
	return nil
}

// checkProtected keeps an import out of berth's own directories, which a
// target above them (/run, say) would otherwise reach: the target itself
// was checked, and below it only a directory that is one of them (a mount
// point) leads into one.
func (m *archiveMerge) checkProtected(rel, dest string) error {
	d, err := m.root.Open(rel)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	dir := &fsDir{f: d, fd: int(d.Fd()), path: dest}
	if prot := m.guard.is(dir); prot != "" {
		return fsErrorf(wire.CodePermission, "the archive would write into %s, which belongs to berth; nothing was imported", prot)
	}
	return nil
}

func (m *archiveMerge) apply() error {
	for i := range m.ops {
		op := &m.ops[i]
		if err := m.move(op, i); err != nil {
			if uerr := m.undo(i); uerr != nil {
				m.keepStaging = true
				return fsErrorf(wire.CodeInternal, "moving %s into place failed (%v), and undoing the import failed too (%v): %s may be partly changed; the staged and the replaced entries are kept in %s",
					fsJoin(m.realP, op.rel), err, uerr, m.realP, fsJoin(m.realP, m.staging))
			}
			return fmt.Errorf("moving %s into place (the target changed during the import?): %w; nothing was imported", fsJoin(m.realP, op.rel), err)
		}
	}
	return nil
}

func (m *archiveMerge) move(op *archiveOp, i int) error {
	src, dst := m.staged(op.rel), op.rel
	if !op.replace {
		err := m.rename(src, dst, unix.RENAME_NOREPLACE)
		if archiveNoFlags(err) {
			// A file system without RENAME_NOREPLACE: check, then rename.
			if _, lerr := m.root.Lstat(dst); lerr == nil {
				return &os.LinkError{Op: "rename", Old: src, New: dst, Err: syscall.EEXIST}
			}
			err = m.rename(src, dst, 0)
		}
		if err == nil {
			op.how = archiveRenamed
		}
		return err
	}
	// Swapped atomically, so the target never lacks the file; the old one
	// ends up in the staging tree and goes with it.
	err := m.rename(src, dst, unix.RENAME_EXCHANGE)
	if err == nil {
		op.how = archiveExchanged
		return nil
	}
	if !archiveNoFlags(err) {
		return err
	}
	backup := path.Join(m.staging, "replaced-"+strconv.Itoa(i))
	if err := m.rename(dst, backup, 0); err != nil {
		return err
	}
	if err := m.rename(src, dst, 0); err != nil {
		_ = m.rename(backup, dst, 0)
		return err
	}
	op.how = archiveBackedUp
	op.backup = backup
	return nil
}

// archiveNoFlags says renameat2 does not support the flags asked for here.
func archiveNoFlags(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)
}

// undo reverts the first n steps, last first.
func (m *archiveMerge) undo(n int) error {
	var errs []error
	for i := n - 1; i >= 0; i-- {
		op := &m.ops[i]
		src, dst := m.staged(op.rel), op.rel
		var err error
		switch op.how {
		case archiveRenamed:
			err = m.rename(dst, src, 0)
		case archiveExchanged:
			err = m.rename(src, dst, unix.RENAME_EXCHANGE)
		case archiveBackedUp:
			if err = m.rename(dst, src, 0); err == nil {
				err = m.rename(op.backup, dst, 0)
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rename renames within the target, through directories opened by the
// root, so that no symlink along either path is followed out of it.
func (m *archiveMerge) rename(from, to string, flags uint) error {
	fd, err := m.root.Open(path.Dir(from))
	if err != nil {
		return err
	}
	defer func() { _ = fd.Close() }()
	td, err := m.root.Open(path.Dir(to))
	if err != nil {
		return err
	}
	defer func() { _ = td.Close() }()
	if err := unix.Renameat2(int(fd.Fd()), path.Base(from), int(td.Fd()), path.Base(to), flags); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
