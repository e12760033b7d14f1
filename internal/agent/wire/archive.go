package wire

import "bytes"

// Archive endpoints move whole trees into and out of a running workspace as
// one stream, so that the host never holds a tree in memory and never
// touches the workspace's files itself (the agent sees the container's
// mounts; the host would see only the rootfs snapshot).
const (
	// PathArchiveExport answers GET ?path= with a tar.gz of path (default:
	// the data directory), streamed; see ExportStats for the trailers
	// that end it.
	PathArchiveExport = "/v1/archive/export"
	// PathArchiveImport takes PUT ?path=&format=&max_entries=&max_bytes=
	// with an archive as the body, extracts it all or nothing into path
	// (default: the data directory), and answers with an ImportResult.
	PathArchiveImport = "/v1/archive/import"
)

// HTTP trailers of an export. They come after the body because only the
// finished walk knows the counts; an export without them was cut short.
const (
	ExportTrailerEntries = "Berth-Export-Entries"
	ExportTrailerBytes   = "Berth-Export-Bytes"
	ExportTrailerSkipped = "Berth-Export-Skipped"
	ExportTrailerChanged = "Berth-Export-Changed"
	// ExportTrailerError carries an ErrorResponse (JSON, ASCII only) when
	// the export failed after the body had started; the gzip stream is
	// then left unterminated, so that a consumer that ignores trailers
	// sees a broken archive rather than a silently incomplete one.
	ExportTrailerError = "Berth-Export-Error"
)

// Archive formats of an import.
const (
	// ArchiveFormatAuto tells gzip, zip and plain tar apart by their first
	// bytes. It is the default.
	ArchiveFormatAuto  = "auto"
	ArchiveFormatTar   = "tar"
	ArchiveFormatTarGz = "tar.gz"
	ArchiveFormatZip   = "zip"
)

// SniffArchiveFormat is the format ArchiveFormatAuto reads an archive as,
// from its first bytes: the agent extracts by it, and the host asks what an
// import replaces by it, so both read the same archive the same way.
func SniffArchiveFormat(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return ArchiveFormatTarGz
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")), bytes.HasPrefix(head, []byte("PK\x07\x08")):
		return ArchiveFormatZip
	}
	return ArchiveFormatTar
}

// Archive limits. An import is bounded in entries and in expanded bytes,
// both with a default that fits an ordinary project and a hard cap that a
// caller may raise the limit to (values above it are lowered to it); an
// export is bounded in entries only, because its size is what the caller
// reads.
const (
	// ExportMaxEntries bounds the walk of one export, and with it the
	// directory listings held in memory at once.
	ExportMaxEntries = 1_000_000

	ImportDefaultMaxEntries = 100_000
	ImportMaxEntries        = 1_000_000
	// ImportDefaultMaxBytes and ImportMaxBytes bound the expanded size of
	// the files of an import (a sparse file counts with its full length),
	// and for a zip also the archive itself, which has to be stored
	// before it can be read.
	ImportDefaultMaxBytes = 10 << 30
	ImportMaxBytes        = 1 << 40
)

// ExportStats sums up an export. The client fills it from the trailers,
// so it is only valid once the body has been read to io.EOF.
type ExportStats struct {
	// Entries is the number of entries in the archive.
	Entries int64 `json:"entries"`
	// Bytes is the uncompressed length of the regular files' content.
	Bytes int64 `json:"bytes"`
	// Skipped counts entries that an archive cannot restore safely and
	// that were left out: sockets, devices and named pipes, and names tar
	// cannot encode.
	Skipped int64 `json:"skipped"`
	// Changed counts files that changed while they were being read (the
	// workspace keeps running). Their entry has the size the file had when
	// its header was written: content that grew is cut, content that
	// shrank is padded with zeros. Such a file may mix old and new
	// content.
	Changed int64 `json:"changed"`
}

// ImportRequest travels in the query of a PUT on PathArchiveImport; the
// request body is the archive.
type ImportRequest struct {
	// Path is the directory to extract into, created (with its parents)
	// if missing; empty means the data directory.
	Path string `json:"path,omitempty"`
	// Format is one of the ArchiveFormat constants; empty means auto.
	Format string `json:"format,omitempty"`
	// MaxEntries caps the entries of the archive (default
	// ImportDefaultMaxEntries, at most ImportMaxEntries).
	MaxEntries int64 `json:"max_entries,omitempty"`
	// MaxBytes caps the expanded bytes of its files, and the size of a zip
	// archive (default ImportDefaultMaxBytes, at most ImportMaxBytes).
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// Restore marks berth's own backup of this workspace's data (what
	// workspace_delete preserve_data kept): its symlinks are recreated as
	// they were, wherever they point, as every Python venv needs. The
	// workspace could make those links itself, so this grants nothing;
	// extraction still never follows a symlink. Imports from elsewhere
	// leave it false, and a symlink that leaves Path is refused.
	Restore bool `json:"restore,omitempty"`
}

// ImportResult describes a completed import. An import that fails changes
// nothing in Path.
type ImportResult struct {
	// Path is the directory the archive was extracted into, absolute with
	// its symlinks resolved.
	Path string `json:"path"`
	// Entries is the number of entries read from the archive, what
	// MaxEntries limits; it includes entries that create nothing (a pax
	// global header, the entry of the target directory itself).
	Entries int64 `json:"entries"`
	// Bytes is the expanded length of the files extracted.
	Bytes int64 `json:"bytes"`
	// Files, Dirs and Symlinks count the archive's entries by type; Files
	// includes hard links, which Hardlinks counts again.
	Files     int64 `json:"files"`
	Dirs      int64 `json:"dirs"`
	Symlinks  int64 `json:"symlinks"`
	Hardlinks int64 `json:"hardlinks"`
	// Replaced counts files and symlinks that were already in Path and
	// that the archive replaced.
	Replaced int64 `json:"replaced"`
}
