package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"syscall"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// File operations run in the agent, inside the container, as root: the
// container is the security boundary, so the agent does not confine paths
// further. It refuses to touch what berth itself needs in there (see
// fsProtect), resolves every path to directory handles and acts on them
// with *at calls so that the workspace cannot redirect an operation by
// renaming things under it (fs_dir.go), bounds every request, and gives
// files it creates to the image's user so that the bot's own commands can
// change them later.

const (
	// fsMaxJSONRequest caps the JSON body of every file request but edit.
	fsMaxJSONRequest = 1 << 20
	// fsMaxEditRequest leaves room for old and new text of a whole
	// MaxEditBytes file, JSON-escaped.
	fsMaxEditRequest = 4*wire.MaxEditBytes + fsMaxJSONRequest
	// fsResponseBudget bounds the estimated JSON size of listing-like
	// answers (list pages, find and grep results); MaxFSResponseBytes,
	// what the client accepts, leaves room for the worst-case escaping of
	// a ReadMaxBytes text.
	fsResponseBudget = 16 << 20
)

// routeFiles registers the file endpoints.
func (s *server) routeFiles(mux *http.ServeMux) {
	// berth's directories are known by their handles from the start, not
	// by whatever their paths name when a request comes.
	if s.fsProt == nil {
		s.fsProt = fsDefaultProtect()
	}
	route(mux, wire.PathFSStat, map[string]http.HandlerFunc{http.MethodGet: s.handleStat})
	route(mux, wire.PathFSFile, map[string]http.HandlerFunc{
		http.MethodGet: s.handleReadRange,
		http.MethodPut: s.handleWrite,
	})
	route(mux, wire.PathFSList, fsPost(s, fsMaxJSONRequest, s.fsList))
	route(mux, wire.PathFSRead, fsPost(s, fsMaxJSONRequest, s.fsReadText))
	route(mux, wire.PathFSEdit, fsPost(s, fsMaxEditRequest, s.fsEdit))
	route(mux, wire.PathFSMkdir, fsPost(s, fsMaxJSONRequest, s.fsMkdir))
	route(mux, wire.PathFSDelete, fsPost(s, fsMaxJSONRequest, s.fsDelete))
	route(mux, wire.PathFSMove, fsPost(s, fsMaxJSONRequest, s.fsMove))
	route(mux, wire.PathFSCopy, fsPost(s, fsMaxJSONRequest, s.fsCopy))
	route(mux, wire.PathFSFind, fsPost(s, fsMaxJSONRequest, s.fsFind))
	route(mux, wire.PathFSGrep, fsPost(s, fsMaxJSONRequest, s.fsGrep))
}

// fsPost adapts a typed operation to a POST endpoint with a JSON body of at
// most limit bytes.
func fsPost[Req, Resp any](s *server, limit int64, op func(context.Context, Req) (Resp, error)) map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{http.MethodPost: func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if err := fsDecodeRequest(w, r, limit, &req); err != nil {
			s.fsWriteError(w, r, err)
			return
		}
		resp, err := op(r.Context(), req)
		if err != nil {
			s.fsWriteError(w, r, err)
			return
		}
		fsWriteJSON(w, resp)
	}}
}

func fsDecodeRequest(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if r.ContentLength > limit {
		return fsErrorf(wire.CodeTooLarge, "request body of %d bytes is larger than %d", r.ContentLength, limit)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	// An unknown field is a host newer than this agent asking for
	// something the agent would silently not do (a dry run applied for
	// real, say), so it is an error.
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fsErrorf(wire.CodeTooLarge, "request body larger than %d bytes", limit)
		}
		return &fsError{status: http.StatusBadRequest, code: wire.CodeBadRequest, msg: "malformed request: " + err.Error()}
	}
	if dec.More() {
		return &fsError{status: http.StatusBadRequest, code: wire.CodeBadRequest, msg: "malformed request: data after the JSON object"}
	}
	return nil
}

// fsWriteJSON is writeJSON without HTML escaping: file contents and paths
// are full of <, > and &, which json.Marshal would blow up sixfold, and
// nothing here is embedded in HTML.
func fsWriteJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, "encoding response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// fsError is an error with the status and code the client should see.
type fsError struct {
	status int
	code   string
	msg    string
}

func (e *fsError) Error() string { return e.msg }

func fsErrorf(code, format string, args ...any) *fsError {
	status, ok := wire.CodeStatus[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	return &fsError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// fsClassify turns any error of a file operation into an fsError, so that
// a client can act on the code instead of parsing messages.
func fsClassify(err error) *fsError {
	var fe *fsError
	if errors.As(err, &fe) {
		return fe
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fsErrorf(wire.CodeCanceled, "%v", err)
	}
	msg := err.Error()
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		if errors.Is(err, fs.ErrNotExist) {
			return fsErrorf(wire.CodeNotFound, "%s", msg)
		}
		return fsErrorf(wire.CodeInternal, "%s", msg)
	}
	switch errno {
	case syscall.ENOENT:
		return fsErrorf(wire.CodeNotFound, "%s", msg)
	case syscall.EEXIST:
		return fsErrorf(wire.CodeExists, "%s", msg)
	case syscall.ENOTEMPTY:
		return fsErrorf(wire.CodeNotEmpty, "%s", msg)
	case syscall.EISDIR:
		return fsErrorf(wire.CodeIsDirectory, "%s", msg)
	case syscall.ENOTDIR:
		return fsErrorf(wire.CodeNotDirectory, "%s", msg)
	case syscall.EACCES, syscall.EPERM:
		return fsErrorf(wire.CodePermission, "%s", msg)
	case syscall.EROFS:
		return fsErrorf(wire.CodePermission, "%s (the file system is read-only)", msg)
	case syscall.ENOSPC, syscall.EDQUOT:
		return fsErrorf(wire.CodeNoSpace, "%s", msg)
	case syscall.EBUSY:
		return fsErrorf(wire.CodeBusy, "%s (is it a mount point?)", msg)
	case syscall.EFBIG:
		return fsErrorf(wire.CodeTooLarge, "%s", msg)
	case syscall.ENAMETOOLONG, syscall.ELOOP, syscall.EINVAL, syscall.EXDEV:
		return fsErrorf(wire.CodeInvalid, "%s", msg)
	}
	return fsErrorf(wire.CodeInternal, "%s", msg)
}

func (s *server) fsWriteError(w http.ResponseWriter, r *http.Request, err error) {
	fe := fsClassify(err)
	if fe.code == wire.CodeInternal {
		s.log.Warn("file operation failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, fe.status, fe.code, fe.msg)
}
