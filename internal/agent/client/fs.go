package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// Default timeouts of file calls whose context has no deadline. Walking or
// copying a big tree legitimately takes minutes; a stat does not. Write
// and ReadRange stream and have none: their callers bound them.
const (
	fsQuickTimeout = defaultCallTimeout
	fsReadTimeout  = time.Minute
	fsTreeTimeout  = 5 * time.Minute
)

// Stat describes path without following a final symlink.
func (c *Client) Stat(ctx context.Context, p string) (wire.FileInfo, error) {
	var fi wire.FileInfo
	q := url.Values{"path": {p}}
	if err := c.fsCall(ctx, http.MethodGet, wire.PathFSStat, q, nil, "", fsQuickTimeout, &fi); err != nil {
		return wire.FileInfo{}, err
	}
	return fi, fsCheckInfo(fi, "")
}

// List lists a directory, or with Recursive its whole tree, one page at a
// time. A tree larger than MaxEntries fails with CodeLimit.
func (c *Client) List(ctx context.Context, req wire.ListRequest) (wire.ListResult, error) {
	var res wire.ListResult
	if err := c.fsPost(ctx, wire.PathFSList, req, &res, fsTreeTimeout); err != nil {
		return wire.ListResult{}, err
	}
	if err := fsCheckPath(res.Path); err != nil {
		return wire.ListResult{}, err
	}
	if len(res.Entries) > wire.ListMaxLimit || res.Total < len(res.Entries) || res.NextOffset < 0 || res.NextOffset > res.Total {
		return wire.ListResult{}, fmt.Errorf("%w: list of %d entries, total %d, next offset %d", ErrBadResponse, len(res.Entries), res.Total, res.NextOffset)
	}
	for _, e := range res.Entries {
		if err := fsCheckInfo(e, res.Path); err != nil {
			return wire.ListResult{}, err
		}
	}
	return res, nil
}

// ReadText reads a window of lines of a text file (see ReadTextResult).
func (c *Client) ReadText(ctx context.Context, req wire.ReadTextRequest) (wire.ReadTextResult, error) {
	var res wire.ReadTextResult
	if err := c.fsPost(ctx, wire.PathFSRead, req, &res, fsReadTimeout); err != nil {
		return wire.ReadTextResult{}, err
	}
	bad := func(what string, args ...any) (wire.ReadTextResult, error) {
		return wire.ReadTextResult{}, fmt.Errorf("%w: read text: "+what, append([]any{ErrBadResponse}, args...)...)
	}
	switch {
	case fsCheckPath(res.Path) != nil:
		return bad("path %q", sanitizeText(res.Path, 256))
	case len(res.Text) > wire.ReadMaxBytes:
		return bad("%d bytes of text", len(res.Text))
	case res.Binary && res.Text != "":
		return bad("text of a binary file")
	case res.StartLine < -1 || res.EndLine < res.StartLine || res.TotalLines < -1 || res.NextOffset < 0 || res.Size < 0:
		return bad("lines %d-%d of %d, next %d, size %d", res.StartLine, res.EndLine, res.TotalLines, res.NextOffset, res.Size)
	case res.TotalLines >= 0 && res.EndLine > res.TotalLines:
		return bad("end line %d beyond %d lines", res.EndLine, res.TotalLines)
	case fsCheckRevisionText(res.Revision) != nil:
		return bad("revision %q", sanitizeText(res.Revision, 80))
	case checkText(res.MIMEType, 256) != nil:
		return bad("mime type %q", sanitizeText(res.MIMEType, 80))
	}
	return res, nil
}

// ReadRange streams length bytes of the file at path from offset (length
// <= 0: to the end), following symlinks. The caller must close the reader.
// The body is not buffered: it arrives as the caller reads it, and a body
// that ends short of what the agent announced reads as
// io.ErrUnexpectedEOF. There is no default timeout; ctx bounds the whole
// transfer.
func (c *Client) ReadRange(ctx context.Context, p string, offset, length int64) (io.ReadCloser, wire.FileInfo, error) {
	q := url.Values{"path": {p}}
	if offset != 0 {
		q.Set("offset", strconv.FormatInt(offset, 10))
	}
	if length > 0 {
		q.Set("length", strconv.FormatInt(length, 10))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://berth-agent"+wire.PathFSFile+"?"+q.Encode(), nil)
	if err != nil {
		return nil, wire.FileInfo{}, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, wire.FileInfo{}, fmt.Errorf("berth agent: %w", err)
	}
	fail := func(err error) (io.ReadCloser, wire.FileInfo, error) {
		_ = resp.Body.Close()
		return nil, wire.FileInfo{}, err
	}
	if resp.StatusCode != http.StatusOK {
		data, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxResponseBytes+1))
		if err != nil {
			return fail(fmt.Errorf("berth agent: reading response: %w", err))
		}
		if err := checkProtocolHeader(resp.Header, data); err != nil {
			return fail(err)
		}
		return fail(remoteError(resp.StatusCode, data))
	}
	if err := checkProtocolHeader(resp.Header, nil); err != nil {
		return fail(err)
	}
	var info wire.FileInfo
	if err := json.Unmarshal([]byte(resp.Header.Get(wire.FileInfoHeader)), &info); err != nil {
		return fail(fmt.Errorf("%w: %s header: %v", ErrBadResponse, wire.FileInfoHeader, err))
	}
	if err := fsCheckInfo(info, ""); err != nil {
		return fail(err)
	}
	switch {
	case resp.ContentLength < 0:
		return fail(fmt.Errorf("%w: file download without Content-Length", ErrBadResponse))
	case length > 0 && resp.ContentLength > length:
		return fail(fmt.Errorf("%w: %d bytes sent for a range of %d", ErrBadResponse, resp.ContentLength, length))
	}
	return &fsBody{r: io.LimitReader(resp.Body, resp.ContentLength), c: resp.Body, n: resp.ContentLength}, info, nil
}

// fsBody is a download's body: never more than Content-Length, whatever
// the agent sends.
type fsBody struct {
	r io.Reader
	c io.Closer
	n int64
}

func (b *fsBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *fsBody) Close() error               { return b.c.Close() }

// Size is the number of bytes the download carries.
func (b *fsBody) Size() int64 { return b.n }

// Write replaces the whole file at req.Path with what body yields,
// atomically: readers see the old or the new content, never a mix. body
// is streamed, not buffered; nil writes an empty file. There is no
// default timeout; ctx bounds the whole transfer.
func (c *Client) Write(ctx context.Context, req wire.WriteRequest, body io.Reader) (wire.WriteResult, error) {
	q := url.Values{"path": {req.Path}}
	if req.Mode != "" {
		q.Set("mode", req.Mode)
	}
	if req.ExpectedRevision != "" {
		q.Set("expected_revision", req.ExpectedRevision)
	}
	if req.MakeParents {
		q.Set("make_parents", "true")
	}
	if body == nil {
		body = http.NoBody
	}
	var res wire.WriteResult
	if err := c.fsCall(ctx, http.MethodPut, wire.PathFSFile, q, body, "application/octet-stream", transferTimeout, &res); err != nil {
		return wire.WriteResult{}, err
	}
	return res, fsCheckWriteResult(res)
}

func fsCheckWriteResult(res wire.WriteResult) error {
	if err := fsCheckPath(res.Path); err != nil {
		return err
	}
	if res.Size < 0 || fsCheckRevisionText(res.Revision) != nil {
		return fmt.Errorf("%w: write result size %d, revision %q", ErrBadResponse, res.Size, sanitizeText(res.Revision, 80))
	}
	return nil
}

// Edit applies exact search and replace edits to a text file, all or
// nothing (see EditRequest).
func (c *Client) Edit(ctx context.Context, req wire.EditRequest) (wire.EditResult, error) {
	var res wire.EditResult
	if err := c.fsPost(ctx, wire.PathFSEdit, req, &res, fsReadTimeout); err != nil {
		return wire.EditResult{}, err
	}
	if err := fsCheckPath(res.Path); err != nil {
		return wire.EditResult{}, err
	}
	if len(res.Diff) > wire.MaxDiffBytes+256 || res.Replacements < 0 || fsCheckRevisionText(res.Revision) != nil {
		return wire.EditResult{}, fmt.Errorf("%w: edit result with %d bytes of diff, %d replacements, revision %q",
			ErrBadResponse, len(res.Diff), res.Replacements, sanitizeText(res.Revision, 80))
	}
	return res, nil
}

// Mkdir creates a directory (mode 0755, owned by the workspace user);
// with parents also its missing parents, and an existing directory is then
// not an error (CodeExists otherwise).
func (c *Client) Mkdir(ctx context.Context, p string, parents bool) (wire.FileInfo, error) {
	var fi wire.FileInfo
	if err := c.fsPost(ctx, wire.PathFSMkdir, wire.MkdirRequest{Path: p, Parents: parents}, &fi, fsQuickTimeout); err != nil {
		return wire.FileInfo{}, err
	}
	return fi, fsCheckInfo(fi, "")
}

// Delete removes a file, symlink (not what it points to) or empty
// directory; with recursive, a directory and everything in it. A non-empty
// directory without recursive fails with CodeNotEmpty.
func (c *Client) Delete(ctx context.Context, p string, recursive bool) error {
	var res wire.DeleteResult
	timeout := fsQuickTimeout
	if recursive {
		timeout = fsTreeTimeout
	}
	if err := c.fsPost(ctx, wire.PathFSDelete, wire.DeleteRequest{Path: p, Recursive: recursive}, &res, timeout); err != nil {
		return err
	}
	return fsCheckPath(res.Path)
}

// Move renames src to dst (dst is the new path, not a directory to move
// into). An existing dst fails with CodeExists unless overwrite; a
// directory replaces only a directory, a file only a non-directory.
func (c *Client) Move(ctx context.Context, src, dst string, overwrite bool) (wire.FileInfo, error) {
	var fi wire.FileInfo
	if err := c.fsPost(ctx, wire.PathFSMove, wire.TransferRequest{Src: src, Dst: dst, Overwrite: overwrite}, &fi, fsTreeTimeout); err != nil {
		return wire.FileInfo{}, err
	}
	return fi, fsCheckInfo(fi, "")
}

// Copy copies src to dst, recursively for a directory, keeping modes and
// copying symlinks as symlinks; the copy belongs to the workspace user.
// Overwrite rules are those of Move.
func (c *Client) Copy(ctx context.Context, src, dst string, overwrite bool) (wire.FileInfo, error) {
	var fi wire.FileInfo
	if err := c.fsPost(ctx, wire.PathFSCopy, wire.TransferRequest{Src: src, Dst: dst, Overwrite: overwrite}, &fi, fsTreeTimeout); err != nil {
		return wire.FileInfo{}, err
	}
	return fi, fsCheckInfo(fi, "")
}

// Find lists entries below Root whose base name matches Pattern.
func (c *Client) Find(ctx context.Context, req wire.FindRequest) (wire.FindResult, error) {
	var res wire.FindResult
	if err := c.fsPost(ctx, wire.PathFSFind, req, &res, fsTreeTimeout); err != nil {
		return wire.FindResult{}, err
	}
	if len(res.Matches) > wire.FindMaxResults || res.Scanned < 0 || checkText(res.Reason, 64) != nil {
		return wire.FindResult{}, fmt.Errorf("%w: find result with %d matches, %d scanned, reason %q",
			ErrBadResponse, len(res.Matches), res.Scanned, sanitizeText(res.Reason, 64))
	}
	for _, m := range res.Matches {
		if err := fsCheckInfo(m, ""); err != nil {
			return wire.FindResult{}, err
		}
	}
	return res, nil
}

// Grep searches the lines of the files below Root.
func (c *Client) Grep(ctx context.Context, req wire.GrepRequest) (wire.GrepResult, error) {
	var res wire.GrepResult
	if err := c.fsPost(ctx, wire.PathFSGrep, req, &res, fsTreeTimeout); err != nil {
		return wire.GrepResult{}, err
	}
	if len(res.Matches) > wire.GrepMaxMatches || res.FilesScanned < 0 || res.BytesScanned < 0 || checkText(res.Reason, 64) != nil {
		return wire.GrepResult{}, fmt.Errorf("%w: grep result with %d matches, %d files, %d bytes, reason %q",
			ErrBadResponse, len(res.Matches), res.FilesScanned, res.BytesScanned, sanitizeText(res.Reason, 64))
	}
	for _, m := range res.Matches {
		if err := fsCheckPath(m.Path); err != nil {
			return wire.GrepResult{}, err
		}
		// Excerpt marks add at most two "…" to MaxLineLength bytes.
		if m.Line < 1 || len(m.Text) > wire.GrepMaxLineLength+8 {
			return wire.GrepResult{}, fmt.Errorf("%w: grep match at line %d with %d bytes", ErrBadResponse, m.Line, len(m.Text))
		}
	}
	return res, nil
}

func (c *Client) fsPost(ctx context.Context, p string, in, out any, timeout time.Duration) error {
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.fsCall(ctx, http.MethodPost, p, nil, bytes.NewReader(data), "application/json", timeout, out)
}

// fsCall is call for the file endpoints: answers up to MaxFSResponseBytes
// (a page of text or of a listing is more than MaxResponseBytes), any
// request body, and a per-operation default timeout (none if 0).
func (c *Client) fsCall(ctx context.Context, method, p string, q url.Values, body io.Reader, contentType string, timeout time.Duration, out any) error {
	return c.do(ctx, request{method: method, path: p, query: q, body: body, contentType: contentType, maxBody: wire.MaxFSResponseBytes, timeout: timeout}, out)
}

// fsCheckPath accepts what the agent resolves paths to (see ValidPath).
func fsCheckPath(p string) error {
	if !wire.ValidPath(p) {
		return fmt.Errorf("%w: path %q is not an absolute clean path", ErrBadResponse, sanitizeText(p, 256))
	}
	return nil
}

// fsCheckInfo validates a FileInfo from the agent; under, if set, is the
// directory it must be in.
func fsCheckInfo(fi wire.FileInfo, under string) error {
	if err := fsCheckPath(fi.Path); err != nil {
		return err
	}
	bad := func(what string, args ...any) error {
		return fmt.Errorf("%w: file info of %q: "+what, append([]any{ErrBadResponse, sanitizeText(fi.Path, 256)}, args...)...)
	}
	if under != "" && (fi.Path == under || !wire.PathWithin(fi.Path, under)) {
		return bad("not below %q", sanitizeText(under, 256))
	}
	if fi.Name != path.Base(fi.Path) {
		return bad("name %q", sanitizeText(fi.Name, 256))
	}
	switch fi.Type {
	case wire.FileTypeFile, wire.FileTypeDir, wire.FileTypeSymlink, wire.FileTypeOther:
	default:
		return bad("type %q", sanitizeText(fi.Type, 32))
	}
	if fi.Size < 0 {
		return bad("size %d", fi.Size)
	}
	if len(fi.Mode) != 4 || strings.Trim(fi.Mode, "01234567") != "" {
		return bad("mode %q", sanitizeText(fi.Mode, 32))
	}
	if len(fi.LinkTarget) > wire.MaxPathLength || strings.IndexByte(fi.LinkTarget, 0) >= 0 || (fi.LinkTarget != "" && fi.Type != wire.FileTypeSymlink) {
		return bad("link target of %d bytes", len(fi.LinkTarget))
	}
	return nil
}

func fsCheckRevisionText(rev string) error {
	if rev == "" {
		return nil
	}
	if len(rev) != 64 {
		return fmt.Errorf("revision of %d characters", len(rev))
	}
	if _, err := hex.DecodeString(rev); err != nil {
		return err
	}
	return nil
}
