package server

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// An import is all or nothing. The archive is extracted into a staging
// directory inside the target (P/.berth-import-NNN/tree), which is on the
// target's file system whatever is mounted where, so that the staged
// entries can be renamed into place. Only once the whole archive has been
// read and checked are they moved, after every clash with what is in the
// target has been checked too; a failure while moving is undone. The
// staging directory itself is never part of what is moved, and is removed
// at the end, whatever happened.

const (
	// archiveStagingPrefix names staging directories in the target.
	archiveStagingPrefix = ".berth-import-"
	// archiveStagingTree is the staged tree inside a staging directory;
	// a zip archive is spooled next to it.
	archiveStagingTree = "tree"
	archiveSpoolName   = "archive.zip"
	// archiveHeaderAllowance is how much tar stream one entry may take
	// besides its data (its headers, with PAX records for long names),
	// which bounds an archive of nothing but headers.
	archiveHeaderAllowance = 16 << 10
	// archiveMaxTrailing is how much is read after the end of an archive,
	// to check a gzip checksum and let the client finish sending its
	// padding before the answer comes.
	archiveMaxTrailing = 1 << 20
	// archiveZipDirBase and archiveZipDirPerEntry bound the bytes of a zip
	// central directory read into memory: its entries are read whole
	// before their number can be checked.
	archiveZipDirBase     = 32 << 20
	archiveZipDirPerEntry = 512
)

func (s *server) handleImport(w http.ResponseWriter, r *http.Request) {
	res, err := s.archiveImport(r.Context(), r.URL.Query(), r.Body)
	if err != nil {
		s.fsWriteError(w, r, err)
		return
	}
	fsWriteJSON(w, res)
}

// archiveLimit parses a limit: 0 or missing means def, more than maxV is
// lowered to maxV.
func archiveLimit(q url.Values, name string, def, maxV int64) (int64, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) && v[0] != '-' {
			return maxV, nil
		}
		return 0, fsErrorf(wire.CodeInvalid, "%s=%q is not an integer", name, fsShort(v))
	}
	switch {
	case n < 0:
		return 0, fsErrorf(wire.CodeInvalid, "%s must not be negative (got %d)", name, n)
	case n == 0:
		return def, nil
	}
	return min(n, maxV), nil
}

func (s *server) archiveImport(ctx context.Context, q url.Values, body io.Reader) (wire.ImportResult, error) {
	if err := archiveCheckQuery(q, "path", "format", "max_entries", "max_bytes", "restore"); err != nil {
		return wire.ImportResult{}, err
	}
	var restore bool
	switch q.Get("restore") {
	case "", "0":
	case "1":
		restore = true
	default:
		return wire.ImportResult{}, fsErrorf(wire.CodeInvalid, "restore must be 0 or 1")
	}
	format := q.Get("format")
	switch format {
	case "", wire.ArchiveFormatAuto:
		format = wire.ArchiveFormatAuto
	case "tgz":
		format = wire.ArchiveFormatTarGz
	case wire.ArchiveFormatTar, wire.ArchiveFormatTarGz, wire.ArchiveFormatZip:
	default:
		return wire.ImportResult{}, fsErrorf(wire.CodeInvalid, "format %q is not one of auto, tar, tar.gz, zip", fsShort(format))
	}
	maxEntries, err := archiveLimit(q, "max_entries", wire.ImportDefaultMaxEntries, wire.ImportMaxEntries)
	if err != nil {
		return wire.ImportResult{}, err
	}
	maxBytes, err := archiveLimit(q, "max_bytes", wire.ImportDefaultMaxBytes, wire.ImportMaxBytes)
	if err != nil {
		return wire.ImportResult{}, err
	}
	p, err := s.archiveTarget(q.Get("path"))
	if err != nil {
		return wire.ImportResult{}, err
	}
	uid, gid := s.fsOwner()
	target, _, err := s.archiveEnsureDir(p, uid, gid)
	if err != nil {
		return wire.ImportResult{}, err
	}
	defer target.dir.Close()
	done := false
	defer func() {
		if !done {
			// The target did not exist before; it must not after a failure.
			target.undo()
		}
		target.closeCreated()
	}()
	if err := s.fsCheckDir(target.dir, p, "import into"); err != nil {
		return wire.ImportResult{}, err
	}
	real := target.dir.realPath()

	stagingName, staging, err := archiveMkdirTemp(target.dir)
	if err != nil {
		return wire.ImportResult{}, fmt.Errorf("creating the staging directory in %s: %w", real, err)
	}
	defer staging.Close()
	keep := false
	defer func() {
		if !keep {
			if err := target.dir.removeAll(stagingName, s.fsGuard()); err != nil {
				s.log.Warn("import: removing the staging directory", "path", staging.path, "err", err)
			}
		}
	}()
	if err := staging.mkdir(archiveStagingTree, 0o700); err != nil {
		return wire.ImportResult{}, err
	}
	tree, err := staging.openDir(archiveStagingTree)
	if err != nil {
		return wire.ImportResult{}, err
	}
	defer tree.Close()
	// os.Root has no constructor from a descriptor; /proc/self/fd/N is
	// the directory the handle holds, wherever it is now.
	root, err := os.OpenRoot(fsFDPath(tree.fd))
	if err != nil {
		return wire.ImportResult{}, err
	}
	defer func() { _ = root.Close() }()

	x := newArchiveExtractor(ctx, root, []string{real, p}, maxEntries, maxBytes, uid, gid)
	x.restore = restore
	br := bufio.NewReaderSize(body, 64<<10)
	if format == wire.ArchiveFormatAuto {
		if format, err = archiveSniff(br); err != nil {
			return wire.ImportResult{}, err
		}
	}
	x.format = format
	switch format {
	case wire.ArchiveFormatZip:
		err = x.readZip(staging, br)
	case wire.ArchiveFormatTarGz:
		err = x.readTarGz(br)
	default:
		err = x.readTar(br)
	}
	if err == nil {
		err = x.finish()
	}
	if err != nil {
		return wire.ImportResult{}, err
	}
	// Everything staged reaches the disk before it becomes visible in
	// the target, so a crash cannot leave renamed entries without their
	// content.
	_ = unix.Syncfs(tree.fd)

	m := &archiveMerge{target: target.dir, realP: real, staging: stagingName, guard: s.fsGuard()}
	if err := m.run(ctx); err != nil {
		keep = m.keepStaging
		return wire.ImportResult{}, err
	}
	target.dir.sync()
	done = true
	res := x.res
	res.Path = real
	res.Replaced = m.replaced
	s.log.Info("import done", "path", real, "format", format, "entries", res.Entries, "bytes", res.Bytes, "replaced", res.Replaced)
	return res, nil
}

// fsFDPath names an open file through /proc, for APIs that take a path.
func fsFDPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// archiveMkdirTemp creates a new staging directory in d and opens it.
func archiveMkdirTemp(d *fsDir) (string, *fsDir, error) {
	for range 100 {
		var rnd [6]byte
		_, _ = rand.Read(rnd[:])
		name := archiveStagingPrefix + hex.EncodeToString(rnd[:])
		err := d.mkdir(name, 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		sub, err := d.openDir(name)
		if err != nil {
			return "", nil, err
		}
		return name, sub, nil
	}
	return "", nil, fmt.Errorf("too many name collisions in %s", d.path)
}

// archiveSniff tells the format from the first bytes.
func archiveSniff(br *bufio.Reader) (string, error) {
	head, err := br.Peek(4)
	if len(head) == 0 {
		if err != nil && err != io.EOF {
			return "", err
		}
		return "", fsErrorf(wire.CodeInvalid, "the archive is empty")
	}
	return wire.SniffArchiveFormat(head), nil
}

// archiveDest is the directory an import goes into, and what making it
// created.
type archiveDest struct {
	dir *fsDir
	// created are the directories made for it, outermost first, each
	// as its parent's handle and its name.
	created []archiveCreated
}

type archiveCreated struct {
	parent *fsDir
	name   string
}

// undo removes the directories made for the import, innermost first;
// one that is no longer empty stays.
func (a *archiveDest) undo() {
	for i := len(a.created) - 1; i >= 0; i-- {
		_ = a.created[i].parent.unlink(a.created[i].name, unix.AT_REMOVEDIR)
	}
	a.closeCreated()
}

func (a *archiveDest) closeCreated() {
	for _, c := range a.created {
		c.parent.Close()
	}
	a.created = nil
}

// archiveEnsureDir opens p as a directory (following symlinks), creating
// it and its missing parents for the workspace user, one handle at a
// time, and remembers what it created so that a failed import can remove
// it.
func (s *server) archiveEnsureDir(p string, uid, gid int) (*archiveDest, bool, error) {
	d, err := fsOpenDir(p)
	if err == nil {
		return &archiveDest{dir: d}, false, nil
	}
	if errors.Is(err, unix.ENOTDIR) {
		return nil, false, fsErrorf(wire.CodeNotDirectory, "%s exists and is not a directory", p)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fsNotFound(p, err)
	}
	a := &archiveDest{}
	cur, err := fsOpenDir("/")
	if err != nil {
		return nil, false, err
	}
	for rest := strings.TrimPrefix(p, "/"); rest != ""; {
		var name string
		name, rest, _ = strings.Cut(rest, "/")
		at := cur.join(name)
		next, err := fsOpenDirAt(cur.fd, name, true, at)
		if errors.Is(err, fs.ErrNotExist) {
			next, err = s.fsMkdirIn(cur, name, at, uid, gid)
			if err == nil {
				// cur stays open as the parent of what was created.
				a.created = append(a.created, archiveCreated{parent: cur, name: name})
				cur = next
				continue
			}
		}
		if !a.owns(cur) {
			cur.Close()
		}
		if err != nil {
			a.undo()
			if errors.Is(err, unix.ENOTDIR) {
				return nil, false, fsErrorf(wire.CodeNotDirectory, "%s exists and is not a directory", at)
			}
			return nil, false, fsNotFound(at, err)
		}
		cur = next
	}
	a.dir = cur
	return a, len(a.created) > 0, nil
}

func (a *archiveDest) owns(d *fsDir) bool {
	for _, c := range a.created {
		if c.parent == d {
			return true
		}
	}
	return false
}

// broken turns a failure to read the archive into a message that says
// where it happened; the limits and cancellation keep their own errors.
func (x *archiveExtractor) broken(err error) error {
	var fe *fsError
	if errors.As(err, &fe) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if cerr := x.ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fsErrorf(wire.CodeInvalid, "the %s archive ends early, after %d entries (truncated upload?); nothing was imported", x.format, x.res.Entries)
	}
	return fsErrorf(wire.CodeInvalid, "the %s archive is not valid after %d entries: %v; nothing was imported", x.format, x.res.Entries, err)
}

// archiveCapReader ends a stream with err after limit bytes.
type archiveCapReader struct {
	r    io.Reader
	left int64
	err  error
}

func (c *archiveCapReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, c.err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func (x *archiveExtractor) readTarGz(r *bufio.Reader) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return x.broken(err)
	}
	if err := x.readTar(gz); err != nil {
		return err
	}
	// The rest of the gzip stream: the tar's padding and the checksum,
	// which covers what was extracted. Data after the gzip stream that is
	// not another gzip member is ignored, as gzip itself does.
	if _, err := io.Copy(io.Discard, io.LimitReader(gz, archiveMaxTrailing)); err != nil && !errors.Is(err, gzip.ErrHeader) {
		return x.broken(err)
	}
	archiveDrain(r)
	return nil
}

// archiveDrain reads what the client still sends after the archive, up to
// a bound, so that it can finish its request before the answer comes.
func archiveDrain(r io.Reader) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r, archiveMaxTrailing))
}

func (x *archiveExtractor) readTar(r io.Reader) error {
	// A tar stream is its files' data plus headers; anything longer is
	// headers without end, which the entry count alone would not stop
	// (PAX and GNU long-name headers are not entries).
	limit := x.maxBytes + x.maxEntries*archiveHeaderAllowance + archiveMaxTrailing
	capped := &archiveCapReader{r: r, left: limit, err: fsErrorf(wire.CodeTooLarge, "the tar stream is longer than %d bytes, more than its max_bytes and max_entries allow; nothing was imported", limit)}
	tr := tar.NewReader(capped)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		// ErrInsecurePath comes with a valid header, and add refuses the
		// name with a better message.
		if err != nil && !(errors.Is(err, tar.ErrInsecurePath) && hdr != nil) {
			return x.broken(err)
		}
		if err := x.count(); err != nil {
			return err
		}
		e := archiveEntry{
			name:  hdr.Name,
			mode:  uint32(hdr.Mode & 0o7777),
			mtime: hdr.ModTime,
			size:  hdr.Size,
			link:  hdr.Linkname,
		}
		switch hdr.Typeflag {
		case tar.TypeXGlobalHeader:
			// Defaults for the following entries (git archive puts the
			// commit here), not an entry itself.
			continue
		case tar.TypeDir:
			e.kind = archiveDir
		case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
			// A sparse file reads with its holes as zeros, counted in full
			// against max_bytes; they become holes again on disk.
			e.kind = archiveFile
		case tar.TypeSymlink:
			e.kind = archiveSymlink
		case tar.TypeLink:
			e.kind = archiveHardlink
		case tar.TypeChar:
			e.what = "a character device"
		case tar.TypeBlock:
			e.what = "a block device"
		case tar.TypeFifo:
			e.what = "a named pipe"
		default:
			e.what = fmt.Sprintf("an entry of tar type %q", hdr.Typeflag)
		}
		if err := x.add(&e, tr); err != nil {
			return err
		}
	}
	archiveDrain(capped)
	return nil
}

// archiveZipReaderAt reads the spooled zip, failing once more than left
// bytes were read while left >= 0.
type archiveZipReaderAt struct {
	r        io.ReaderAt
	left     int64
	exceeded bool
}

func (z *archiveZipReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if z.left >= 0 {
		if int64(len(p)) > z.left {
			z.exceeded = true
			return 0, errors.New("zip central directory too large")
		}
		z.left -= int64(len(p))
	}
	return z.r.ReadAt(p, off)
}

// readZip spools the zip (it is read from its end) into the staging
// directory, next to the staging tree, and extracts it.
func (x *archiveExtractor) readZip(staging *fsDir, body io.Reader) error {
	f, err := staging.openFile(archiveSpoolName, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, io.LimitReader(body, x.maxBytes+1), x.buf)
	if err != nil {
		return x.broken(err)
	}
	if n > x.maxBytes {
		return fsErrorf(wire.CodeTooLarge, "the zip archive is larger than max_bytes (%d); nothing was imported", x.maxBytes)
	}
	if n == 0 {
		return fsErrorf(wire.CodeInvalid, "the archive is empty")
	}
	ra := &archiveZipReaderAt{r: f, left: archiveZipDirBase + x.maxEntries*archiveZipDirPerEntry}
	zr, err := zip.NewReader(ra, n)
	if ra.exceeded {
		return fsErrorf(wire.CodeLimit, "the zip archive's central directory is larger than its max_entries (%d) allow; nothing was imported", x.maxEntries)
	}
	if err != nil && !(errors.Is(err, zip.ErrInsecurePath) && zr != nil) {
		return x.broken(err)
	}
	ra.left = -1
	if int64(len(zr.File)) > x.maxEntries {
		return fsErrorf(wire.CodeLimit, "the archive has %d entries, more than max_entries (%d); nothing was imported", len(zr.File), x.maxEntries)
	}
	// The sizes in the central directory are checked against the data as
	// it is read; refusing an oversized archive up front saves writing
	// most of it first.
	var total uint64
	for _, zf := range zr.File {
		if zf.Mode().Type() != 0 {
			continue
		}
		total += min(zf.UncompressedSize64, math.MaxInt64/2)
		if total > uint64(x.maxBytes) {
			return fsErrorf(wire.CodeTooLarge, "the zip archive's files expand to more than max_bytes (%d) by their declared sizes (entry %q reaches %d); nothing was imported", x.maxBytes, fsShort(zf.Name), total)
		}
	}
	for _, zf := range zr.File {
		if err := x.count(); err != nil {
			return err
		}
		if err := x.zipEntry(zf); err != nil {
			return err
		}
	}
	return nil
}

// Zip creators whose external attributes carry Unix modes.
const (
	zipCreatorUnix  = 3
	zipCreatorMacOS = 19
)

func (x *archiveExtractor) zipEntry(zf *zip.File) error {
	m := zf.Mode()
	e := archiveEntry{name: zf.Name, mode: fsModeBits(m), mtime: zf.Modified}
	if c := zf.CreatorVersion >> 8; c != zipCreatorUnix && c != zipCreatorMacOS {
		// DOS attributes only say "read-only", which Go turns into 0666 or
		// 0444; a umask makes that 0644, as unzip does.
		e.mode &^= 0o022
	}
	if zf.Flags&0x1 != 0 {
		return x.invalid(&e, "it is encrypted, which import does not support")
	}
	switch {
	case m.IsDir():
		e.kind = archiveDir
		return x.add(&e, nil)
	case m&fs.ModeSymlink != 0:
		e.kind = archiveSymlink
		rc, err := zf.Open()
		if err != nil {
			return x.broken(err)
		}
		target, err := io.ReadAll(io.LimitReader(rc, wire.MaxPathLength+1))
		_ = rc.Close()
		if err != nil {
			return x.broken(err)
		}
		if len(target) > wire.MaxPathLength {
			return x.invalid(&e, "its symlink target is longer than %d bytes", wire.MaxPathLength)
		}
		e.link = string(target)
		return x.add(&e, nil)
	case m.Type() != 0:
		e.what = fsDescribeType(m)
		return x.add(&e, nil)
	}
	e.kind = archiveFile
	if zf.UncompressedSize64 > math.MaxInt64 {
		return fsErrorf(wire.CodeTooLarge, "entry %q: it declares %d bytes; nothing was imported", fsShort(zf.Name), zf.UncompressedSize64)
	}
	e.size = int64(zf.UncompressedSize64)
	// Checked before opening, which would fail first on an unknown
	// compression method of an entry that is refused anyway.
	if _, err := archiveCleanName(zf.Name); err != nil {
		return x.invalid(&e, "%v", err)
	}
	rc, err := zf.Open()
	if err != nil {
		if errors.Is(err, zip.ErrAlgorithm) {
			return x.invalid(&e, "it uses compression method %d, which import does not support (only store and deflate)", zf.Method)
		}
		return x.broken(err)
	}
	defer func() { _ = rc.Close() }()
	return x.add(&e, rc)
}
