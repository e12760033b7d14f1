package runtime

// Diffs between snapshots of a workspace.
//
// DiffSnapshots mounts both trees read-only in temporary directories (a
// view of a committed snapshot, or the mounts of an active one with its
// upper directory turned into a lower one) and walks them side by side with
// continuity's fs.Changes, which compares entries with Lstat and never
// follows symlinks. The views are made under a snapshot-operation lease, so
// a berth killed mid-diff leaves nothing that ReconcileSnapshots or the
// lease's expiry does not remove.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
)

// Paging and size limits of DiffSnapshots.
const (
	DiffDefaultLimit = 200
	DiffMaxLimit     = 5000
	// DiffMaxChanges bounds the changes one DiffSnapshots call computes
	// (and holds in memory); past it the result is Truncated.
	DiffMaxChanges = 100_000
)

// Kinds and types of a Change.
const (
	ChangeAdded    = "added"
	ChangeModified = "modified"
	ChangeDeleted  = "deleted"

	ChangeTypeFile    = "file"
	ChangeTypeDir     = "dir"
	ChangeTypeSymlink = "symlink"
	ChangeTypeOther   = "other"
)

// Page selects part of a list: Limit entries from Offset. A Limit of zero
// or less means DiffDefaultLimit; more than DiffMaxLimit means DiffMaxLimit.
type Page struct {
	Offset int
	Limit  int
}

// Change is one path that differs between two trees.
type Change struct {
	Path string `json:"path"` // absolute within the container's root, e.g. "/data/x"
	Kind string `json:"kind"` // ChangeAdded, ChangeModified, ChangeDeleted
	Type string `json:"type"` // ChangeTypeFile, ChangeTypeDir, ChangeTypeSymlink, ChangeTypeOther
	// Size is a regular file's size in bytes: in the new tree for added
	// and modified files, in the old tree for deleted ones; 0 otherwise.
	Size int64 `json:"size"`
}

// SnapshotDiff is one page of the changes between two trees, sorted by
// path.
type SnapshotDiff struct {
	Changes []Change `json:"changes"`
	// Total is the number of changes computed: all of them, or
	// DiffMaxChanges when Truncated.
	Total int `json:"total"`
	// NextOffset is the Offset of the next page; 0 when this page is the
	// last one.
	NextOffset int `json:"next_offset,omitempty"`
	// Truncated says the trees differ in more than DiffMaxChanges paths;
	// the changes listed are the first DiffMaxChanges in walk order
	// (then sorted), so later paths are missing.
	Truncated bool `json:"truncated,omitempty"`
}

// diffChangeCap is DiffMaxChanges; tests lower it.
var diffChangeCap = DiffMaxChanges

// errDiffFull stops the walk once DiffMaxChanges changes are collected.
var errDiffFull = errors.New("diff change limit reached")

// DiffSnapshots lists the changes from snapshot fromKey to snapshot toKey
// of snapshotter. Either may be committed (a snapshot SnapshotContainer
// made, an image layer) or active (a container's writable layer: its
// SnapshotKey, diffed live while its task runs, without pausing it).
//
// What is reported, as fs.Changes does:
//   - a deleted directory is one change; its contents are implied;
//   - a directory is "modified" only when its mode, owner or file
//     capabilities change, not when its entries (or its mtime) do;
//   - a file is compared by type, mode, owner, size and mtime, and byte by
//     byte when one of the mtimes lacks nanoseconds (the files of a
//     snapshot come from a layer, whose mtimes lost them); extended
//     attributes other than security.capability are not compared;
//   - a directory replaced by a file is "modified" with the file's type.
//
// Each call walks both trees in full, so pages of a live layer may not
// agree with each other when it changes between calls; a file removed
// during the walk is retried a few times, then reported as an error.
func (r *Containerd) DiffSnapshots(ctx context.Context, snapshotter, fromKey, toKey string, page Page) (SnapshotDiff, error) {
	if fromKey == "" || toKey == "" {
		return SnapshotDiff{}, fmt.Errorf("%w: both snapshot keys are required", errdefs.ErrInvalidArgument)
	}
	if page.Offset < 0 {
		return SnapshotDiff{}, fmt.Errorf("%w: negative offset %d", errdefs.ErrInvalidArgument, page.Offset)
	}
	limit := page.Limit
	if limit <= 0 {
		limit = DiffDefaultLimit
	}
	if limit > DiffMaxLimit {
		limit = DiffMaxLimit
	}

	c, ctx, err := r.connect(ctx)
	if err != nil {
		return SnapshotDiff{}, err
	}
	sn := c.SnapshotService(snapshotter)
	for _, k := range []string{fromKey, toKey} {
		if _, err := sn.Stat(ctx, k); err != nil {
			return SnapshotDiff{}, fmt.Errorf("snapshot %s: %w", k, r.wrap(err))
		}
	}
	ctx, done, err := r.snapshotLease(ctx, c, "diff", toKey)
	if err != nil {
		return SnapshotDiff{}, err
	}
	// The views are removed here; the lease collects them if that fails
	// or berth dies first.
	defer done(false)

	suffix := randomSuffix()
	fromView, toView := fromKey+".diff-from-"+suffix, toKey+".diff-to-"+suffix
	fromMounts, viewed, err := r.readMounts(ctx, sn, fromKey, fromView)
	if err != nil {
		return SnapshotDiff{}, err
	}
	if viewed {
		defer r.removeQuietly(ctx, sn, fromView)
	}
	toMounts, viewed, err := r.readMounts(ctx, sn, toKey, toView)
	if err != nil {
		return SnapshotDiff{}, err
	}
	if viewed {
		defer r.removeQuietly(ctx, sn, toView)
	}

	var changes []Change
	truncated := false
	for attempt := 0; ; attempt++ {
		changes, truncated, err = diffMounts(ctx, fromMounts, toMounts)
		if err == nil || !errors.Is(err, iofs.ErrNotExist) || attempt == 2 || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return SnapshotDiff{}, fmt.Errorf("diff %s to %s: %w", fromKey, toKey, err)
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Path < changes[j].Path })

	out := SnapshotDiff{Total: len(changes), Truncated: truncated, Changes: []Change{}}
	if page.Offset < len(changes) {
		end := min(page.Offset+limit, len(changes))
		out.Changes = append(out.Changes, changes[page.Offset:end]...)
		if end < len(changes) {
			out.NextOffset = end
		}
	}
	return out, nil
}

// readMounts returns mounts that show snapshot key: a view (viewKey,
// removed with the operation's lease) of a committed snapshot, the
// snapshot's own mounts otherwise (viewed says which). They are meant to
// be mounted read-only.
func (r *Containerd) readMounts(ctx context.Context, sn snapshots.Snapshotter, key, viewKey string) (_ []mount.Mount, viewed bool, _ error) {
	info, err := sn.Stat(ctx, key)
	if err != nil {
		return nil, false, fmt.Errorf("snapshot %s: %w", key, r.wrap(err))
	}
	if info.Kind == snapshots.KindCommitted {
		m, err := sn.View(ctx, viewKey, key)
		if err != nil {
			return nil, false, fmt.Errorf("view of snapshot %s: %w", key, r.wrap(err))
		}
		return m, true, nil
	}
	m, err := sn.Mounts(ctx, key)
	if err != nil {
		return nil, false, fmt.Errorf("mounts of snapshot %s: %w", key, r.wrap(err))
	}
	return m, false, nil
}

// diffMounts mounts both trees read-only and collects their changes, at
// most DiffMaxChanges of them.
func diffMounts(ctx context.Context, fromMounts, toMounts []mount.Mount) ([]Change, bool, error) {
	var changes []Change
	truncated := false
	err := mount.WithReadonlyTempMount(ctx, fromMounts, func(fromRoot string) error {
		return mount.WithReadonlyTempMount(ctx, toMounts, func(toRoot string) error {
			err := fs.Changes(ctx, fromRoot, toRoot, func(k fs.ChangeKind, p string, fi os.FileInfo, err error) error {
				if err != nil {
					return err
				}
				ch := Change{Path: filepath.ToSlash(p)}
				switch k {
				case fs.ChangeKindAdd:
					ch.Kind = ChangeAdded
				case fs.ChangeKindModify:
					// Snapshots come from layers whose mtimes lost their
					// nanoseconds; fs.Changes calls such a file modified
					// unless both mtimes lost them.
					if same, err := sameTruncated(filepath.Join(fromRoot, p), filepath.Join(toRoot, p), fi); err != nil {
						return err
					} else if same {
						return nil
					}
					ch.Kind = ChangeModified
				case fs.ChangeKindDelete:
					ch.Kind = ChangeDeleted
					// fs.Changes gives no info for deletions; every
					// component above p is a directory of the old tree
					// (the walk does not descend symlinks).
					fi, err = os.Lstat(filepath.Join(fromRoot, p))
					if err != nil {
						fi = nil
					}
				default:
					return nil // unmodified (hard-linked) entries
				}
				ch.Type, ch.Size = fileType(fi)
				if len(changes) >= diffChangeCap {
					truncated = true
					return errDiffFull
				}
				changes = append(changes, ch)
				return nil
			})
			if errors.Is(err, errDiffFull) {
				return nil
			}
			return err
		})
	})
	return changes, truncated, err
}

// fileType names the type of fi and, for a regular file, its size.
func fileType(fi os.FileInfo) (string, int64) {
	if fi == nil {
		return ChangeTypeOther, 0
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		return ChangeTypeFile, fi.Size()
	case m.IsDir():
		return ChangeTypeDir, 0
	case m&os.ModeSymlink != 0:
		return ChangeTypeSymlink, 0
	}
	return ChangeTypeOther, 0
}

// sameTruncated says whether the entry at from is unchanged at to (whose
// Lstat is toInfo) when one of their mtimes was truncated to the second:
// same type, mode, owner, size, mtime second and content (or link target).
func sameTruncated(from, to string, toInfo os.FileInfo) (bool, error) {
	if toInfo == nil || toInfo.IsDir() {
		return false, nil
	}
	fromInfo, err := os.Lstat(from)
	if err != nil {
		return false, err
	}
	t1, t2 := fromInfo.ModTime(), toInfo.ModTime()
	if fromInfo.Mode() != toInfo.Mode() || fromInfo.Size() != toInfo.Size() ||
		t1.Unix() != t2.Unix() || (t1.Nanosecond() != 0 && t2.Nanosecond() != 0) {
		return false, nil
	}
	s1, ok1 := fromInfo.Sys().(*syscall.Stat_t)
	s2, ok2 := toInfo.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 || s1.Uid != s2.Uid || s1.Gid != s2.Gid || s1.Rdev != s2.Rdev {
		return false, nil
	}
	switch m := toInfo.Mode(); {
	case m&os.ModeSymlink != 0:
		l1, err := os.Readlink(from)
		if err != nil {
			return false, err
		}
		l2, err := os.Readlink(to)
		if err != nil {
			return false, err
		}
		return l1 == l2, nil
	case m.IsRegular():
		return sameContent(from, to)
	}
	return true, nil // devices, fifos, sockets: nothing more to compare
}

// sameContent compares two regular files byte by byte.
func sameContent(a, b string) (bool, error) {
	fa, err := os.OpenFile(a, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.OpenFile(b, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 32<<10), make([]byte, 32<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		aEnd := ea == io.EOF || ea == io.ErrUnexpectedEOF
		bEnd := eb == io.EOF || eb == io.ErrUnexpectedEOF
		if ea != nil && !aEnd {
			return false, ea
		}
		if eb != nil && !bEnd {
			return false, eb
		}
		if aEnd || bEnd {
			return aEnd && bEnd, nil
		}
	}
}
