package wire

import (
	"net/http"
	"path"
	"strings"
	"time"
)

// File endpoints. Everything under /v1/fs/ acts inside the container with
// the agent's (root) view of its mounts; paths are container paths, and a
// relative path is taken relative to the workspace's data directory.
const (
	// PathFSStat answers GET ?path= with a FileInfo (lstat semantics).
	PathFSStat = "/v1/fs/stat"
	// PathFSFile streams raw bytes: GET ?path=&offset=&length= reads a
	// range, PUT ?path=&mode=&expected_revision=&make_parents= replaces the
	// whole file atomically with the request body.
	PathFSFile = "/v1/fs/file"
	// The rest take a JSON body by POST.
	PathFSList   = "/v1/fs/list"
	PathFSRead   = "/v1/fs/read"
	PathFSEdit   = "/v1/fs/edit"
	PathFSMkdir  = "/v1/fs/mkdir"
	PathFSDelete = "/v1/fs/delete"
	PathFSMove   = "/v1/fs/move"
	PathFSCopy   = "/v1/fs/copy"
	PathFSFind   = "/v1/fs/find"
	PathFSGrep   = "/v1/fs/grep"
)

// FileInfoHeader carries the FileInfo (JSON, ASCII only) of a raw GET on
// PathFSFile, because the body is the file itself.
const FileInfoHeader = "Berth-File-Info"

// Error codes of the file endpoints, in addition to those in protocol.go
// (CodeNotFound is shared). They tell a program what to do next: "conflict"
// means re-read and retry, "limit" means narrow the request, and so on.
const (
	CodeInvalid      = "invalid"
	CodeIsDirectory  = "is_directory"
	CodeNotDirectory = "not_directory"
	CodeExists       = "exists"
	CodeConflict     = "conflict"
	CodeTooLarge     = "too_large"
	CodePermission   = "permission"
	CodeLimit        = "limit"
	CodeNotEmpty     = "not_empty"
	CodeNoSpace      = "no_space"
	CodeBusy         = "busy"
	CodeCanceled     = "canceled"
	// CodeNoMatch and CodeAmbiguous reject an edit whose old text occurs
	// no times, or several times without replace_all.
	CodeNoMatch   = "no_match"
	CodeAmbiguous = "ambiguous"
)

// File types in FileInfo.Type.
const (
	FileTypeFile    = "file"
	FileTypeDir     = "dir"
	FileTypeSymlink = "symlink"
	FileTypeOther   = "other"
)

// Limits and defaults. The agent is asked on behalf of a model that cannot
// know how big a tree or file is, so every request has a default that gives
// a useful first answer and a maximum that keeps the agent and the host
// within bounded memory. Values above a maximum are lowered to it.
const (
	ListDefaultLimit      = 200
	ListMaxLimit          = 5000
	ListDefaultMaxEntries = 10000
	ListMaxEntries        = 100000

	ReadDefaultLimit    = 2000
	ReadMaxLimit        = 20000
	ReadDefaultMaxBytes = 256 << 10
	ReadMaxBytes        = 4 << 20

	// MaxRevisionBytes is the largest file that gets a revision (a sha256 of
	// its content): computing one means reading the whole file.
	MaxRevisionBytes = 256 << 20
	// MaxWriteBytes caps the body of one Write.
	MaxWriteBytes = 4 << 30
	// MaxEditBytes caps the file an Edit loads into memory, before and
	// after the edit.
	MaxEditBytes = 16 << 20
	// MaxEdits caps the edits in one EditRequest.
	MaxEdits = 1000
	// MaxDiffBytes caps EditResult.Diff; a longer diff is cut at a line
	// and ends with a note saying so.
	MaxDiffBytes = 1 << 20

	// MaxCopyEntries caps the entries one Copy (or a Move across file
	// systems) copies.
	MaxCopyEntries = 100000

	FindDefaultMaxResults = 1000
	FindMaxResults        = 10000
	FindDefaultMaxEntries = 100000
	FindMaxEntries        = 1000000

	GrepDefaultMaxFiles      = 10000
	GrepMaxFiles             = 100000
	GrepDefaultMaxMatches    = 500
	GrepMaxMatches           = 10000
	GrepDefaultMaxBytes      = 64 << 20
	GrepMaxBytes             = 1 << 30
	GrepDefaultMaxLineLength = 500
	GrepMaxLineLength        = 4000
	// GrepMaxEntries bounds the directory walk of one grep, which
	// MaxFiles does not when Include filters most files out.
	GrepMaxEntries = 1000000

	// MaxPathLength is Linux's PATH_MAX less the terminating NUL.
	MaxPathLength = 4095
)

// FileInfo describes one file system entry as lstat sees it: a symlink is
// reported as a symlink, never as what it points to.
type FileInfo struct {
	// Path is absolute and clean.
	Path string `json:"path"`
	Name string `json:"name"`
	// Type is one of FileTypeFile, FileTypeDir, FileTypeSymlink,
	// FileTypeOther.
	Type string `json:"type"`
	// Size is the length of a regular file; 0 for other types.
	Size int64 `json:"size"`
	// Mode is the permission bits in octal with four digits, including
	// setuid (4), setgid (2) and sticky (1) in the first: "0644", "1777".
	Mode    string    `json:"mode"`
	ModTime time.Time `json:"mod_time"`
	// LinkTarget is what a symlink contains, unresolved.
	LinkTarget string `json:"link_target,omitempty"`
}

// ListRequest lists a directory, optionally its whole tree.
type ListRequest struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
	// Offset and Limit page through the sorted entries (default limit
	// ListDefaultLimit, at most ListMaxLimit).
	Offset int `json:"offset,omitempty"`
	Limit  int `json:"limit,omitempty"`
	// MaxEntries caps a recursive walk (default ListDefaultMaxEntries, at
	// most ListMaxEntries); a tree with more entries fails with CodeLimit
	// rather than answering with an arbitrary subset. A plain listing
	// always allows ListMaxEntries.
	MaxEntries int `json:"max_entries,omitempty"`
}

// ListResult is one page of a listing.
type ListResult struct {
	Path string `json:"path"`
	// Entries are sorted by Path (byte order), and their paths are
	// absolute. An entry that vanished between the walk and its lstat is
	// left out of the page.
	Entries []FileInfo `json:"entries"`
	Total   int        `json:"total"`
	// NextOffset is where the next page starts; 0 when there is none.
	NextOffset int `json:"next_offset"`
}

// ReadTextRequest reads a window of lines of a text file.
type ReadTextRequest struct {
	Path string `json:"path"`
	// Offset is the first line (0-based); Limit the number of lines
	// (default ReadDefaultLimit, at most ReadMaxLimit).
	Offset int `json:"offset,omitempty"`
	Limit  int `json:"limit,omitempty"`
	// Tail > 0 asks for the last Tail lines instead (at most
	// ReadMaxLimit).
	Tail int `json:"tail,omitempty"`
	// MaxBytes caps Text (default ReadDefaultMaxBytes, at most
	// ReadMaxBytes).
	MaxBytes int `json:"max_bytes,omitempty"`
}

// ReadTextResult is a window of a text file. Text holds whole lines with
// their line terminators, so consecutive windows concatenate to the file,
// except that a single line longer than MaxBytes is cut (Truncated is then
// set and the rest of that line is only available through ReadRange).
type ReadTextResult struct {
	Path string `json:"path"`
	Text string `json:"text"`
	// StartLine and EndLine are 0-based, EndLine exclusive. They are -1
	// for a Tail read of a file too large to count (TotalLines -1).
	StartLine int `json:"start_line"`
	EndLine   int `json:"end_line"`
	// TotalLines is -1 when the file was not read to the end (larger than
	// MaxRevisionBytes) or is binary.
	TotalLines int `json:"total_lines"`
	// Truncated says there are lines after EndLine, or MaxBytes cut the
	// window short.
	Truncated bool `json:"truncated"`
	// NextOffset is the Offset of the next window; 0 when there is none.
	NextOffset int   `json:"next_offset"`
	Size       int64 `json:"size"`
	// Revision is the hex sha256 of the whole file, for files up to
	// MaxRevisionBytes; empty for larger ones.
	Revision string `json:"revision,omitempty"`
	// Binary is set when the first 8 KiB contain a NUL byte or invalid
	// UTF-8; Text is then empty and the caller should use ReadRange.
	Binary   bool   `json:"binary"`
	MIMEType string `json:"mime_type"`
}

// WriteRequest replaces a whole file. It travels in the query of a PUT on
// PathFSFile; the request body is the new content.
type WriteRequest struct {
	Path string `json:"path"`
	// Mode is octal permissions ("0644", "755"). Empty keeps the mode of
	// an existing file and gives a new one 0644.
	Mode string `json:"mode,omitempty"`
	// ExpectedRevision, if set, makes the write fail with CodeConflict
	// unless the file exists and its current revision is this one.
	ExpectedRevision string `json:"expected_revision,omitempty"`
	// MakeParents creates missing parent directories.
	MakeParents bool `json:"make_parents,omitempty"`
}

// WriteResult describes the file after a Write or Edit.
type WriteResult struct {
	// Path is the file written: where a symlink pointed, if the request
	// named a symlink.
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	Revision string `json:"revision,omitempty"`
	Created  bool   `json:"created"`
}

// Edit replaces Old by New. Old must occur exactly once unless ReplaceAll.
type Edit struct {
	Old        string `json:"old"`
	New        string `json:"new"`
	ReplaceAll bool   `json:"replace_all,omitempty"`
}

// EditRequest applies Edits in order, each to the result of the ones
// before, and writes the result only if every edit applies.
type EditRequest struct {
	Path             string `json:"path"`
	Edits            []Edit `json:"edits"`
	DryRun           bool   `json:"dry_run,omitempty"`
	ExpectedRevision string `json:"expected_revision,omitempty"`
}

// EditResult reports an edit.
type EditResult struct {
	Path string `json:"path"`
	// Diff is a unified diff (3 lines of context) from the old to the new
	// content; empty when they are equal.
	Diff         string `json:"diff"`
	Replacements int    `json:"replacements"`
	// Revision is the revision of the file after the edit (for a dry run:
	// of the file as it is).
	Revision string `json:"revision,omitempty"`
	// Applied says the edits are in effect in the file: false for a dry
	// run. An edit that changes nothing is applied without a write.
	Applied bool `json:"applied"`
}

// FindRequest finds entries by base name.
type FindRequest struct {
	Root string `json:"root"`
	// Pattern is a path.Match glob on the base name; empty matches all.
	Pattern string `json:"pattern,omitempty"`
	// Type is "", "file", "dir" or "symlink".
	Type       string `json:"type,omitempty"`
	MaxResults int    `json:"max_results,omitempty"`
	MaxEntries int    `json:"max_entries,omitempty"`
}

// FindResult lists matches in walk order (depth first, names sorted).
type FindResult struct {
	Matches   []FileInfo `json:"matches"`
	Truncated bool       `json:"truncated"`
	// Reason names what stopped a truncated search: "max_results",
	// "max_entries" or "response_size".
	Reason  string `json:"reason,omitempty"`
	Scanned int    `json:"scanned"`
}

// GrepRequest searches file contents line by line.
type GrepRequest struct {
	// Root is a file or a directory searched recursively.
	Root    string `json:"root"`
	Pattern string `json:"pattern"`
	// Regex makes Pattern an RE2 regular expression; otherwise it is
	// literal text.
	Regex      bool `json:"regex,omitempty"`
	IgnoreCase bool `json:"ignore_case,omitempty"`
	// Include is a path.Match glob on base names of files found by the
	// walk (a Root that is a file is always searched).
	Include    string `json:"include,omitempty"`
	MaxFiles   int    `json:"max_files,omitempty"`
	MaxMatches int    `json:"max_matches,omitempty"`
	// MaxBytes caps the bytes read from all files together.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// MaxLineLength caps GrepMatch.Text in bytes; a longer line is cut to
	// a window around the match, marked with "…".
	MaxLineLength int `json:"max_line_length,omitempty"`
}

// GrepMatch is one matching line.
type GrepMatch struct {
	Path string `json:"path"`
	// Line is 1-based.
	Line int    `json:"line"`
	Text string `json:"text"`
}

// GrepResult lists matches in walk order.
type GrepResult struct {
	Matches      []GrepMatch `json:"matches"`
	FilesScanned int         `json:"files_scanned"`
	BytesScanned int64       `json:"bytes_scanned"`
	Truncated    bool        `json:"truncated"`
	// Reason names the cap that stopped a truncated search: "max_matches",
	// "max_files", "max_bytes", "max_entries" or "response_size".
	Reason string `json:"reason,omitempty"`
}

// Requests and answers of the endpoints whose client methods take plain
// arguments.
type MkdirRequest struct {
	Path    string `json:"path"`
	Parents bool   `json:"parents,omitempty"`
}

type DeleteRequest struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
}

type DeleteResult struct {
	Path string `json:"path"`
}

type TransferRequest struct {
	Src       string `json:"src"`
	Dst       string `json:"dst"`
	Overwrite bool   `json:"overwrite,omitempty"`
}

const (
	MaxFSResponseBytes = 32 << 20
)

var CodeStatus = map[string]int{
	CodeNotFound:     http.StatusNotFound,
	CodeInvalid:      http.StatusBadRequest,
	CodeIsDirectory:  http.StatusBadRequest,
	CodeNotDirectory: http.StatusBadRequest,
	CodeExists:       http.StatusConflict,
	CodeConflict:     http.StatusConflict,
	CodeNotEmpty:     http.StatusConflict,
	CodeBusy:         http.StatusConflict,
	CodeTooLarge:     http.StatusRequestEntityTooLarge,
	CodePermission:   http.StatusForbidden,
	CodeLimit:        http.StatusUnprocessableEntity,
	CodeNoSpace:      http.StatusInsufficientStorage,
	CodeCanceled:     http.StatusServiceUnavailable,
	CodeNoMatch:      http.StatusUnprocessableEntity,
	CodeAmbiguous:    http.StatusUnprocessableEntity,
	CodeInternal:     http.StatusInternalServerError,
}

// PathWithin reports whether p is dir or below it; both are clean and
// absolute. It compares strings, so it decides nothing about files (an
// archive's names and symlink targets, before anything exists).
func PathWithin(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// ValidPath reports whether p is what the agent resolves a path to:
// absolute, clean, no NUL, at most MaxPathLength bytes. The client refuses
// any other path in an answer.
func ValidPath(p string) bool {
	return p != "" && len(p) <= MaxPathLength && path.IsAbs(p) && path.Clean(p) == p && strings.IndexByte(p, 0) < 0
}
