package agent

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"

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
		return 0, fsErrorf(CodeInvalid, "%s=%q is not an integer", name, fsShort(v))
	}
	switch {
	case n < 0:
		return 0, fsErrorf(CodeInvalid, "%s must not be negative (got %d)", name, n)
	case n == 0:
		return def, nil
	}
	return min(n, maxV), nil
}

func (s *server) archiveImport(ctx context.Context, q url.Values, body io.Reader) (ImportResult, error) {
	if err := archiveCheckQuery(q, "path", "format", "max_entries", "max_bytes"); err != nil {
		return ImportResult{}, err
	}
	format := q.Get("format")
	switch format {
	case "", ArchiveFormatAuto:
		format = ArchiveFormatAuto
	case "tgz":
		format = ArchiveFormatTarGz
	case ArchiveFormatTar, ArchiveFormatTarGz, ArchiveFormatZip:
	default:
		return ImportResult{}, fsErrorf(CodeInvalid, "format %q is not one of auto, tar, tar.gz, zip", fsShort(format))
	}
	maxEntries, err := archiveLimit(q, "max_entries", ImportDefaultMaxEntries, ImportMaxEntries)
	if err != nil {
		return ImportResult{}, err
	}
	maxBytes, err := archiveLimit(q, "max_bytes", ImportDefaultMaxBytes, ImportMaxBytes)
	if err != nil {
		return ImportResult{}, err
	}
	p, err := s.archiveTarget(q.Get("path"))
	if err != nil {
		return ImportResult{}, err
	}
	if err := fsCheckMutable(p, "import into", false); err != nil {
		return ImportResult{}, err
	}
	uid, gid := s.fsOwner()
	real, created, err := archiveEnsureDir(p, uid, gid)
	if err != nil {
		return ImportResult{}, err
	}
	done := false
	defer func() {
		if !done {
			// The target did not exist before; it must not after a failure.
			for i := len(created) - 1; i >= 0; i-- {
				_ = os.Remove(created[i])
			}
		}
	}()
	if real != p {
		if err := fsCheckMutable(real, "import into", false); err != nil {
			return ImportResult{}, err
		}
	}

	staging, err := os.MkdirTemp(real, archiveStagingPrefix+"*")
	if err != nil {
		return ImportResult{}, fmt.Errorf("creating the staging directory in %s: %w", real, err)
	}
	keep := false
	defer func() {
		if !keep {
			if err := archiveRemoveAll(staging); err != nil {
				s.log.Warn("import: removing the staging directory", "path", staging, "err", err)
			}
		}
	}()
	tree := path.Join(staging, archiveStagingTree)
	if err := os.Mkdir(tree, 0o700); err != nil {
		return ImportResult{}, err
	}
	root, err := os.OpenRoot(tree)
	if err != nil {
		return ImportResult{}, err
	}
	defer func() { _ = root.Close() }()

	x := newArchiveExtractor(ctx, root, []string{real, p}, maxEntries, maxBytes, uid, gid)
	br := bufio.NewReaderSize(body, 64<<10)
	if format == ArchiveFormatAuto {
		if format, err = archiveSniff(br); err != nil {
			return ImportResult{}, err
		}
	}
	x.format = format
	switch format {
	case ArchiveFormatZip:
		err = x.readZip(path.Join(staging, archiveSpoolName), br)
	case ArchiveFormatTarGz:
		err = x.readTarGz(br)
	default:
		err = x.readTar(br)
	}
	if err == nil {
		err = x.finish()
	}
	if err != nil {
		return ImportResult{}, err
	}
	// Everything staged reaches the disk before it becomes visible in
	// the target, so a crash cannot leave renamed entries without their
	// content.
	if d, err := os.Open(tree); err == nil {
		_ = unix.Syncfs(int(d.Fd()))
		_ = d.Close()
	}

	m := &archiveMerge{realP: real, staging: path.Base(staging)}
	if err := m.run(ctx); err != nil {
		keep = m.keepStaging
		return ImportResult{}, err
	}
	fsSyncDir(real)
	done = true
	res := x.res
	res.Path = real
	res.Replaced = m.replaced
	s.log.Info("import done", "path", real, "format", format, "entries", res.Entries, "bytes", res.Bytes, "replaced", res.Replaced)
	return res, nil
}

// archiveRemoveAll removes a staging directory. Its directories carry the
// archive's modes by now; an agent that is not root (tests, rootless
// setups) cannot empty a read-only one until it makes it writable.
func archiveRemoveAll(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || os.Geteuid() == 0 {
		return err
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// archiveSniff tells the format from the first bytes.
func archiveSniff(br *bufio.Reader) (string, error) {
	head, err := br.Peek(4)
	if len(head) == 0 {
		if err != nil && err != io.EOF {
			return "", err
		}
		return "", fsErrorf(CodeInvalid, "the archive is empty")
	}
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return ArchiveFormatTarGz, nil
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")), bytes.HasPrefix(head, []byte("PK\x07\x08")):
		return ArchiveFormatZip, nil
	}
	return ArchiveFormatTar, nil
}

// archiveEnsureDir makes sure p is a directory, creating it and its
// missing parents for the workspace user, and returns its real path and
// the directories it created, outermost first.
func archiveEnsureDir(p string, uid, gid int) (string, []string, error) {
	fi, err := os.Stat(p)
	if err == nil {
		if !fi.IsDir() {
			return "", nil, fsErrorf(CodeNotDirectory, "%s exists and is not a directory", p)
		}
		real, err := filepath.EvalSymlinks(p)
		return real, nil, err
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", nil, fsNotFound(p, err)
	}
	var missing []string
	for d := p; ; d = path.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == "/" {
			break
		}
		missing = append(missing, d)
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, 0o755); err != nil {
			for j := len(created) - 1; j >= 0; j-- {
				_ = os.Remove(created[j])
			}
			return "", nil, fsNotFound(d, err)
		}
		created = append(created, d)
		if err := fsSetupNew(d, 0o755, uid, gid); err != nil {
			for j := len(created) - 1; j >= 0; j-- {
				_ = os.Remove(created[j])
			}
			return "", nil, err
		}
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		for j := len(created) - 1; j >= 0; j-- {
			_ = os.Remove(created[j])
		}
		return "", nil, err
	}
	return real, created, nil
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
		return fsErrorf(CodeInvalid, "the %s archive ends early, after %d entries (truncated upload?); nothing was imported", x.format, x.res.Entries)
	}
	return fsErrorf(CodeInvalid, "the %s archive is not valid after %d entries: %v; nothing was imported", x.format, x.res.Entries, err)
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
	capped := &archiveCapReader{r: r, left: limit, err: fsErrorf(CodeTooLarge, "the tar stream is longer than %d bytes, more than its max_bytes and max_entries allow; nothing was imported", limit)}
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

// readZip spools the zip (it is read from its end) to spool, next to the
// staging tree, and extracts it.
func (x *archiveExtractor) readZip(spool string, body io.Reader) error {
	f, err := os.OpenFile(spool, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, io.LimitReader(body, x.maxBytes+1), x.buf)
	if err != nil {
		return x.broken(err)
	}
	if n > x.maxBytes {
		return fsErrorf(CodeTooLarge, "the zip archive is larger than max_bytes (%d); nothing was imported", x.maxBytes)
	}
	if n == 0 {
		return fsErrorf(CodeInvalid, "the archive is empty")
	}
	ra := &archiveZipReaderAt{r: f, left: archiveZipDirBase + x.maxEntries*archiveZipDirPerEntry}
	zr, err := zip.NewReader(ra, n)
	if ra.exceeded {
		return fsErrorf(CodeLimit, "the zip archive's central directory is larger than its max_entries (%d) allow; nothing was imported", x.maxEntries)
	}
	if err != nil && !(errors.Is(err, zip.ErrInsecurePath) && zr != nil) {
		return x.broken(err)
	}
	ra.left = -1
	if int64(len(zr.File)) > x.maxEntries {
		return fsErrorf(CodeLimit, "the archive has %d entries, more than max_entries (%d); nothing was imported", len(zr.File), x.maxEntries)
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
			return fsErrorf(CodeTooLarge, "the zip archive's files expand to more than max_bytes (%d) by their declared sizes (entry %q reaches %d); nothing was imported", x.maxBytes, fsShort(zf.Name), total)
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
		target, err := io.ReadAll(io.LimitReader(rc, MaxPathLength+1))
		_ = rc.Close()
		if err != nil {
			return x.broken(err)
		}
		if len(target) > MaxPathLength {
			return x.invalid(&e, "its symlink target is longer than %d bytes", MaxPathLength)
		}
		e.link = string(target)
		return x.add(&e, nil)
	case m.Type() != 0:
		e.what = fsDescribeType(m)
		return x.add(&e, nil)
	}
	e.kind = archiveFile
	if zf.UncompressedSize64 > math.MaxInt64 {
		return fsErrorf(CodeTooLarge, "entry %q: it declares %d bytes; nothing was imported", fsShort(zf.Name), zf.UncompressedSize64)
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
