package runtime

// Incremental snapshots on overlayfs.
//
// A container's active overlay snapshot keeps every change since its
// parent in one upper directory. After each version, berth records a
// manifest of that directory (path, inode, size, mtime, ctime, mode,
// owner of every entry) in the content store and labels the active
// snapshot with it and with the version it describes (its base). The next
// snapshot walks only the upper directory, not the merged tree or the
// image, and while the task is paused copies just the entries that differ
// from the manifest (reflinked where the filesystem can). After the resume
// those entries, whiteouts for the paths that left the upper directory,
// and opaque markers become an uncompressed layer that is applied on top of
// the base version. A version therefore holds what changed since the
// previous one, and the pause follows the change plus one walk of the
// upper directory's entries.
//
// ctime catches every change of content, metadata, link count and rename
// of an inode, but the kernel stamps it from a coarse clock: an entry
// changed after a capture may carry the same ctime as when it was
// captured. Each capture starts by creating a file next to the upper
// directory; an entry whose ctime is not earlier than that file's counts as
// changed at the next capture (it was racily clean).
//
// Overlay features that make the upper directory depend on the lower ones
// (redirect_dir, metacopy) are not read here: an entry carrying them makes
// the snapshot fall back to the diff service, which is always correct.

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/mount"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// Labels of an active snapshot whose upper directory a version describes.
const (
	// labelUpperBase names the version the manifest describes.
	labelUpperBase = snapshotLabelPrefix + "upper-base"
	// labelUpperManifest references the manifest blob, which keeps it
	// from the garbage collector while the active snapshot lives.
	labelUpperManifest = "containerd.io/gc.ref.content.berth.upper"
)

// errNotIncremental says the upper directory cannot be read on its own.
var errNotIncremental = errors.New("upper directory needs the lower layers")

// upperEntry is what the manifest records of one upper directory entry.
type upperEntry struct {
	Path  string `json:"p"`
	Ino   uint64 `json:"i"`
	Size  int64  `json:"s"`
	Mtime int64  `json:"m"`
	Ctime int64  `json:"c"`
	Mode  uint32 `json:"o"`
	UID   uint32 `json:"u"`
	GID   uint32 `json:"g"`
}

// upperManifest describes an upper directory as captured for a version.
type upperManifest struct {
	// RacyAfter: entries with a ctime at or after it (unix ns) count as
	// changed at the next capture whatever their record says.
	RacyAfter int64        `json:"racy_after"`
	Entries   []upperEntry `json:"entries"`
}

// capturedEntry is one changed entry, read while the task was paused.
type capturedEntry struct {
	upperEntry
	rdev     uint64
	link     string            // symlink target
	xattrs   map[string]string // without overlay's own
	staged   string            // copy of a regular file's content
	linkTo   string            // earlier path of the same inode in this layer
	whiteout bool
	opaque   bool
}

// upperCapture is what changed in an upper directory since a manifest.
type upperCapture struct {
	changed  []capturedEntry
	deleted  []string // paths to white out
	manifest upperManifest
}

// overlayUpper returns the upper directory of an overlay mount, or "".
func overlayUpper(mounts []mount.Mount) string {
	if len(mounts) != 1 || mounts[0].Type != "overlay" {
		return ""
	}
	for _, o := range mounts[0].Options {
		if dir, ok := strings.CutPrefix(o, "upperdir="); ok {
			return dir
		}
	}
	return ""
}

// captureUpper walks upper and copies into stage what differs from prev
// (nil: everything). The task must be paused; stage is an empty directory
// on the upper directory's filesystem.
func captureUpper(upper, stage string, prev *upperManifest) (*upperCapture, error) {
	old := map[string]upperEntry{}
	racyAfter := int64(0)
	if prev != nil {
		for _, e := range prev.Entries {
			old[e.Path] = e
		}
		racyAfter = prev.RacyAfter
	}
	stamp := filepath.Join(stage, "stamp")
	if err := os.WriteFile(stamp, nil, 0o600); err != nil {
		return nil, err
	}
	var sst unix.Stat_t
	if err := unix.Lstat(stamp, &sst); err != nil {
		return nil, err
	}
	out := &upperCapture{manifest: upperManifest{RacyAfter: sst.Ctim.Nano()}}
	type present struct {
		dir, whiteout, newOpaque bool
	}
	now := map[string]present{}
	firstOfInode := map[uint64]string{}
	n := 0
	err := filepath.WalkDir(upper, func(p string, _ iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == upper {
			return nil
		}
		rel, err := filepath.Rel(upper, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := upperEntry{
			Path: rel, Ino: st.Ino, Size: st.Size,
			Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(),
			Mode: st.Mode, UID: st.Uid, GID: st.Gid,
		}
		out.manifest.Entries = append(out.manifest.Entries, e)
		typ := st.Mode & unix.S_IFMT
		pr := present{dir: typ == unix.S_IFDIR, whiteout: typ == unix.S_IFCHR && st.Rdev == 0}
		was, known := old[rel]
		if known && was == e && e.Ctime < racyAfter {
			now[rel] = pr
			return nil
		}
		c := capturedEntry{upperEntry: e, rdev: st.Rdev, whiteout: pr.whiteout}
		if !c.whiteout {
			xs, err := readXattrs(p)
			if err != nil {
				return err
			}
			for k, v := range xs {
				switch {
				case k == "trusted.overlay.opaque":
					// A directory made opaque keeps that inode; a known one
					// was opaque in the base version already.
					c.opaque = typ == unix.S_IFDIR && v == "y" && (!known || was.Ino != e.Ino)
				case strings.HasPrefix(k, "trusted.overlay."):
					if k == "trusted.overlay.redirect" || k == "trusted.overlay.metacopy" {
						return fmt.Errorf("%w: %s has %s", errNotIncremental, rel, k)
					}
				default:
					if c.xattrs == nil {
						c.xattrs = map[string]string{}
					}
					c.xattrs[k] = v
				}
			}
		}
		pr.newOpaque = c.opaque
		now[rel] = pr
		switch typ {
		case unix.S_IFLNK:
			if c.link, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFREG:
			if first, ok := firstOfInode[st.Ino]; ok && st.Nlink > 1 {
				c.linkTo = first
				break
			}
			firstOfInode[st.Ino] = rel
			n++
			c.staged = filepath.Join(stage, fmt.Sprint(n))
			if err := copyContent(p, c.staged); err != nil {
				return err
			}
		}
		out.changed = append(out.changed, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for p := range old {
		if _, ok := now[p]; ok {
			continue
		}
		// Only the topmost path that left: a whiteout or a new opaque
		// directory above it, or a parent that went too, covers the rest.
		dir := path.Dir(p)
		if dir != "." {
			pr, ok := now[dir]
			if !ok || !pr.dir || pr.newOpaque {
				continue
			}
		}
		out.deleted = append(out.deleted, p)
	}
	return out, nil
}

// readXattrs returns the extended attributes of p, not following a symlink.
func readXattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		vs, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				continue
			}
			return nil, err
		}
		v := make([]byte, vs)
		vs, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, err
		}
		out[name] = string(v[:vs])
	}
	return out, nil
}

// copyContent copies a regular file's bytes: a reflink where the
// filesystem shares extents, else a kernel-side copy.
func copyContent(src, dst string) error {
	// The task is paused, so src is still the regular file just seen;
	// O_NOFOLLOW keeps it so regardless.
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) != nil {
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
	}
	return out.Close()
}

// writeUpperLayer writes the captured changes as an uncompressed OCI layer
// into w and returns its descriptor.
func writeUpperLayer(capt *upperCapture, w io.Writer) (ocispec.Descriptor, error) {
	dg := digest.Canonical.Digester()
	cw := &countingWriter{w: io.MultiWriter(w, dg.Hash())}
	tw := tar.NewWriter(cw)
	whiteout := func(p string) error {
		return tw.WriteHeader(&tar.Header{
			Name: path.Join(path.Dir(p), ".wh."+path.Base(p)), Typeflag: tar.TypeReg,
			Mode: 0o600, Format: tar.FormatPAX, ModTime: time.Unix(0, 0),
		})
	}
	for _, c := range capt.changed {
		if c.whiteout {
			if err := whiteout(c.Path); err != nil {
				return ocispec.Descriptor{}, err
			}
			continue
		}
		hdr := &tar.Header{
			Name: c.Path, Mode: int64(c.Mode & 0o7777), Uid: int(c.UID), Gid: int(c.GID),
			ModTime: time.Unix(0, c.Mtime), Format: tar.FormatPAX,
		}
		for k, v := range c.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		switch c.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			hdr.Typeflag, hdr.Name = tar.TypeDir, c.Path+"/"
		case unix.S_IFREG:
			if c.linkTo != "" {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, c.linkTo
			} else {
				hdr.Typeflag, hdr.Size = tar.TypeReg, c.Size
			}
		case unix.S_IFLNK:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, c.link
		case unix.S_IFCHR, unix.S_IFBLK:
			hdr.Typeflag = tar.TypeChar
			if c.Mode&unix.S_IFMT == unix.S_IFBLK {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor, hdr.Devminor = int64(unix.Major(c.rdev)), int64(unix.Minor(c.rdev))
		case unix.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			continue // sockets have no place in a layer
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return ocispec.Descriptor{}, err
		}
		if hdr.Typeflag == tar.TypeReg {
			if err := copyStaged(tw, c.staged, c.Size); err != nil {
				return ocispec.Descriptor{}, fmt.Errorf("%s: %w", c.Path, err)
			}
		}
		if c.opaque {
			if err := tw.WriteHeader(&tar.Header{
				Name: c.Path + "/.wh..wh..opq", Typeflag: tar.TypeReg,
				Mode: 0o600, Format: tar.FormatPAX, ModTime: time.Unix(0, 0),
			}); err != nil {
				return ocispec.Descriptor{}, err
			}
		}
	}
	for _, p := range capt.deleted {
		if err := whiteout(p); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: dg.Digest(), Size: cw.n}, nil
}

// copyStaged writes exactly size bytes of the staged copy.
func copyStaged(w io.Writer, staged string, size int64) error {
	f, err := os.Open(staged)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyN(w, f, size)
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// storeUpperLayer writes the captured changes into the content store,
// under the lease ctx carries. The layer is packed into a file of stage
// first, so that its digest is known when the content store is asked:
// then an identical layer already there (no change at all is one) is
// added to the lease in the same step, and the garbage collector cannot
// take it before it is applied.
func storeUpperLayer(ctx context.Context, cs content.Ingester, capt *upperCapture, stage, ref string) (ocispec.Descriptor, error) {
	f, err := os.CreateTemp(stage, "layer-")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer f.Close()
	desc, err := writeUpperLayer(capt, f)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := content.WriteBlob(ctx, cs, ref, f, desc); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}

// loadUpperManifest reads the manifest an active snapshot's labels name,
// or returns nil when there is none to build on.
func loadUpperManifest(ctx context.Context, cs content.Provider, labels map[string]string) (*upperManifest, error) {
	ref := labels[labelUpperManifest]
	if ref == "" || labels[labelUpperBase] == "" {
		return nil, nil
	}
	dgst, err := digest.Parse(ref)
	if err != nil {
		return nil, nil
	}
	var m upperManifest
	if err := readJSONBlob(ctx, cs, ocispec.Descriptor{Digest: dgst}, &m); err != nil {
		return nil, err
	}
	return &m, nil
}
