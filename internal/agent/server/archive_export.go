package server

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/internal/agent/wire"
)

const (
	// archiveGzipLevel: on a Go source tree (121 MB of small text files)
	// BestSpeed ran at 51-84 MB/s to 29.4% of the input and the default
	// level at 34 MB/s to 24.4%; on binaries, 100 MB/s to 41.5% against
	// 34 MB/s to 37.3%. The export runs on the workspace's CPU share while
	// the bot's work goes on, so a third of the CPU time is worth 10-20%
	// more bytes on a local socket.
	archiveGzipLevel = gzip.BestSpeed
	// archiveWriteBuffer gathers the gzip output into large chunks, so
	// the response is sent in few writes instead of one per gzip block.
	archiveWriteBuffer = 64 << 10
	// archiveCopyBuffer is the buffer file content moves through.
	archiveCopyBuffer = 256 << 10
	// archiveMaxHardlinks bounds the inodes remembered to write further
	// names of a file as hard links; beyond it they are archived as
	// separate copies, which is correct, only larger.
	archiveMaxHardlinks = 100_000
	// archiveMaxTrailerMessage bounds the error message of a trailer.
	archiveMaxTrailerMessage = 1024
)

// routeArchives registers the archive endpoints.
func (s *server) routeArchives(mux *http.ServeMux) {
	route(mux, wire.PathArchiveExport, map[string]http.HandlerFunc{http.MethodGet: s.handleExport})
	route(mux, wire.PathArchiveImport, map[string]http.HandlerFunc{http.MethodPut: s.handleImport})
}

// archiveCheckQuery refuses parameters an endpoint does not know, like an
// unknown JSON field: a newer host asking for something this agent would
// silently not do.
func archiveCheckQuery(q map[string][]string, known ...string) error {
	for k := range q {
		ok := false
		for _, n := range known {
			ok = ok || k == n
		}
		if !ok {
			return fsErrorf(wire.CodeInvalid, "unknown parameter %q", fsShort(k))
		}
	}
	return nil
}

// archiveTarget resolves the path parameter of an archive request, with
// the data directory as the default.
func (s *server) archiveTarget(p string) (string, error) {
	if p == "" {
		return fsDataDir(s.opts.DataDir), nil
	}
	return s.fsPath(p)
}

func (s *server) handleExport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := archiveCheckQuery(q, "path"); err != nil {
		s.fsWriteError(w, r, err)
		return
	}
	p, err := s.archiveTarget(q.Get("path"))
	if err != nil {
		s.fsWriteError(w, r, err)
		return
	}
	fi, err := os.Lstat(p)
	if err != nil {
		s.fsWriteError(w, r, fsNotFound(p, err))
		return
	}
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		// Never followed, like every symlink of an export: the caller
		// should say which tree it means.
		target, _ := os.Readlink(p)
		s.fsWriteError(w, r, fsErrorf(wire.CodeInvalid, "%s is a symlink to %q; export the directory it points to instead", p, fsShort(target)))
		return
	case !m.IsDir() && !m.IsRegular():
		s.fsWriteError(w, r, fsErrorf(wire.CodeInvalid, "%s is %s; only a directory or a regular file can be exported", p, fsDescribeType(m)))
		return
	}

	h := w.Header()
	h.Set("Content-Type", "application/gzip")
	h.Set("Trailer", strings.Join([]string{wire.ExportTrailerEntries, wire.ExportTrailerBytes, wire.ExportTrailerSkipped, wire.ExportTrailerChanged, wire.ExportTrailerError}, ", "))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}

	bw := bufio.NewWriterSize(w, archiveWriteBuffer)
	zw, err := gzip.NewWriterLevel(bw, archiveGzipLevel)
	if err != nil {
		// Only an invalid level fails, which is a constant.
		panic(err)
	}
	sink := &archiveSink{w: zw}
	e := &archiveExporter{ctx: r.Context(), log: s.log, guard: s.fsGuard(), sink: sink, tw: tar.NewWriter(sink), buf: make([]byte, archiveCopyBuffer)}
	err = e.export(p, fi)
	if err == nil {
		err = e.tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	// On failure the gzip stream stays unterminated (see
	// ExportTrailerError); what was compressed so far still goes out.
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	st := e.stats
	h.Set(wire.ExportTrailerEntries, strconv.FormatInt(st.Entries, 10))
	h.Set(wire.ExportTrailerBytes, strconv.FormatInt(st.Bytes, 10))
	h.Set(wire.ExportTrailerSkipped, strconv.FormatInt(st.Skipped, 10))
	h.Set(wire.ExportTrailerChanged, strconv.FormatInt(st.Changed, 10))
	if err != nil {
		fe := fsClassify(err)
		if r.Context().Err() == nil {
			s.log.Warn("export failed", "path", p, "err", err, "entries", st.Entries)
		}
		v, jerr := fsASCIIJSON(wire.ErrorResponse{Error: archiveShortMessage(fe.msg), Code: fe.code})
		if jerr != nil {
			v = `{"error":"export failed","code":"internal"}`
		}
		h.Set(wire.ExportTrailerError, v)
		return
	}
	s.log.Info("export done", "path", p, "entries", st.Entries, "bytes", st.Bytes, "skipped", st.Skipped, "changed", st.Changed)
}

func archiveShortMessage(s string) string {
	if len(s) > archiveMaxTrailerMessage {
		return string(fsCutUTF8([]byte(s), archiveMaxTrailerMessage)) + "…"
	}
	return s
}

// archiveSink remembers the first failed write, to tell a broken stream
// apart from a header tar refuses to encode.
type archiveSink struct {
	w   io.Writer
	err error
}

func (s *archiveSink) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	if err != nil {
		s.err = err
	}
	return n, err
}

// archiveInode identifies a file with several names.
type archiveInode struct{ dev, ino uint64 }

type archiveExporter struct {
	ctx   context.Context
	log   *slog.Logger
	guard *fsProtect
	sink  *archiveSink
	tw    *tar.Writer
	buf   []byte
	stats wire.ExportStats
	links map[archiveInode]string
}

// export writes root, which is a directory or a regular file. A directory
// is archived by its content, named relative to it; a file as one entry
// with its base name.
func (e *archiveExporter) export(root string, fi fs.FileInfo) error {
	if !fi.IsDir() {
		return e.entry(root, path.Base(root), fi)
	}
	w := &fsWalker{ctx: e.ctx, guard: e.guard, skip: fsSkipDirs(root), max: wire.ExportMaxEntries}
	prefix := len(root) + 1
	if root == "/" {
		prefix = 1
	}
	err := w.walk(root, func(p string, _ fs.DirEntry) error {
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			// Deleted since the directory was read: as if it had not been
			// there yet.
			return fs.SkipDir
		}
		if err != nil {
			return err
		}
		return e.entry(p, p[prefix:], fi)
	})
	if errors.Is(err, errFSWalkLimit) {
		return fsErrorf(wire.CodeLimit, "%s has more than %d entries; export it in smaller parts", root, wire.ExportMaxEntries)
	}
	return err
}

// entry writes one entry. Files that vanish or change type between the
// directory listing and their turn are left out; the workspace keeps
// running and this is the state they were found in.
func (e *archiveExporter) entry(p, name string, fi fs.FileInfo) error {
	hdr := archiveHeader(name, fi)
	m := fi.Mode()
	switch {
	case m.IsRegular():
		return e.file(p, hdr)
	case m.IsDir():
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EINVAL) {
				return nil
			}
			return err
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
	default:
		// Sockets, devices and named pipes: a restore could not make
		// them mean what they meant, and creating device nodes from an
		// archive is a hazard.
		e.stats.Skipped++
		return nil
	}
	return e.writeHeader(p, hdr)
}

// archiveHeader describes fi with the exact mode bits, owner and
// modification time. PAX keeps nanosecond times and long names.
func archiveHeader(name string, fi fs.FileInfo) *tar.Header {
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(fsModeBits(fi.Mode())),
		ModTime: fi.ModTime(),
		Format:  tar.FormatPAX,
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
	}
	return hdr
}

// writeHeader writes hdr, or skips the entry if tar cannot encode it;
// only a failed write ends the export.
func (e *archiveExporter) writeHeader(p string, hdr *tar.Header) error {
	if err := e.ctx.Err(); err != nil {
		return err
	}
	if err := e.tw.WriteHeader(hdr); err != nil {
		if e.sink.err != nil {
			return e.sink.err
		}
		// Nothing reached the stream: tar cannot encode this header
		// (a name with a NUL byte, say), which costs one entry, not the
		// export.
		e.log.Warn("export: entry left out", "path", p, "err", err)
		e.stats.Skipped++
		return nil
	}
	e.stats.Entries++
	return nil
}

// file writes a regular file. It is opened without following symlinks and
// described by the open file, so what is archived is one file even if the
// name is replaced meanwhile.
func (e *archiveExporter) file(p string, hdr *tar.Header) error {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ELOOP) {
			return nil
		}
		return err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	*hdr = *archiveHeader(hdr.Name, fi)
	var key archiveInode
	st, ok := fi.Sys().(*syscall.Stat_t)
	multi := ok && st.Nlink > 1
	if multi {
		key = archiveInode{dev: st.Dev, ino: st.Ino}
		if first, ok := e.links[key]; ok {
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
			return e.writeHeader(p, hdr)
		}
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Size = fi.Size()
	before := e.stats.Entries
	if err := e.writeHeader(p, hdr); err != nil || e.stats.Entries == before {
		return err
	}
	if multi && len(e.links) < archiveMaxHardlinks {
		if e.links == nil {
			e.links = make(map[archiveInode]string)
		}
		e.links[key] = hdr.Name
	}
	changed, err := archiveCopyFile(e.tw, f, hdr.Size, e.buf)
	if err != nil {
		return fmt.Errorf("archiving %s: %w", p, err)
	}
	e.stats.Bytes += hdr.Size
	if !changed {
		if now, err := f.Stat(); err == nil && (now.Size() != fi.Size() || !now.ModTime().Equal(fi.ModTime())) {
			changed = true
		}
	}
	if changed {
		e.stats.Changed++
		e.log.Info("export: file changed while being archived", "path", p, "size", hdr.Size)
	}
	return nil
}

// archiveReadError marks a failure to read the source file, as opposed to
// a failure to write the archive.
type archiveReadError struct{ err error }

func (e *archiveReadError) Error() string { return "reading: " + e.err.Error() }
func (e *archiveReadError) Unwrap() error { return e.err }

type archiveSource struct{ r io.Reader }

func (s archiveSource) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &archiveReadError{err}
	}
	return n, err
}

// archiveCopyFile writes exactly size bytes of r to w, whatever r yields:
// a tar entry must have the length its header announced, and the file may
// be growing or shrinking while it is read. A short file is padded with
// zeros. changed reports that r did not end at size.
func archiveCopyFile(w io.Writer, r io.Reader, size int64, buf []byte) (changed bool, err error) {
	// struct{io.Writer} hides tar.Writer's ReadFrom, so buf is used.
	n, err := io.CopyBuffer(struct{ io.Writer }{w}, io.LimitReader(archiveSource{r}, size), buf)
	if err != nil {
		return false, err
	}
	if n < size {
		clear(buf)
		for n < size {
			k, err := w.Write(buf[:min(int64(len(buf)), size-n)])
			n += int64(k)
			if err != nil {
				return true, err
			}
		}
		return true, nil
	}
	// One byte more means the file grew past its header.
	var one [1]byte
	k, _ := r.Read(one[:])
	return k > 0, nil
}
