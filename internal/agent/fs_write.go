package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

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

func (s *server) fsWrite(r *http.Request) (WriteResult, error) {
	q := r.URL.Query()
	for k := range q {
		if !fsWriteQuery[k] {
			return WriteResult{}, fsErrorf(CodeInvalid, "unknown parameter %q", k)
		}
	}
	req := WriteRequest{Path: q.Get("path"), Mode: q.Get("mode"), ExpectedRevision: q.Get("expected_revision")}
	switch v := q.Get("make_parents"); v {
	case "", "false", "0":
	case "true", "1":
		req.MakeParents = true
	default:
		return WriteResult{}, fsErrorf(CodeInvalid, "make_parents=%q is not a boolean", v)
	}
	p, err := s.fsPath(req.Path)
	if err != nil {
		return WriteResult{}, err
	}
	if err := fsCheckRevisionSyntax(req.ExpectedRevision); err != nil {
		return WriteResult{}, err
	}
	var mode uint32
	if req.Mode != "" {
		if mode, err = fsParseMode(req.Mode); err != nil {
			return WriteResult{}, err
		}
	}
	if r.ContentLength > MaxWriteBytes {
		return WriteResult{}, fsErrorf(CodeTooLarge, "content of %d bytes is larger than the %d bytes one write allows", r.ContentLength, int64(MaxWriteBytes))
	}
	if err := fsCheckMutable(p, "write", false); err != nil {
		return WriteResult{}, err
	}
	// With an expected revision the file must exist already, so there are
	// no parents to make, and a missing one is a conflict like a missing
	// file.
	plan, err := s.fsPlanWrite(p, req.MakeParents && req.ExpectedRevision == "")
	if err != nil {
		var fe *fsError
		if req.ExpectedRevision != "" && errors.As(err, &fe) && fe.code == CodeNotFound {
			return WriteResult{}, fsErrorf(CodeConflict, "%s does not exist, but expected_revision %s was given: it was deleted or moved since it was read", p, req.ExpectedRevision)
		}
		return WriteResult{}, err
	}
	var pre fsRevisionCheck
	if req.ExpectedRevision != "" {
		// Checked before taking the body so that a stale write fails at
		// once instead of after uploading gigabytes; checked again below,
		// cheaply if the file did not change.
		if pre, err = fsCheckRevision(plan.target, req.ExpectedRevision); err != nil {
			return WriteResult{}, err
		}
	}
	if req.Mode == "" {
		mode = 0o644
		if plan.old != nil {
			mode = fsModeBits(plan.old.Mode())
		}
	}
	uid, gid := s.fsOwner()
	if plan.old != nil {
		uid, gid = fsStatOwner(plan.old)
	}
	tmp, n, sum, err := fsWriteTemp(plan.target, r.Body, MaxWriteBytes, mode, uid, gid)
	if err != nil {
		return WriteResult{}, err
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.Remove(tmp)
		}
	}()

	unlock := fsLocks.lock(plan.target)
	defer unlock()
	if req.ExpectedRevision != "" {
		if err := pre.recheck(); err != nil {
			return WriteResult{}, err
		}
	}
	_, statErr := os.Lstat(plan.target)
	if err := os.Rename(tmp, plan.target); err != nil {
		return WriteResult{}, err
	}
	committed = true
	fsSyncDir(path.Dir(plan.target))
	res := WriteResult{Path: plan.target, Size: n, Created: statErr != nil}
	if n <= MaxRevisionBytes {
		res.Revision = hex.EncodeToString(sum)
	}
	return res, nil
}

// fsWritePlan is where a write goes and what it replaces.
type fsWritePlan struct {
	// target is the file to replace: the request's path, or where the
	// symlink there points.
	target string
	// old is the file being replaced, nil if there is none.
	old fs.FileInfo
}

// fsPlanWrite finds the file that a write to p replaces, and makes sure its
// directory exists. A symlink is written through, as editors and shell
// redirection do, rather than replaced by a file.
func (s *server) fsPlanWrite(p string, makeParents bool) (*fsWritePlan, error) {
	pl := &fsWritePlan{target: p}
	fi, err := os.Lstat(p)
	if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		real, rerr := filepath.EvalSymlinks(p)
		if rerr != nil {
			link, _ := os.Readlink(p)
			return nil, fsErrorf(CodeInvalid, "%s is a symlink to %q, which cannot be resolved (%v); write to the target's path or delete the link first", p, link, rerr)
		}
		pl.target = real
		if err := fsCheckMutable(real, "write", false); err != nil {
			return nil, err
		}
		fi, err = os.Lstat(real)
	}
	switch {
	case err == nil && fi.IsDir():
		return nil, fsErrorf(CodeIsDirectory, "%s is a directory", pl.target)
	case err == nil && !fi.Mode().IsRegular():
		return nil, fsErrorf(CodeInvalid, "%s is %s, not a regular file; refusing to replace it", pl.target, fsDescribeType(fi.Mode()))
	case err == nil:
		pl.old = fi
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fsNotFound(pl.target, err)
	}
	dir := path.Dir(pl.target)
	dfi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !makeParents {
			return nil, fsErrorf(CodeNotFound, "directory %s does not exist; set make_parents to create it", dir)
		}
		uid, gid := s.fsOwner()
		if _, err := fsMkdirAll(dir, uid, gid); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fsNotFound(dir, err)
	case !dfi.IsDir():
		return nil, fsErrorf(CodeNotDirectory, "%s is not a directory", dir)
	}
	return pl, nil
}

// fsWriteTemp writes src (at most limit bytes) to a new temporary file next
// to target, so that a rename can replace target atomically: a reader sees
// the old or the new content, never a mix. The file is synced before it is
// renamed, or a crash could leave target empty.
func fsWriteTemp(target string, src io.Reader, limit int64, mode uint32, uid, gid int) (tmp string, n int64, sum []byte, err error) {
	base := string(fsCutUTF8([]byte(path.Base(target)), 64))
	f, err := os.CreateTemp(path.Dir(target), ".berth-"+strings.ReplaceAll(base, "*", "_")+"-*.tmp")
	if err != nil {
		return "", 0, nil, err
	}
	name := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(name)
		}
	}()
	h := sha256.New()
	n, err = io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(src, limit+1), make([]byte, 256<<10))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", 0, nil, fsErrorf(CodeTooLarge, "content larger than %d bytes", limit)
		}
		return "", 0, nil, fmt.Errorf("writing %s: %w", target, err)
	}
	if n > limit {
		return "", 0, nil, fsErrorf(CodeTooLarge, "content larger than the %d bytes one write allows", limit)
	}
	if err = f.Sync(); err != nil {
		return "", 0, nil, err
	}
	if err = fsFchown(f, uid, gid); err != nil {
		return "", 0, nil, err
	}
	if err = f.Chmod(fsGoMode(mode)); err != nil {
		return "", 0, nil, err
	}
	if err = f.Close(); err != nil {
		return "", 0, nil, err
	}
	return name, n, h.Sum(nil), nil
}

func fsCheckRevisionSyntax(rev string) error {
	if rev == "" {
		return nil
	}
	if len(rev) != sha256.Size*2 {
		return fsErrorf(CodeInvalid, "expected_revision %q is not a sha256 in hex (64 characters)", fsShort(rev))
	}
	if _, err := hex.DecodeString(rev); err != nil {
		return fsErrorf(CodeInvalid, "expected_revision %q is not a sha256 in hex", fsShort(rev))
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
	target, expected string
	stamp            fsStamp
	hashedAt         time.Time
}

// fsHashFile returns the revision of target and the stat of the version
// hashed. A file too large for a revision has rev "".
func fsHashFile(target string) (rev string, fi fs.FileInfo, err error) {
	f, fi, err := fsOpenRegular(target)
	if err != nil {
		return "", nil, err
	}
	defer func() { _ = f.Close() }()
	if fi.Size() > MaxRevisionBytes {
		return "", fi, nil
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, MaxRevisionBytes+1))
	if err != nil {
		return "", nil, err
	}
	if n > MaxRevisionBytes {
		return "", fi, nil
	}
	return hex.EncodeToString(h.Sum(nil)), fi, nil
}

func fsCheckRevision(target, expected string) (fsRevisionCheck, error) {
	c := fsRevisionCheck{target: target, expected: expected, hashedAt: time.Now()}
	rev, fi, err := fsHashFile(target)
	if err != nil {
		var fe *fsError
		if errors.As(err, &fe) && fe.code == CodeNotFound {
			return c, fsErrorf(CodeConflict, "%s does not exist, but expected_revision %s was given: it was deleted or moved since it was read", target, expected)
		}
		return c, err
	}
	if rev == "" {
		return c, fsErrorf(CodeConflict, "%s is larger than %d bytes and so has no revision; write without expected_revision", target, MaxRevisionBytes)
	}
	if rev != expected {
		return c, fsErrorf(CodeConflict, "%s has changed since it was read: its current revision is %s, not %s; read it again and redo the change", target, rev, expected)
	}
	c.stamp, _ = fsStampOf(fi)
	return c, nil
}

// recheck repeats the check, hashing again only if the file may have
// changed since it was hashed.
func (c fsRevisionCheck) recheck() error {
	fi, err := os.Stat(c.target)
	if err == nil {
		if st, ok := fsStampOf(fi); ok && st == c.stamp && st.ctime.Before(c.hashedAt.Add(-fsRacyWindow)) {
			return nil
		}
	}
	_, err = fsCheckRevision(c.target, c.expected)
	return err
}

func (s *server) fsEdit(ctx context.Context, req EditRequest) (EditResult, error) {
	p, err := s.fsPath(req.Path)
	if err != nil {
		return EditResult{}, err
	}
	if len(req.Edits) == 0 {
		return EditResult{}, fsErrorf(CodeInvalid, "no edits given")
	}
	if len(req.Edits) > MaxEdits {
		return EditResult{}, fsErrorf(CodeInvalid, "%d edits given; at most %d are allowed in one call", len(req.Edits), MaxEdits)
	}
	for i, e := range req.Edits {
		if e.Old == "" {
			return EditResult{}, fsErrorf(CodeInvalid, "edit %d of %d: old text is empty; to write a whole file use write", i+1, len(req.Edits))
		}
	}
	if err := fsCheckRevisionSyntax(req.ExpectedRevision); err != nil {
		return EditResult{}, err
	}
	if !req.DryRun {
		if err := fsCheckMutable(p, "edit", false); err != nil {
			return EditResult{}, err
		}
	}
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return EditResult{}, fsErrorf(CodeNotFound, "%s does not exist; use write to create a file", p)
	}
	plan, err := s.fsPlanWrite(p, false)
	if err != nil {
		return EditResult{}, err
	}
	if plan.old == nil {
		return EditResult{}, fsErrorf(CodeNotFound, "%s does not exist; use write to create a file", p)
	}
	target := plan.target

	// Held from the read to the rename, so two edits through the agent
	// cannot both start from the same content and lose one.
	unlock := fsLocks.lock(target)
	defer unlock()
	readAt := time.Now()
	f, fi, err := fsOpenRegular(target)
	if err != nil {
		return EditResult{}, err
	}
	if fi.Size() > MaxEditBytes {
		_ = f.Close()
		return EditResult{}, fsErrorf(CodeTooLarge, "%s is %d bytes; edit handles files up to %d bytes (use write to replace it)", target, fi.Size(), MaxEditBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxEditBytes+1))
	_ = f.Close()
	if err != nil {
		return EditResult{}, err
	}
	if len(data) > MaxEditBytes {
		return EditResult{}, fsErrorf(CodeTooLarge, "%s grew beyond %d bytes while being read", target, MaxEditBytes)
	}
	stamp, _ := fsStampOf(fi)
	sum := sha256.Sum256(data)
	cur := hex.EncodeToString(sum[:])
	if req.ExpectedRevision != "" && req.ExpectedRevision != cur {
		return EditResult{}, fsErrorf(CodeConflict, "%s has changed since it was read: its current revision is %s, not %s; read it again and redo the edit", target, cur, req.ExpectedRevision)
	}

	old := string(data)
	content, replacements, err := fsApplyEdits(target, old, req.Edits)
	if err != nil {
		return EditResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return EditResult{}, err
	}
	res := EditResult{
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
	check := fsRevisionCheck{target: target, expected: cur, stamp: stamp, hashedAt: readAt}
	if err := check.recheck(); err != nil {
		return EditResult{}, fsErrorf(CodeConflict, "%s was changed by something else while being edited; nothing was written: %v", target, err)
	}
	uid, gid := fsStatOwner(fi)
	tmp, _, newSum, err := fsWriteTemp(target, strings.NewReader(content), MaxEditBytes, fsModeBits(fi.Mode()), uid, gid)
	if err != nil {
		return EditResult{}, err
	}
	if err := os.Rename(tmp, target); err != nil {
		_ = os.Remove(tmp)
		return EditResult{}, err
	}
	fsSyncDir(path.Dir(target))
	res.Revision = hex.EncodeToString(newSum)
	return res, nil
}

// fsApplyEdits applies edits in order to content, all or nothing.
func fsApplyEdits(target, content string, edits []Edit) (string, int, error) {
	total := 0
	for i, e := range edits {
		n := strings.Count(content, e.Old)
		which := fmt.Sprintf("edit %d of %d", i+1, len(edits))
		if n == 0 {
			return "", 0, fsErrorf(CodeNoMatch, "%s: old text not found in %s%s; nothing was changed", which, target, fsNoMatchHint(content, e.Old, i > 0))
		}
		if n > 1 && !e.ReplaceAll {
			return "", 0, fsErrorf(CodeAmbiguous, "%s: old text occurs %d times in %s; include more surrounding text to pick one, or set replace_all; nothing was changed", which, n, target)
		}
		if !e.ReplaceAll {
			n = 1
		}
		if grown := len(content) + n*(len(e.New)-len(e.Old)); grown > MaxEditBytes {
			return "", 0, fsErrorf(CodeTooLarge, "%s would make %s %d bytes, more than the %d edit allows; nothing was changed", which, target, grown, MaxEditBytes)
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

func (s *server) fsMkdir(_ context.Context, req fsMkdirRequest) (FileInfo, error) {
	p, err := s.fsPath(req.Path)
	if err != nil {
		return FileInfo{}, err
	}
	if err := fsCheckMutable(p, "create", false); err != nil {
		return FileInfo{}, err
	}
	if fi, err := os.Lstat(p); err == nil {
		if !req.Parents {
			return FileInfo{}, fsErrorf(CodeExists, "%s already exists (%s)", p, fsDescribeType(fi.Mode()))
		}
		if sfi, err := os.Stat(p); err == nil && sfi.IsDir() {
			return fsLstat(p)
		}
		return FileInfo{}, fsErrorf(CodeNotDirectory, "%s exists and is not a directory", p)
	}
	uid, gid := s.fsOwner()
	if req.Parents {
		if _, err := fsMkdirAll(p, uid, gid); err != nil {
			return FileInfo{}, err
		}
		return fsLstat(p)
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return FileInfo{}, fsErrorf(CodeNotFound, "directory %s does not exist; set parents to create it too", path.Dir(p))
		case errors.Is(err, fs.ErrExist):
			return FileInfo{}, fsErrorf(CodeExists, "%s already exists", p)
		}
		return FileInfo{}, fsNotFound(p, err)
	}
	if err := fsSetupNew(p, 0o755, uid, gid); err != nil {
		return FileInfo{}, err
	}
	return fsLstat(p)
}

func (s *server) fsDelete(_ context.Context, req fsDeleteRequest) (fsDeleteResult, error) {
	p, err := s.fsPath(req.Path)
	if err != nil {
		return fsDeleteResult{}, err
	}
	if err := fsCheckMutable(p, "delete", true); err != nil {
		return fsDeleteResult{}, err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return fsDeleteResult{}, fsNotFound(p, err)
	}
	switch {
	case !fi.IsDir():
		err = os.Remove(p)
	case req.Recursive:
		err = os.RemoveAll(p)
	default:
		if err = syscall.Rmdir(p); errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			return fsDeleteResult{}, fsErrorf(CodeNotEmpty, "directory %s is not empty; set recursive to delete it with everything in it", p)
		}
		if err != nil {
			err = &fs.PathError{Op: "rmdir", Path: p, Err: err}
		}
	}
	if err != nil {
		return fsDeleteResult{}, err
	}
	return fsDeleteResult{Path: p}, nil
}

// fsTransfer holds what Move and Copy check alike.
type fsTransfer struct {
	src, dst  string
	sfi       fs.FileInfo
	dstIsDir  bool
	overwrite bool
}

func (s *server) fsPrepareTransfer(req fsTransferRequest, verb string) (*fsTransfer, error) {
	src, err := s.fsPath(req.Src)
	if err != nil {
		return nil, fmt.Errorf("src: %w", err)
	}
	dst, err := s.fsPath(req.Dst)
	if err != nil {
		return nil, fmt.Errorf("dst: %w", err)
	}
	t := &fsTransfer{src: src, dst: dst, overwrite: req.Overwrite}
	if verb == "move" {
		if err := fsCheckMutable(src, "move", true); err != nil {
			return nil, err
		}
	}
	if err := fsCheckMutable(dst, verb+" onto", true); err != nil {
		return nil, err
	}
	if t.sfi, err = os.Lstat(src); err != nil {
		return nil, fsNotFound(src, err)
	}
	if src == dst {
		return t, nil
	}
	if t.sfi.IsDir() && fsWithin(dst, src) {
		return nil, fsErrorf(CodeInvalid, "cannot %s %s into itself (%s)", verb, src, dst)
	}
	dir := path.Dir(dst)
	dfi, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fsErrorf(CodeNotFound, "directory %s does not exist; create it first", dir)
		}
		return nil, fsNotFound(dir, err)
	}
	if !dfi.IsDir() {
		return nil, fsErrorf(CodeNotDirectory, "%s is not a directory", dir)
	}
	if old, err := os.Lstat(dst); err == nil {
		if !req.Overwrite {
			return nil, fsErrorf(CodeExists, "%s already exists; set overwrite to replace it", dst)
		}
		t.dstIsDir = old.IsDir()
		switch {
		case old.IsDir() && !t.sfi.IsDir():
			return nil, fsErrorf(CodeIsDirectory, "%s is a directory and %s is not; delete the directory first to replace it", dst, src)
		case !old.IsDir() && t.sfi.IsDir():
			return nil, fsErrorf(CodeNotDirectory, "%s is not a directory and %s is; delete it first to replace it", dst, src)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fsNotFound(dst, err)
	}
	return t, nil
}

func (s *server) fsMove(ctx context.Context, req fsTransferRequest) (FileInfo, error) {
	t, err := s.fsPrepareTransfer(req, "move")
	if err != nil {
		return FileInfo{}, err
	}
	if t.src == t.dst {
		return fsLstat(t.dst)
	}
	err = fsPlace(t.src, t.dst, t.overwrite, t.dstIsDir)
	if errors.Is(err, syscall.EXDEV) {
		// Another file system (a volume mounted into the workspace, say):
		// copy everything as it is, then remove the original.
		tmp, cerr := s.fsCopyToTemp(ctx, t, true)
		if cerr != nil {
			return FileInfo{}, cerr
		}
		if err := fsPlace(tmp, t.dst, t.overwrite, t.dstIsDir); err != nil {
			_ = os.RemoveAll(tmp)
			return FileInfo{}, fsPlaceError(t.dst, err)
		}
		if err := os.RemoveAll(t.src); err != nil {
			return FileInfo{}, fmt.Errorf("copied %s to %s, but removing the original failed: %w", t.src, t.dst, err)
		}
		err = nil
	}
	if err != nil {
		return FileInfo{}, fsPlaceError(t.dst, err)
	}
	fsSyncDir(path.Dir(t.dst))
	return fsLstat(t.dst)
}

func fsPlaceError(dst string, err error) error {
	if errors.Is(err, fs.ErrExist) {
		return fsErrorf(CodeExists, "%s already exists; set overwrite to replace it", dst)
	}
	return err
}

// fsPlace renames src to dst. Without overwrite it never replaces a dst
// that appeared meanwhile (RENAME_NOREPLACE). A directory replacing a
// directory is swapped in atomically (RENAME_EXCHANGE) and the old one then
// removed, so dst is never missing in between.
func fsPlace(src, dst string, overwrite, dstIsDir bool) error {
	switch {
	case !overwrite:
		err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
			return fsRenameError(src, dst, err)
		}
		// A file system without RENAME_NOREPLACE: check, then rename.
		if _, err := os.Lstat(dst); err == nil {
			return &os.LinkError{Op: "rename", Old: src, New: dst, Err: syscall.EEXIST}
		}
		return os.Rename(src, dst)
	case dstIsDir:
		err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			if err := os.RemoveAll(dst); err != nil {
				return err
			}
			return os.Rename(src, dst)
		}
		if err != nil {
			return fsRenameError(src, dst, err)
		}
		// src now holds the replaced directory.
		if err := os.RemoveAll(src); err != nil {
			return fmt.Errorf("replaced %s, but removing its old content (left at %s) failed: %w", dst, src, err)
		}
		return nil
	}
	return os.Rename(src, dst)
}

func fsRenameError(src, dst string, err error) error {
	if err == nil {
		return nil
	}
	return &os.LinkError{Op: "rename", Old: src, New: dst, Err: err}
}

func (s *server) fsCopy(ctx context.Context, req fsTransferRequest) (FileInfo, error) {
	t, err := s.fsPrepareTransfer(req, "copy")
	if err != nil {
		return FileInfo{}, err
	}
	if t.src == t.dst {
		return FileInfo{}, fsErrorf(CodeInvalid, "source and destination are the same path (%s)", t.src)
	}
	tmp, err := s.fsCopyToTemp(ctx, t, false)
	if err != nil {
		return FileInfo{}, err
	}
	if err := fsPlace(tmp, t.dst, t.overwrite, t.dstIsDir); err != nil {
		_ = os.RemoveAll(tmp)
		return FileInfo{}, fsPlaceError(t.dst, err)
	}
	fsSyncDir(path.Dir(t.dst))
	return fsLstat(t.dst)
}

// fsCopyOwner says who copies belong to: the source's owner (preserve, for
// a move), or the workspace user.
type fsCopyOwner struct {
	preserve bool
	uid, gid int
	entries  int
}

// fsCopyToTemp copies t.src to a new hidden name next to t.dst, so that the
// copy only appears at t.dst once it is complete.
func (s *server) fsCopyToTemp(ctx context.Context, t *fsTransfer, preserve bool) (string, error) {
	if t.sfi.Mode()&fs.ModeSocket != 0 {
		return "", fsErrorf(CodeInvalid, "%s is a socket, which cannot be copied", t.src)
	}
	if t.sfi.IsDir() {
		// Count first, so that an oversized tree fails before anything is
		// written.
		w := &fsWalker{ctx: ctx, skip: map[string]bool{}, max: MaxCopyEntries - 1}
		err := w.walk(t.src, func(string, fs.DirEntry) error { return nil })
		if errors.Is(err, errFSWalkLimit) {
			return "", fsErrorf(CodeLimit, "%s has more than %d entries; copy it in smaller parts", t.src, MaxCopyEntries)
		}
		if err != nil {
			return "", err
		}
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	base := string(fsCutUTF8([]byte(path.Base(t.dst)), 64))
	tmp := path.Join(path.Dir(t.dst), ".berth-"+base+"-"+hex.EncodeToString(rnd[:])+".tmp")
	own := &fsCopyOwner{preserve: preserve}
	own.uid, own.gid = s.fsOwner()
	if err := fsCopyTree(ctx, t.src, tmp, t.sfi, own); err != nil {
		_ = os.RemoveAll(tmp)
		return "", err
	}
	return tmp, nil
}

// fsCopyTree copies src (described by fi, not followed if a symlink) to dst,
// which must not exist.
func fsCopyTree(ctx context.Context, src, dst string, fi fs.FileInfo, own *fsCopyOwner) error {
	own.entries++
	if own.entries > MaxCopyEntries {
		return fsErrorf(CodeLimit, "more than %d entries to copy (the tree grew while being copied)", MaxCopyEntries)
	}
	if own.entries%256 == 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	uid, gid := own.uid, own.gid
	bits := fsModeBits(fi.Mode())
	if own.preserve {
		uid, gid = fsStatOwner(fi)
	} else {
		// setuid and setgid would now be for the new owner; cp drops
		// them too.
		bits &^= unix.S_ISUID | unix.S_ISGID
	}
	m := fi.Mode()
	switch {
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
		return fsChown(dst, uid, gid)
	case m.IsDir():
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		entries, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range entries {
			cfi, err := os.Lstat(fsJoin(src, e.Name()))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if cfi.Mode()&fs.ModeSocket != 0 {
				// A socket is only an address of a process that listens;
				// a copy of one means nothing.
				continue
			}
			if err := fsCopyTree(ctx, fsJoin(src, e.Name()), fsJoin(dst, e.Name()), cfi, own); err != nil {
				return err
			}
		}
	case m.IsRegular():
		if err := fsCopyFile(src, dst); err != nil {
			return err
		}
	case m&fs.ModeNamedPipe != 0:
		if err := unix.Mkfifo(dst, 0o600); err != nil {
			return &fs.PathError{Op: "mkfifo", Path: dst, Err: err}
		}
	case m&fs.ModeDevice != 0:
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fsErrorf(CodeInvalid, "cannot copy device %s", src)
		}
		kind := uint32(unix.S_IFBLK)
		if m&fs.ModeCharDevice != 0 {
			kind = unix.S_IFCHR
		}
		if err := unix.Mknod(dst, kind|0o600, int(st.Rdev)); err != nil {
			return &fs.PathError{Op: "mknod", Path: dst, Err: err}
		}
	default:
		return fsErrorf(CodeInvalid, "cannot copy %s: %s", src, fsDescribeType(m))
	}
	// Ownership, then mode (chown clears setuid), then times; for a
	// directory after its content, so a read-only directory can be filled.
	if err := fsSetupNew(dst, bits, uid, gid); err != nil {
		return err
	}
	if own.preserve {
		_ = os.Chtimes(dst, time.Time{}, fi.ModTime())
	}
	return nil
}

func fsCopyFile(src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// *os.File to *os.File: the kernel copies (copy_file_range), which is
	// also a reflink on file systems that can.
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
