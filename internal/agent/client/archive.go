package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// Export streams a tar.gz of the directory or regular file at path (empty:
// the data directory), with names relative to it (a file: its base name).
// Symlinks are archived as symlinks, never followed; a symlink as path is
// refused. Sockets, devices and named pipes are left out and counted.
//
// The body is not buffered and there is no default timeout: ctx bounds
// the whole transfer. Read returns io.EOF only after the agent's trailers
// confirmed a complete archive; an export that failed or was cut short
// returns an error instead, so a caller that copies the stream to io.EOF
// never mistakes a partial archive for a whole one. Stats is valid after
// that io.EOF. The caller must Close the stream.
func (c *Client) Export(ctx context.Context, p string) (*ExportStream, error) {
	q := url.Values{}
	if p != "" {
		q.Set("path", p)
	}
	u := "http://berth-agent" + wire.PathArchiveExport
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, fmt.Errorf("berth agent: %w", err)
	}
	fail := func(err error) (*ExportStream, error) {
		_ = resp.Body.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		data, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxResponseBytes+1))
		if err != nil {
			return fail(fmt.Errorf("berth agent: reading response: %w", err))
		}
		var unused struct{}
		if err := decodeResponse(resp.StatusCode, resp.Header, data, &unused); err != nil {
			return fail(err)
		}
		return fail(badResponse("export answered HTTP %d", resp.StatusCode))
	}
	if err := checkProtocolHeader(resp.Header, nil); err != nil {
		return fail(err)
	}
	return &ExportStream{ctx: ctx, resp: resp}, nil
}

// ExportStream is the body of an export (see Client.Export).
type ExportStream struct {
	ctx   context.Context
	resp  *http.Response
	stats wire.ExportStats
	// err is sticky: io.EOF once the archive was confirmed complete.
	err error
}

func (e *ExportStream) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.resp.Body.Read(p)
	switch {
	case err == io.EOF:
		// The trailers are only there once the body is read to its end.
		e.stats, e.err = exportTrailers(e.resp.Trailer)
		if e.err == nil {
			e.err = io.EOF
		}
		return n, e.err
	case err != nil:
		if cerr := e.ctx.Err(); cerr != nil {
			err = cerr
		} else {
			err = fmt.Errorf("berth agent: export stream broke off (did the workspace stop?): %w", err)
		}
		e.err = err
		return n, err
	}
	return n, nil
}

// Close ends the transfer; closing before io.EOF stops the export in the
// agent.
func (e *ExportStream) Close() error { return e.resp.Body.Close() }

// Stats sums up the export; zero until Read has returned io.EOF.
func (e *ExportStream) Stats() wire.ExportStats {
	if e.err != io.EOF {
		return wire.ExportStats{}
	}
	return e.stats
}

// exportTrailers reads and checks the counts that end an export, or the
// error that ended it.
func exportTrailers(t http.Header) (wire.ExportStats, error) {
	if v := t.Get(wire.ExportTrailerError); v != "" {
		status := http.StatusInternalServerError
		var er wire.ErrorResponse
		if json.Unmarshal([]byte(v), &er) == nil {
			if s, ok := wire.CodeStatus[er.Code]; ok {
				status = s
			}
		}
		return wire.ExportStats{}, remoteError(status, []byte(v))
	}
	var st wire.ExportStats
	for _, f := range []struct {
		name string
		dst  *int64
	}{
		{wire.ExportTrailerEntries, &st.Entries},
		{wire.ExportTrailerBytes, &st.Bytes},
		{wire.ExportTrailerSkipped, &st.Skipped},
		{wire.ExportTrailerChanged, &st.Changed},
	} {
		v := t.Get(f.name)
		if v == "" {
			return wire.ExportStats{}, fmt.Errorf("%w: export ended without its %s trailer; the archive may be incomplete", ErrBadResponse, f.name)
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return wire.ExportStats{}, fmt.Errorf("%w: export trailer %s: %q", ErrBadResponse, f.name, sanitizeText(v, 32))
		}
		*f.dst = n
	}
	if st.Changed > st.Entries {
		return wire.ExportStats{}, fmt.Errorf("%w: export reports %d changed files among %d entries", ErrBadResponse, st.Changed, st.Entries)
	}
	return st, nil
}

// Import extracts the archive that body yields into req.Path (see
// ImportRequest), all or nothing. body is streamed, not buffered (a zip is
// spooled to disk in the workspace, since it is read from its end); there
// is no default timeout, ctx bounds the whole transfer.
//
// A refused archive is a *RemoteError: CodeInvalid for an entry that is
// unsafe or malformed (the message names it and the rule), CodeLimit for
// too many entries, CodeTooLarge for too many bytes, CodeIsDirectory or
// CodeNotDirectory for a clash with what is in the target.
func (c *Client) Import(ctx context.Context, req wire.ImportRequest, body io.Reader) (wire.ImportResult, error) {
	q := url.Values{}
	if req.Path != "" {
		q.Set("path", req.Path)
	}
	if req.Format != "" {
		q.Set("format", req.Format)
	}
	if req.MaxEntries != 0 {
		q.Set("max_entries", strconv.FormatInt(req.MaxEntries, 10))
	}
	if req.MaxBytes != 0 {
		q.Set("max_bytes", strconv.FormatInt(req.MaxBytes, 10))
	}
	if req.Restore {
		q.Set("restore", "1")
	}
	if body == nil {
		body = http.NoBody
	}
	var res wire.ImportResult
	if err := c.fsCall(ctx, http.MethodPut, wire.PathArchiveImport, q, body, "application/octet-stream", transferTimeout, &res); err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.As(err, new(*RemoteError)) {
			return wire.ImportResult{}, cerr
		}
		return wire.ImportResult{}, err
	}
	return res, checkImportResult(res, req)
}

func checkImportResult(res wire.ImportResult, req wire.ImportRequest) error {
	if err := fsCheckPath(res.Path); err != nil {
		return err
	}
	maxBytes := int64(wire.ImportDefaultMaxBytes)
	if req.MaxBytes > 0 {
		maxBytes = min(req.MaxBytes, wire.ImportMaxBytes)
	}
	maxEntries := int64(wire.ImportDefaultMaxEntries)
	if req.MaxEntries > 0 {
		maxEntries = min(req.MaxEntries, wire.ImportMaxEntries)
	}
	switch {
	case res.Entries < 0 || res.Files < 0 || res.Dirs < 0 || res.Symlinks < 0 || res.Hardlinks < 0 || res.Replaced < 0 || res.Bytes < 0,
		res.Entries > maxEntries || res.Bytes > maxBytes,
		res.Files+res.Dirs+res.Symlinks > res.Entries,
		res.Hardlinks > res.Files,
		res.Replaced > res.Files+res.Symlinks:
		return fmt.Errorf("%w: import result of %d entries (%d files, %d dirs, %d symlinks, %d hard links, %d replaced), %d bytes",
			ErrBadResponse, res.Entries, res.Files, res.Dirs, res.Symlinks, res.Hardlinks, res.Replaced, res.Bytes)
	}
	return nil
}
