package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// fsRacyWindow is how far a file's ctime must lie before the moment it was
// hashed for an unchanged stat to prove unchanged content. File times come
// from a coarse clock, so a write in the same tick as the previous one can
// leave size and times as they were.
const fsRacyWindow = time.Second

// fsWriteQuery are the query parameters a PUT on PathFSFile understands;
// anything else is refused, like an unknown JSON field.
var fsWriteQuery = map[string]bool{"path": true, "mode": true, "expected_revision": true, "make_parents": true}

func (s *server) handleWrite(w http.ResponseWriter, r *http.Request) {
	res, err := s.fsWrite(r)
	if err != nil {
		s.fsWriteError(w, r, err)
		return
	}
	fsWriteJSON(w, res)
}

func (s *server) fsWrite(r *http.Request) (wire.WriteResult, error) {
	q := r.URL.Query()
	for k := range q {
		if !fsWriteQuery[k] {
			return wire.WriteResult{}, fsErrorf(wire.CodeInvalid, "unknown parameter %q", k)
		}
	}
	req := wire.WriteRequest{Path: q.Get("path"), Mode: q.Get("mode"), ExpectedRevision: q.Get("expected_revision")}
	switch v := q.Get("make_parents"); v {
	case "", "false", "0":
	case "true", "1":
		req.MakeParents = true
	default:
		return wire.WriteResult{}, fsErrorf(wire.CodeInvalid, "make_parents=%q is not a boolean", v)
	}
	p, err := s.fsPath(req.Path)
	if err != nil {
		return wire.WriteResult{}, err
	}
	if err := fsCheckRevisionSyntax(req.ExpectedRevision); err != nil {
		return wire.WriteResult{}, err
	}
	var mode uint32
	if req.Mode != "" {
		if mode, err = fsParseMode(req.Mode); err != nil {
			return wire.WriteResult{}, err
		}
	}
	if r.ContentLength > wire.MaxWriteBytes {
		return wire.WriteResult{}, fsErrorf(wire.CodeTooLarge, "content of %d bytes is larger than the %d bytes one write allows", r.ContentLength, int64(wire.MaxWriteBytes))
	}
	// With an expected revision the file must exist already, so there are
	// no parents to make, and a missing one is a conflict like a missing
	// file.
	plan, err := s.fsPlanWrite(p, req.MakeParents && req.ExpectedRevision == "", "write")
	if err != nil {
		var fe *fsError
		if req.ExpectedRevision != "" && errors.As(err, &fe) && fe.code == wire.CodeNotFound {
			return wire.WriteResult{}, fsErrorf(wire.CodeConflict, "%s does not exist, but expected_revision %s was given: it was deleted or moved since it was read", p, req.ExpectedRevision)
		}
		return wire.WriteResult{}, err
	}
	defer plan.dir.Close()
	var pre fsRevisionCheck
	if req.ExpectedRevision != "" {
		// Checked before taking the body so that a stale write fails at
		// once instead of after uploading gigabytes; checked again below,
		// cheaply if the file did not change.
		if pre, err = plan.checkRevision(req.ExpectedRevision); err != nil {
			return wire.WriteResult{}, err
		}
	}
	if req.Mode == "" {
		mode = 0o644
		if plan.old != nil {
			mode = plan.old.Mode & 0o7777
		}
	}
	uid, gid := s.fsOwner()
	if plan.old != nil {
		uid, gid = int(plan.old.Uid), int(plan.old.Gid)
	}
	tmp, n, sum, err := fsWriteTemp(plan.dir, plan.name, r.Body, wire.MaxWriteBytes, mode, uid, gid)
	if err != nil {
		return wire.WriteResult{}, err
	}
	committed := false
	defer func() {
		if !committed {
			_ = plan.dir.unlink(tmp, 0)
		}
	}()

	unlock := fsLocks.lock(plan.key())
	defer unlock()
	if req.ExpectedRevision != "" {
		if err := pre.recheck(); err != nil {
			return wire.WriteResult{}, err
		}
	}
	_, statErr := plan.dir.lstat(plan.name)
	if err := plan.dir.rename(tmp, plan.dir, plan.name, 0); err != nil {
		return wire.WriteResult{}, err
	}
	committed = true
	plan.dir.sync()
	res := wire.WriteResult{Path: plan.target, Size: n, Created: statErr != nil}
	if n <= wire.MaxRevisionBytes {
		res.Revision = hex.EncodeToString(sum)
	}
	return res, nil
}

// fsWritePlan is where a write goes and what it replaces.
type fsWritePlan struct {
	// dir holds the file to replace, name: the request's path, or where
	// the symlink there points.
	dir  *fsDir
	name string
	// target is that file's path, for results and messages.
	target string
	// old is the file being replaced, nil if there is none.
	old *unix.Stat_t
}

// key names the file for fsLocks: by its directory's identity, which two
// paths to one file share.
func (pl *fsWritePlan) key() string {
	st, err := pl.dir.stat()
	if err != nil {
		return pl.target
	}
	return fmt.Sprintf("%d:%d/%s", st.Dev, st.Ino, pl.name)
}

// fsMaxLinks bounds the symlinks a write follows, as the kernel does.
const fsMaxLinks = 40

// fsPlanWrite finds the file that a write to p replaces, and makes sure its
// directory exists. A symlink is written through, as editors and shell
// redirection do, rather than replaced by a file; it is followed one link
// at a time from the handle of the directory it is in, and the file it
// leads to must exist. op names the operation in messages.
func (s *server) fsPlanWrite(p string, makeParents bool, op string) (*fsWritePlan, error) {
	if p == "/" {
		return nil, fsErrorf(wire.CodeIsDirectory, "/ is a directory")
	}
	dirPath, name := path.Dir(p), path.Base(p)
	d, err := fsOpenDir(dirPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !makeParents {
			return nil, fsErrorf(wire.CodeNotFound, "directory %s does not exist; set make_parents to create it", dirPath)
		}
		uid, gid := s.fsOwner()
		if d, _, err = s.fsMkdirAll(dirPath, uid, gid); err != nil {
			return nil, err
		}
	case errors.Is(err, unix.ENOTDIR):
		return nil, fsErrorf(wire.CodeNotDirectory, "%s is not a directory", dirPath)
	case err != nil:
		return nil, err
	}
	pl := &fsWritePlan{dir: d, name: name, target: p}
	ok := false
	defer func() {
		if !ok {
			pl.dir.Close()
		}
	}()
	st, err := d.lstat(name)
	followed := false
	for links := 0; err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK; links++ {
		link, rerr := pl.dir.readlink(pl.name)
		if rerr != nil {
			return nil, rerr
		}
		if links >= fsMaxLinks {
			return nil, fsErrorf(wire.CodeInvalid, "%s: too many levels of symbolic links", p)
		}
		followed = true
		if err = pl.follow(link); err != nil {
			return nil, fsErrorf(wire.CodeInvalid, "%s is a symlink to %q, which cannot be resolved (%v); write to the target's path or delete the link first", p, link, err)
		}
		if st, err = pl.dir.lstat(pl.name); err != nil {
			return nil, fsErrorf(wire.CodeInvalid, "%s is a symlink to %q, which does not exist; write to the target's path or delete the link first", p, link)
		}
	}
	if followed {
		pl.target = fsJoin(pl.dir.realPath(), pl.name)
	}
	if err := s.fsCheckDir(pl.dir, pl.target, op); err != nil {
		return nil, err
	}
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return nil, fsErrorf(wire.CodeIsDirectory, "%s is a directory", pl.target)
	case err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, fsErrorf(wire.CodeInvalid, "%s is %s, not a regular file; refusing to replace it", pl.target, fsDescribeType(fsGoModeOf(st.Mode)))
	case err == nil:
		pl.old = &st
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fsNotFound(pl.target, err)
	}
	ok = true
	return pl, nil
}

// follow moves the plan to where the symlink target link, read from the
// plan's directory, points: its directory opened from the plan's (or from
// "/"), its last name not yet followed.
func (pl *fsWritePlan) follow(link string) error {
	base := pl.dir
	start := pl.dir.fd
	p := fsJoin(pl.dir.path, link)
	if path.IsAbs(link) {
		start, p = unix.AT_FDCWD, link
	}
	clean := path.Clean(link)
	dir, name := path.Dir(clean), path.Base(clean)
	if name == "." || name == ".." || name == "/" {
		// Names a directory, which a write cannot replace.
		return unix.EISDIR
	}
	next, err := fsOpenDirAt(start, dir, true, path.Dir(path.Clean(p)))
	if err != nil {
		return err
	}
	base.Close()
	pl.dir, pl.name = next, name
	return nil
}

// fsWriteTemp writes src (at most limit bytes) to a new temporary file in
// d next to name, so that a rename can replace name atomically: a reader
// sees the old or the new content, never a mix. The file is synced before
// it is renamed, or a crash could leave the file empty. On failure nothing
// is left behind.
func fsWriteTemp(d *fsDir, name string, src io.Reader, limit int64, mode uint32, uid, gid int) (tmp string, n int64, sum []byte, err error) {
	f, created, err := d.createTemp(name)
	if err != nil {
		return "", 0, nil, err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = d.unlink(created, 0)
		}
	}()
	h := sha256.New()
	n, err = io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(src, limit+1), make([]byte, 256<<10))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", 0, nil, fsErrorf(wire.CodeTooLarge, "content larger than %d bytes", limit)
		}
		return "", 0, nil, fmt.Errorf("writing %s: %w", d.join(name), err)
	}
	if n > limit {
		return "", 0, nil, fsErrorf(wire.CodeTooLarge, "content larger than the %d bytes one write allows", limit)
	}
	if err = f.Sync(); err != nil {
		return "", 0, nil, err
	}
	if err = fsSetupFD(int(f.Fd()), mode, uid, gid); err != nil {
		return "", 0, nil, err
	}
	if err = f.Close(); err != nil {
		return "", 0, nil, err
	}
	return created, n, h.Sum(nil), nil
}

func fsCheckRevisionSyntax(rev string) error {
	if rev == "" {
		return nil
	}
	if len(rev) != sha256.Size*2 {
		return fsErrorf(wire.CodeInvalid, "expected_revision %q is not a sha256 in hex (64 characters)", fsShort(rev))
	}
	if _, err := hex.DecodeString(rev); err != nil {
		return fsErrorf(wire.CodeInvalid, "expected_revision %q is not a sha256 in hex", fsShort(rev))
	}
	return nil
}

func fsShort(s string) string {
	if len(s) > 80 {
		return string(fsCutUTF8([]byte(s), 80)) + "…"
	}
	return s
}

// fsRevisionCheck remembers which version of a file matched an expected
// revision, so the check can be repeated just before the file is replaced.
type fsRevisionCheck struct {
	dir          *fsDir
	name, target string
	expected     string
	stamp        fsStamp
	hashedAt     time.Time
}

// fsHashFile returns the revision of name in d and the stat of the version
// hashed. A file too large for a revision has rev "".
func fsHashFile(d *fsDir, name string) (rev string, st *unix.Stat_t, err error) {
	f, st, err := fsOpenRegularAt(d, name)
	if err != nil {
		return "", nil, err
	}
	defer func() { _ = f.Close() }()
	if st.Size > wire.MaxRevisionBytes {
		return "", st, nil
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, wire.MaxRevisionBytes+1))
	if err != nil {
		return "", nil, err
	}
	if n > wire.MaxRevisionBytes {
		return "", st, nil
	}
	return hex.EncodeToString(h.Sum(nil)), st, nil
}

// fsOpenRegularAt opens name in d for reading without following it, and
// makes sure it is a regular file.
func fsOpenRegularAt(d *fsDir, name string) (*os.File, *unix.Stat_t, error) {
	f, err := d.openFile(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, nil, fsErrorf(wire.CodeConflict, "%s was replaced by a symlink", d.join(name))
		}
		return nil, nil, fsNotFound(d.join(name), err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		_ = f.Close()
		return nil, nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		_ = f.Close()
		return nil, nil, fsErrorf(wire.CodeInvalid, "%s is not a regular file (%s)", d.join(name), fsDescribeType(fsGoModeOf(st.Mode)))
	}
	return f, &st, nil
}

func (pl *fsWritePlan) checkRevision(expected string) (fsRevisionCheck, error) {
	return fsCheckRevision(fsRevisionCheck{dir: pl.dir, name: pl.name, target: pl.target, expected: expected})
}

func fsCheckRevision(c fsRevisionCheck) (fsRevisionCheck, error) {
	c.hashedAt = time.Now()
	rev, st, err := fsHashFile(c.dir, c.name)
	if err != nil {
		var fe *fsError
		if errors.As(err, &fe) && fe.code == wire.CodeNotFound {
			return c, fsErrorf(wire.CodeConflict, "%s does not exist, but expected_revision %s was given: it was deleted or moved since it was read", c.target, c.expected)
		}
		return c, err
	}
	if rev == "" {
		return c, fsErrorf(wire.CodeConflict, "%s is larger than %d bytes and so has no revision; write without expected_revision", c.target, wire.MaxRevisionBytes)
	}
	if rev != c.expected {
		return c, fsErrorf(wire.CodeConflict, "%s has changed since it was read: its current revision is %s, not %s; read it again and redo the change", c.target, rev, c.expected)
	}
	c.stamp = fsStampOf(st)
	return c, nil
}

// recheck repeats the check, hashing again only if the file may have
// changed since it was hashed.
func (c fsRevisionCheck) recheck() error {
	if st, err := c.dir.lstat(c.name); err == nil {
		if s := fsStampOf(&st); s == c.stamp && s.ctime.Before(c.hashedAt.Add(-fsRacyWindow)) {
			return nil
		}
	}
	_, err := fsCheckRevision(c)
	return err
}

func (s *server) fsEdit(ctx context.Context, req wire.EditRequest) (wire.EditResult, error) {
	p, err := s.fsPath(req.Path)
	if err != nil {
		return wire.EditResult{}, err
	}
	if len(req.Edits) == 0 {
		return wire.EditResult{}, fsErrorf(wire.CodeInvalid, "no edits given")
	}
	if len(req.Edits) > wire.MaxEdits {
		return wire.EditResult{}, fsErrorf(wire.CodeInvalid, "%d edits given; at most %d are allowed in one call", len(req.Edits), wire.MaxEdits)
	}
	for i, e := range req.Edits {
		if e.Old == "" {
			return wire.EditResult{}, fsErrorf(wire.CodeInvalid, "edit %d of %d: old text is empty; to write a whole file use write", i+1, len(req.Edits))
		}
	}
	if err := fsCheckRevisionSyntax(req.ExpectedRevision); err != nil {
		return wire.EditResult{}, err
	}
	plan, err := s.fsPlanWrite(p, false, "edit")
	if err != nil {
		var fe *fsError
		if errors.As(err, &fe) && fe.code == wire.CodeNotFound {
			return wire.EditResult{}, fsErrorf(wire.CodeNotFound, "%s does not exist; use write to create a file", p)
		}
		return wire.EditResult{}, err
	}
	defer plan.dir.Close()
	if plan.old == nil {
		return wire.EditResult{}, fsErrorf(wire.CodeNotFound, "%s does not exist; use write to create a file", p)
	}
	target := plan.target

	// Held from the read to the rename, so two edits through the agent
	// cannot both start from the same content and lose one.
	unlock := fsLocks.lock(plan.key())
	defer unlock()
	readAt := time.Now()
	f, st, err := fsOpenRegularAt(plan.dir, plan.name)
	if err != nil {
		return wire.EditResult{}, err
	}
	if st.Size > wire.MaxEditBytes {
		_ = f.Close()
		return wire.EditResult{}, fsErrorf(wire.CodeTooLarge, "%s is %d bytes; edit handles files up to %d bytes (use write to replace it)", target, st.Size, wire.MaxEditBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, wire.MaxEditBytes+1))
	_ = f.Close()
	if err != nil {
		return wire.EditResult{}, err
	}
	if len(data) > wire.MaxEditBytes {
		return wire.EditResult{}, fsErrorf(wire.CodeTooLarge, "%s grew beyond %d bytes while being read", target, wire.MaxEditBytes)
	}
	sum := sha256.Sum256(data)
	cur := hex.EncodeToString(sum[:])
	if req.ExpectedRevision != "" && req.ExpectedRevision != cur {
		return wire.EditResult{}, fsErrorf(wire.CodeConflict, "%s has changed since it was read: its current revision is %s, not %s; read it again and redo the edit", target, cur, req.ExpectedRevision)
	}

	old := string(data)
	content, replacements, err := fsApplyEdits(target, old, req.Edits)
	if err != nil {
		return wire.EditResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return wire.EditResult{}, err
	}
	res := wire.EditResult{
		Path:         target,
		Diff:         fsUnifiedDiff(target, old, content),
		Replacements: replacements,
		Revision:     cur,
	}
	if req.DryRun {
		return res, nil
	}
	res.Applied = true
	if content == old {
		return res, nil
	}
	// A writer outside the agent may have changed the file since it was
	// read; replacing it now would silently drop that change.
	check := fsRevisionCheck{dir: plan.dir, name: plan.name, target: target, expected: cur, stamp: fsStampOf(st), hashedAt: readAt}
	if err := check.recheck(); err != nil {
		return wire.EditResult{}, fsErrorf(wire.CodeConflict, "%s was changed by something else while being edited; nothing was written: %v", target, err)
	}
	tmp, _, newSum, err := fsWriteTemp(plan.dir, plan.name, strings.NewReader(content), wire.MaxEditBytes, st.Mode&0o7777, int(st.Uid), int(st.Gid))
	if err != nil {
		return wire.EditResult{}, err
	}
	if err := plan.dir.rename(tmp, plan.dir, plan.name, 0); err != nil {
		_ = plan.dir.unlink(tmp, 0)
		return wire.EditResult{}, err
	}
	plan.dir.sync()
	res.Revision = hex.EncodeToString(newSum)
	return res, nil
}

// fsApplyEdits applies edits in order to content, all or nothing.
func fsApplyEdits(target, content string, edits []wire.Edit) (string, int, error) {
	total := 0
	for i, e := range edits {
		n := strings.Count(content, e.Old)
		which := fmt.Sprintf("edit %d of %d", i+1, len(edits))
		if n == 0 {
			return "", 0, fsErrorf(wire.CodeNoMatch, "%s: old text not found in %s%s; nothing was changed", which, target, fsNoMatchHint(content, e.Old, i > 0))
		}
		if n > 1 && !e.ReplaceAll {
			return "", 0, fsErrorf(wire.CodeAmbiguous, "%s: old text occurs %d times in %s; include more surrounding text to pick one, or set replace_all; nothing was changed", which, n, target)
		}
		if !e.ReplaceAll {
			n = 1
		}
		if grown := len(content) + n*(len(e.New)-len(e.Old)); grown > wire.MaxEditBytes {
			return "", 0, fsErrorf(wire.CodeTooLarge, "%s would make %s %d bytes, more than the %d edit allows; nothing was changed", which, target, grown, wire.MaxEditBytes)
		}
		content = strings.Replace(content, e.Old, e.New, n)
		total += n
	}
	return content, total, nil
}

// fsNoMatchHint guesses why old text was not found, for the common
// mistakes a model makes when it quotes a file from memory.
func fsNoMatchHint(content, old string, afterEdits bool) string {
	var hints []string
	if strings.Contains(content, "\r\n") && !strings.Contains(old, "\r\n") && strings.Contains(old, "\n") &&
		strings.Contains(content, strings.ReplaceAll(old, "\n", "\r\n")) {
		hints = append(hints, "the file has CRLF line endings and the old text has LF")
	} else if strings.Contains(strings.Join(strings.Fields(content), " "), strings.Join(strings.Fields(old), " ")) {
		hints = append(hints, "it does occur if whitespace is ignored: check indentation (tabs or spaces) and line breaks")
	}
	if afterEdits {
		hints = append(hints, "earlier edits of this call were applied first and may have changed it")
	}
	if len(hints) == 0 {
		return ""
	}
	return " (" + strings.Join(hints, "; ") + ")"
}

func (s *server) fsMkdir(_ context.Context, req wire.MkdirRequest) (wire.FileInfo, error) {
	p, err := s.fsPath(req.Path)
	if err != nil {
		return wire.FileInfo{}, err
	}
	uid, gid := s.fsOwner()
	if req.Parents {
		if p == "/" {
			return wire.FileInfo{}, fsErrorf(wire.CodePermission, "refusing to create / (the root of the workspace)")
		}
		d, _, err := s.fsMkdirAll(p, uid, gid)
		if err != nil {
			return wire.FileInfo{}, err
		}
		prot, err := s.fsGuard().within(d)
		d.Close()
		if err != nil {
			return wire.FileInfo{}, err
		}
		if prot != "" {
			return wire.FileInfo{}, fsErrorf(wire.CodePermission, "refusing to create %s: %s belongs to berth (its agent's socket and binary live there)", p, prot)
		}
		return s.fsLstat(p)
	}
	d, name, err := s.fsMutableParent(p, "create", false)
	if err != nil {
		var fe *fsError
		if errors.As(err, &fe) && fe.code == wire.CodeNotFound {
			return wire.FileInfo{}, fsErrorf(wire.CodeNotFound, "directory %s does not exist; set parents to create it too", path.Dir(p))
		}
		return wire.FileInfo{}, err
	}
	defer d.Close()
	if st, err := d.lstat(name); err == nil {
		return wire.FileInfo{}, fsErrorf(wire.CodeExists, "%s already exists (%s)", p, fsDescribeType(fsGoModeOf(st.Mode)))
	}
	sub, err := s.fsMkdirIn(d, name, p, uid, gid)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return wire.FileInfo{}, fsErrorf(wire.CodeExists, "%s already exists", p)
		}
		return wire.FileInfo{}, fsNotFound(p, err)
	}
	sub.Close()
	d.sync()
	return d.info(name, p)
}

func (s *server) fsDelete(_ context.Context, req wire.DeleteRequest) (wire.DeleteResult, error) {
	p, err := s.fsPath(req.Path)
	if err != nil {
		return wire.DeleteResult{}, err
	}
	d, name, err := s.fsMutableParent(p, "delete", true)
	if err != nil {
		var fe *fsError
		if errors.As(err, &fe) && fe.code == wire.CodeNotFound {
			return wire.DeleteResult{}, fsErrorf(wire.CodeNotFound, "%s does not exist", p)
		}
		return wire.DeleteResult{}, err
	}
	defer d.Close()
	st, err := d.lstat(name)
	if err != nil {
		return wire.DeleteResult{}, fsNotFound(p, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		err = d.unlink(name, 0)
	case req.Recursive:
		err = d.removeAll(name, s.fsGuard())
	default:
		if err = d.unlink(name, unix.AT_REMOVEDIR); errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			return wire.DeleteResult{}, fsErrorf(wire.CodeNotEmpty, "directory %s is not empty; set recursive to delete it with everything in it", p)
		}
	}
	if err != nil {
		return wire.DeleteResult{}, err
	}
	return wire.DeleteResult{Path: p}, nil
}

// fsTransfer holds what Move and Copy check alike: the source and the
// destination, each as a name in a held directory.
type fsTransfer struct {
	src, dst   string
	sdir, ddir *fsDir
	sname      string
	dname      string
	sst        unix.Stat_t
	dstIsDir   bool
	overwrite  bool
}

func (t *fsTransfer) close() {
	t.sdir.Close()
	t.ddir.Close()
}

func (s *server) fsPrepareTransfer(req wire.TransferRequest, verb string) (_ *fsTransfer, err error) {
	src, err := s.fsPath(req.Src)
	if err != nil {
		return nil, fmt.Errorf("src: %w", err)
	}
	dst, err := s.fsPath(req.Dst)
	if err != nil {
		return nil, fmt.Errorf("dst: %w", err)
	}
	t := &fsTransfer{src: src, dst: dst, overwrite: req.Overwrite}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	// A copy reads its source, which must not be in berth's directories
	// either; a move changes it.
	t.sdir, t.sname, err = s.fsMutableParent(src, verb, true)
	if err != nil {
		var fe *fsError
		if errors.As(err, &fe) && fe.code == wire.CodeNotFound {
			return nil, fsErrorf(wire.CodeNotFound, "%s does not exist", src)
		}
		return nil, err
	}
	if t.sst, err = t.sdir.lstat(t.sname); err != nil {
		return nil, fsNotFound(src, err)
	}
	if src == dst {
		return t, nil
	}
	t.ddir, t.dname, err = s.fsMutableParent(dst, verb+" onto", true)
	if err != nil {
		var fe *fsError
		if errors.As(err, &fe) && fe.code == wire.CodeNotFound {
			return nil, fsErrorf(wire.CodeNotFound, "directory %s does not exist; create it first", path.Dir(dst))
		}
		return nil, err
	}
	if t.sst.Mode&unix.S_IFMT == unix.S_IFDIR {
		// Into itself: the destination's directory is the source or
		// below it, wherever either is now.
		inside, err := fsDirWithin(t.ddir, fsIDOf(&t.sst))
		if err != nil {
			return nil, err
		}
		if inside {
			return nil, fsErrorf(wire.CodeInvalid, "cannot %s %s into itself (%s)", verb, src, dst)
		}
	}
	if old, err := t.ddir.lstat(t.dname); err == nil {
		if fsIDOf(&old) == fsIDOf(&t.sst) {
			// The same entry by another path.
			return t, nil
		}
		if !req.Overwrite {
			return nil, fsErrorf(wire.CodeExists, "%s already exists; set overwrite to replace it", dst)
		}
		oldDir, srcDir := old.Mode&unix.S_IFMT == unix.S_IFDIR, t.sst.Mode&unix.S_IFMT == unix.S_IFDIR
		t.dstIsDir = oldDir
		switch {
		case oldDir && !srcDir:
			return nil, fsErrorf(wire.CodeIsDirectory, "%s is a directory and %s is not; delete the directory first to replace it", dst, src)
		case !oldDir && srcDir:
			return nil, fsErrorf(wire.CodeNotDirectory, "%s is not a directory and %s is; delete it first to replace it", dst, src)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fsNotFound(dst, err)
	}
	return t, nil
}

// same says source and destination are one entry.
func (t *fsTransfer) same() bool {
	if t.src == t.dst {
		return true
	}
	if old, err := t.ddir.lstat(t.dname); err == nil {
		return fsIDOf(&old) == fsIDOf(&t.sst)
	}
	return false
}

// fsDirWithin says whether d is the directory id or below it.
func fsDirWithin(d *fsDir, id fsID) (bool, error) {
	g := &fsProtect{dirs: []fsProtected{{path: "x", id: id}}}
	prot, err := g.within(d)
	return prot != "", err
}

func (s *server) fsMove(ctx context.Context, req wire.TransferRequest) (wire.FileInfo, error) {
	t, err := s.fsPrepareTransfer(req, "move")
	if err != nil {
		return wire.FileInfo{}, err
	}
	defer t.close()
	if t.same() {
		return s.fsLstat(t.dst)
	}
	err = s.fsPlace(t.sdir, t.sname, t.ddir, t.dname, t.overwrite, t.dstIsDir)
	if errors.Is(err, syscall.EXDEV) {
		// Another file system (a volume mounted into the workspace, say):
		// copy everything as it is, then remove the original.
		tmp, cerr := s.fsCopyToTemp(ctx, t, true)
		if cerr != nil {
			return wire.FileInfo{}, cerr
		}
		if err := s.fsPlace(t.ddir, tmp, t.ddir, t.dname, t.overwrite, t.dstIsDir); err != nil {
			_ = t.ddir.removeAll(tmp, s.fsGuard())
			return wire.FileInfo{}, fsPlaceError(t.dst, err)
		}
		if err := t.sdir.removeAll(t.sname, s.fsGuard()); err != nil {
			return wire.FileInfo{}, fmt.Errorf("copied %s to %s, but removing the original failed: %w", t.src, t.dst, err)
		}
		err = nil
	}
	if err != nil {
		return wire.FileInfo{}, fsPlaceError(t.dst, err)
	}
	t.ddir.sync()
	return t.ddir.info(t.dname, t.dst)
}

func fsPlaceError(dst string, err error) error {
	if errors.Is(err, fs.ErrExist) {
		return fsErrorf(wire.CodeExists, "%s already exists; set overwrite to replace it", dst)
	}
	return err
}

// fsPlace renames src in sd to dst in dd. Without overwrite it never
// replaces a dst that appeared meanwhile (RENAME_NOREPLACE). A directory
// replacing a directory is swapped in atomically (RENAME_EXCHANGE) and the
// old one then removed, so dst is never missing in between.
func (s *server) fsPlace(sd *fsDir, src string, dd *fsDir, dst string, overwrite, dstIsDir bool) error {
	switch {
	case !overwrite:
		err := sd.rename(src, dd, dst, unix.RENAME_NOREPLACE)
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
			return err
		}
		// A file system without RENAME_NOREPLACE: check, then rename.
		if _, err := dd.lstat(dst); err == nil {
			return &os.LinkError{Op: "rename", Old: sd.join(src), New: dd.join(dst), Err: syscall.EEXIST}
		}
		return sd.rename(src, dd, dst, 0)
	case dstIsDir:
		err := sd.rename(src, dd, dst, unix.RENAME_EXCHANGE)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			if err := dd.removeAll(dst, s.fsGuard()); err != nil {
				return err
			}
			return sd.rename(src, dd, dst, 0)
		}
		if err != nil {
			return err
		}
		// src now holds the replaced directory.
		if err := sd.removeAll(src, s.fsGuard()); err != nil {
			return fmt.Errorf("replaced %s, but removing its old content (left at %s) failed: %w", dd.join(dst), sd.join(src), err)
		}
		return nil
	}
	return sd.rename(src, dd, dst, 0)
}

func (s *server) fsCopy(ctx context.Context, req wire.TransferRequest) (wire.FileInfo, error) {
	t, err := s.fsPrepareTransfer(req, "copy")
	if err != nil {
		return wire.FileInfo{}, err
	}
	defer t.close()
	if t.same() {
		return wire.FileInfo{}, fsErrorf(wire.CodeInvalid, "source and destination are the same path (%s)", t.src)
	}
	tmp, err := s.fsCopyToTemp(ctx, t, false)
	if err != nil {
		return wire.FileInfo{}, err
	}
	if err := s.fsPlace(t.ddir, tmp, t.ddir, t.dname, t.overwrite, t.dstIsDir); err != nil {
		_ = t.ddir.removeAll(tmp, s.fsGuard())
		return wire.FileInfo{}, fsPlaceError(t.dst, err)
	}
	t.ddir.sync()
	return t.ddir.info(t.dname, t.dst)
}

// fsCopyOwner says who copies belong to: the source's owner (preserve, for
// a move), or the workspace user.
type fsCopyOwner struct {
	ctx      context.Context
	guard    *fsProtect
	preserve bool
	uid, gid int
	entries  int
}

// fsCopyToTemp copies t's source to a new hidden name next to its
// destination, so that the copy only appears at the destination once it
// is complete.
func (s *server) fsCopyToTemp(ctx context.Context, t *fsTransfer, preserve bool) (string, error) {
	if t.sst.Mode&unix.S_IFMT == unix.S_IFSOCK {
		return "", fsErrorf(wire.CodeInvalid, "%s is a socket, which cannot be copied", t.src)
	}
	if t.sst.Mode&unix.S_IFMT == unix.S_IFDIR {
		// Count first, so that an oversized tree fails before anything is
		// written.
		n := 0
		err := fsCountTree(ctx, t.sdir, t.sname, &n, wire.MaxCopyEntries-1)
		if errors.Is(err, errFSWalkLimit) {
			return "", fsErrorf(wire.CodeLimit, "%s has more than %d entries; copy it in smaller parts", t.src, wire.MaxCopyEntries)
		}
		if err != nil {
			return "", err
		}
	}
	tmp := fsTempName(t.dname)
	own := &fsCopyOwner{ctx: ctx, guard: s.fsGuard(), preserve: preserve}
	own.uid, own.gid = s.fsOwner()
	if err := own.copyTree(t.sdir, t.sname, &t.sst, t.ddir, tmp); err != nil {
		_ = t.ddir.removeAll(tmp, s.fsGuard())
		return "", err
	}
	return tmp, nil
}

// fsCountTree counts the entries below name in d (a directory), stopping
// with errFSWalkLimit past max.
func fsCountTree(ctx context.Context, d *fsDir, name string, n *int, max int) error {
	sub, err := d.openDir(name)
	if err != nil {
		return err
	}
	defer sub.Close()
	names, err := sub.names()
	if err != nil {
		return err
	}
	for _, c := range names {
		*n++
		if *n > max {
			return errFSWalkLimit
		}
		if *n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if st, err := sub.lstat(c); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := fsCountTree(ctx, sub, c, n, max); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
				return err
			}
		}
	}
	return nil
}

// copyTree copies name in sd (described by st, not followed if a symlink)
// to dname in dd, which must not exist. Directories are descended through
// handles opened without following symlinks, so the copy reads the tree
// that was there, not one a symlink swapped in points to.
func (own *fsCopyOwner) copyTree(sd *fsDir, name string, st *unix.Stat_t, dd *fsDir, dname string) error {
	own.entries++
	if own.entries > wire.MaxCopyEntries {
		return fsErrorf(wire.CodeLimit, "more than %d entries to copy (the tree grew while being copied)", wire.MaxCopyEntries)
	}
	if own.entries%256 == 0 {
		if err := own.ctx.Err(); err != nil {
			return err
		}
	}
	uid, gid := own.uid, own.gid
	bits := st.Mode & 0o7777
	if own.preserve {
		uid, gid = int(st.Uid), int(st.Gid)
	} else {
		// setuid and setgid would now be for the new owner; cp drops
		// them too.
		bits &^= unix.S_ISUID | unix.S_ISGID
	}
	var fd int
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		target, err := sd.readlink(name)
		if err != nil {
			return err
		}
		if err := dd.symlink(target, dname); err != nil {
			return err
		}
		if err := dd.lchown(dname, uid, gid); err != nil {
			return err
		}
		if own.preserve {
			dd.setTimes(dname, time.Unix(st.Mtim.Unix()))
		}
		return nil
	case unix.S_IFDIR:
		src, err := sd.openDir(name)
		if err != nil {
			return err
		}
		defer src.Close()
		if sst, err := src.stat(); err != nil || fsIDOf(&sst) != fsIDOf(st) {
			return fsErrorf(wire.CodeConflict, "%s changed while being copied", src.path)
		}
		if prot := own.guard.is(src); prot != "" {
			return fsErrorf(wire.CodePermission, "refusing to copy %s: it belongs to berth", prot)
		}
		if err := dd.mkdir(dname, 0o700); err != nil {
			return err
		}
		dst, err := dd.openDir(dname)
		if err != nil {
			return err
		}
		defer dst.Close()
		names, err := src.names()
		if err != nil {
			return err
		}
		slices.Sort(names)
		for _, n := range names {
			cst, err := src.lstat(n)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if cst.Mode&unix.S_IFMT == unix.S_IFSOCK {
				// A socket is only an address of a process that listens;
				// a copy of one means nothing.
				continue
			}
			if err := own.copyTree(src, n, &cst, dst, n); err != nil {
				return err
			}
		}
		fd = dst.fd
	case unix.S_IFREG:
		out, err := fsCopyFile(sd, name, dd, dname)
		if err != nil {
			return err
		}
		defer func() { _ = out.Close() }()
		fd = int(out.Fd())
	case unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK:
		if err := unix.Mknodat(dd.fd, dname, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return &fs.PathError{Op: "mknod", Path: dd.join(dname), Err: err}
		}
		// O_PATH: opening a FIFO or a device for real does things.
		pfd, err := unix.Openat(dd.fd, dname, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return &fs.PathError{Op: "open", Path: dd.join(dname), Err: err}
		}
		defer func() { _ = unix.Close(pfd) }()
		fd = pfd
	default:
		return fsErrorf(wire.CodeInvalid, "cannot copy %s: %s", sd.join(name), fsDescribeType(fsGoModeOf(st.Mode)))
	}
	// Ownership, then mode (chown clears setuid), then times; for a
	// directory after its content, so a read-only directory can be filled.
	if err := fsSetupFD(fd, bits, uid, gid); err != nil {
		return err
	}
	if own.preserve {
		dd.setTimes(dname, time.Unix(st.Mtim.Unix()))
	}
	return nil
}

// fsCopyFile copies the regular file name in sd to a new file dname in dd
// and returns the new file, still open.
func fsCopyFile(sd *fsDir, name string, dd *fsDir, dname string) (*os.File, error) {
	in, err := sd.openFile(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = in.Close() }()
	var st unix.Stat_t
	if err := unix.Fstat(int(in.Fd()), &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fsErrorf(wire.CodeConflict, "%s changed while being copied", sd.join(name))
	}
	out, err := dd.openFile(dname, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	// *os.File to *os.File: the kernel copies (copy_file_range), which is
	// also a reflink on file systems that can.
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return nil, err
	}
	return out, nil
}
