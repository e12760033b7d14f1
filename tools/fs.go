package tools

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Caps of fs_read for files that are not text.
const (
	defaultBlobBytes = 1 << 20
	maxBlobBytes     = 8 << 20
)

// PathInput names a path in the workspace.
// maxWriteContent caps what one fs_write carries inside an MCP message;
// bigger files stream through the HTTP upload endpoint.
const maxWriteContent = 16 << 20

type PathInput struct {
	BotID string `json:"bot_id"`
	Path  string `json:"path" jsonschema:"description=container path; relative paths are under /data"`
}

func (p PathInput) bot() string { return p.BotID }

// FsListInput lists a directory.
type FsListInput struct {
	BotID      string `json:"bot_id"`
	Path       string `json:"path,omitempty" jsonschema:"description=directory (default /data)"`
	Recursive  bool   `json:"recursive,omitempty"`
	Offset     int    `json:"offset,omitempty" jsonschema:"minimum=0,description=next_offset of the previous page"`
	Limit      int    `json:"limit,omitempty" jsonschema:"minimum=0,maximum=5000,description=entries per page (default 200)"`
	MaxEntries int    `json:"max_entries,omitempty" jsonschema:"minimum=0,maximum=100000,description=recursive walks fail past this many entries (default 10000)"`
}

func (p FsListInput) bot() string { return p.BotID }

// FsReadInput reads a file.
type FsReadInput struct {
	BotID    string `json:"bot_id"`
	Path     string `json:"path" jsonschema:"description=container path; relative paths are under /data"`
	Offset   int    `json:"offset,omitempty" jsonschema:"minimum=0,description=first line to return (0-based); next_offset of the previous read"`
	Limit    int    `json:"limit,omitempty" jsonschema:"minimum=0,maximum=20000,description=lines to return (default 2000); also the line count of head"`
	Tail     int    `json:"tail,omitempty" jsonschema:"minimum=0,maximum=20000,description=return the last N lines instead"`
	MaxBytes int    `json:"max_bytes,omitempty" jsonschema:"minimum=0,maximum=8388608,description=cap on returned bytes (text default 256 KiB\\, binary default 1 MiB)"`
}

func (p FsReadInput) bot() string { return p.BotID }

// FsReadOutput is a window of a text file, or a binary file as a blob.
type FsReadOutput struct {
	wire.ReadTextResult
	BlobBytes int    `json:"blob_bytes,omitempty" jsonschema:"description=for binary files: bytes returned as an embedded blob or image"`
	blob      []byte `json:"-"`
}

func (o FsReadOutput) content() []mcp.Content {
	if o.blob == nil {
		return nil
	}
	data := base64.StdEncoding.EncodeToString(o.blob)
	if strings.HasPrefix(o.MIMEType, "image/") {
		return []mcp.Content{mcp.NewImageContent(data, o.MIMEType)}
	}
	return []mcp.Content{mcp.NewEmbeddedResource(mcp.BlobResourceContents{URI: "file://" + o.Path, MIMEType: o.MIMEType, Blob: data})}
}

// FsWriteInput writes a whole file.
type FsWriteInput struct {
	BotID            string `json:"bot_id"`
	Path             string `json:"path" jsonschema:"description=container path; relative paths are under /data; parents are created"`
	Content          string `json:"content,omitempty" jsonschema:"description=the file's new text"`
	ContentBase64    string `json:"content_base64,omitempty" jsonschema:"description=the file's new bytes\\, base64 (instead of content)"`
	Mode             string `json:"mode,omitempty" jsonschema:"description=octal permissions for a new file (default 0644)"`
	ExpectedRevision string `json:"expected_revision,omitempty" jsonschema:"description=sha256 the file must still have (from fs_read)\\, else the write fails with a conflict"`
}

func (p FsWriteInput) bot() string { return p.BotID }

// FsEditInput edits a file by exact replacements.
type FsEditInput struct {
	BotID            string      `json:"bot_id"`
	Path             string      `json:"path"`
	Edits            []wire.Edit `json:"edits" jsonschema:"description=exact search/replace pairs applied in order; all or nothing"`
	DryRun           bool        `json:"dry_run,omitempty" jsonschema:"description=return the unified diff without writing"`
	ExpectedRevision string      `json:"expected_revision,omitempty"`
}

func (p FsEditInput) bot() string { return p.BotID }

// FsMkdirInput creates a directory.
type FsMkdirInput struct {
	BotID   string `json:"bot_id"`
	Path    string `json:"path"`
	Parents *bool  `json:"parents,omitempty" jsonschema:"description=create missing parents and accept an existing directory (default true)"`
}

func (p FsMkdirInput) bot() string { return p.BotID }

// FsDeleteInput deletes a path.
type FsDeleteInput struct {
	BotID     string `json:"bot_id"`
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty" jsonschema:"description=needed to delete a non-empty directory"`
}

func (p FsDeleteInput) bot() string { return p.BotID }

// FsMoveInput moves or copies a path.
type FsMoveInput struct {
	BotID       string `json:"bot_id"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Overwrite   bool   `json:"overwrite,omitempty"`
}

func (p FsMoveInput) bot() string { return p.BotID }

// FsFindInput finds paths by name.
type FsFindInput struct {
	BotID      string `json:"bot_id"`
	Path       string `json:"path,omitempty" jsonschema:"description=where to search (default /data)"`
	Pattern    string `json:"pattern" jsonschema:"description=glob on the file name\\, e.g. *.go"`
	Type       string `json:"type,omitempty" jsonschema:"enum=file,enum=dir"`
	MaxResults int    `json:"max_results,omitempty" jsonschema:"minimum=0,maximum=10000,description=default 1000"`
}

func (p FsFindInput) bot() string { return p.BotID }

// FsGrepInput searches file contents.
type FsGrepInput struct {
	BotID      string `json:"bot_id"`
	Path       string `json:"path,omitempty" jsonschema:"description=file or directory to search (default /data)"`
	Pattern    string `json:"pattern"`
	Regex      bool   `json:"regex,omitempty" jsonschema:"description=pattern is a regular expression (default: literal text)"`
	IgnoreCase bool   `json:"ignore_case,omitempty"`
	Include    string `json:"include,omitempty" jsonschema:"description=only files whose name matches this glob"`
	MaxMatches int    `json:"max_matches,omitempty" jsonschema:"minimum=0,maximum=10000,description=default 500"`
	MaxFiles   int    `json:"max_files,omitempty" jsonschema:"minimum=0,description=default 10000"`
	MaxBytes   int64  `json:"max_bytes,omitempty" jsonschema:"minimum=0,description=total bytes read (default 64 MiB)"`
}

func (p FsGrepInput) bot() string { return p.BotID }

func orData(path string) string {
	if path == "" {
		return wire.DefaultDataDir
	}
	return path
}

func fsTools(h handlers) []server.ServerTool {
	ro := hints{readOnly: true, idempotent: true}
	return []server.ServerTool{
		define("fs_stat", "Stat path", "Type, size, mode, modification time and link target of a path (symlinks are not followed).",
			ro, auth.ScopeRead, h.fsStat),
		define("fs_list", "List directory", "List a directory, sorted and paged, optionally recursive (recursion fails clearly past max_entries).",
			ro, auth.ScopeRead, h.fsList),
		define("fs_read", "Read file",
			"Read a text file by line window (offset/limit, or tail), with its revision for fs_write/fs_edit. Binary files come back as an embedded blob, images as image content, both capped.",
			ro, auth.ScopeRead, h.fsRead),
		define("fs_write", "Write file",
			"Write a whole file atomically (readers see the old or the new content, never a mix), creating parent directories. With expected_revision it fails with a conflict if the file changed since it was read.",
			hints{destructive: true, idempotent: true}, auth.ScopeWrite, h.fsWrite),
		define("fs_edit", "Edit file",
			"Apply exact search/replace edits to a file, all or nothing; dry_run returns the unified diff without writing.",
			hints{destructive: true}, auth.ScopeWrite, h.fsEdit),
		define("fs_mkdir", "Make directory", "Create a directory (with parents by default).",
			hints{idempotent: true}, auth.ScopeWrite, h.fsMkdir),
		define("fs_delete", "Delete path", "Delete a file, or a directory with recursive=true. Refuses /.",
			hints{destructive: true, idempotent: true}, auth.ScopeWrite, h.fsDelete),
		define("fs_move", "Move path", "Move or rename a file or directory.",
			hints{destructive: true}, auth.ScopeWrite, h.fsMove),
		define("fs_copy", "Copy path", "Copy a file or directory tree (symlinks are copied as links).",
			hints{idempotent: true}, auth.ScopeWrite, h.fsCopy),
		define("fs_find", "Find files", "Find files and directories whose name matches a glob, capped.",
			ro, auth.ScopeRead, h.fsFind),
		define("fs_grep", "Search file contents", "Search file contents for text or a regular expression, with caps on files, matches and bytes read.",
			ro, auth.ScopeRead, h.fsGrep),
	}
}

func (h handlers) fsStat(ctx context.Context, _ *call, in PathInput) (wire.FileInfo, string, error) {
	fi, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.FileInfo, error) { return a.Stat(ctx, in.Path) })
	if err != nil {
		return fi, "", err
	}
	return fi, fmt.Sprintf("%s: %s, %d bytes, mode %s", fi.Path, fi.Type, fi.Size, fi.Mode), nil
}

func (h handlers) fsList(ctx context.Context, _ *call, in FsListInput) (wire.ListResult, string, error) {
	res, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.ListResult, error) {
		return a.List(ctx, wire.ListRequest{Path: orData(in.Path), Recursive: in.Recursive, Offset: in.Offset, Limit: in.Limit, MaxEntries: in.MaxEntries})
	})
	if err != nil {
		return res, "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: entries %d-%d of %d", res.Path, in.Offset, in.Offset+len(res.Entries), res.Total)
	if res.NextOffset > 0 {
		fmt.Fprintf(&b, "; more follow: pass offset %d", res.NextOffset)
	}
	for _, e := range res.Entries {
		fmt.Fprintf(&b, "\n%s %10d %s", e.Mode, e.Size, e.Path)
		if e.Type == "dir" {
			b.WriteString("/")
		}
	}
	return res, b.String(), nil
}

func (h handlers) fsRead(ctx context.Context, _ *call, in FsReadInput) (FsReadOutput, string, error) {
	if in.MaxBytes < 0 || in.MaxBytes > maxBlobBytes {
		return FsReadOutput{}, "", fmt.Errorf("max_bytes must be between 0 and %d; download bigger files from /bots/%s/files", maxBlobBytes, in.BotID)
	}
	res, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.ReadTextResult, error) {
		return a.ReadText(ctx, wire.ReadTextRequest{Path: in.Path, Offset: in.Offset, Limit: in.Limit, Tail: in.Tail, MaxBytes: in.MaxBytes})
	})
	if err != nil {
		return FsReadOutput{}, "", err
	}
	out := FsReadOutput{ReadTextResult: res}
	if !res.Binary {
		summary := res.Text
		if res.Truncated {
			summary += fmt.Sprintf("\n[… lines %d-%d of %d shown; pass offset %d for more]", res.StartLine+1, res.EndLine, res.TotalLines, res.NextOffset)
		}
		return out, summary, nil
	}
	limit := min(max(in.MaxBytes, 0), maxBlobBytes)
	if limit == 0 {
		limit = defaultBlobBytes
	}
	blob, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) ([]byte, error) {
		rc, _, err := a.ReadRange(ctx, res.Path, 0, int64(limit))
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(io.LimitReader(rc, int64(limit)))
	})
	if err != nil {
		return FsReadOutput{}, "", err
	}
	out.blob, out.BlobBytes = blob, len(blob)
	summary := fmt.Sprintf("%s is binary (%s, %d bytes); %d bytes attached", res.Path, res.MIMEType, res.Size, len(blob))
	if int64(len(blob)) < res.Size {
		summary += "; download the rest over HTTP (/bots/{bot_id}/files?path=...) or read it with exec"
	}
	return out, summary, nil
}

func (h handlers) fsWrite(ctx context.Context, _ *call, in FsWriteInput) (wire.WriteResult, string, error) {
	// The content is already in memory once (the request); it streams to
	// the agent from there rather than being copied.
	var body io.Reader = strings.NewReader(in.Content)
	size := len(in.Content)
	if in.ContentBase64 != "" {
		if in.Content != "" {
			return wire.WriteResult{}, "", errors.New("give content or content_base64, not both")
		}
		// Checked in a first pass so that bad input fails clearly before
		// anything is written.
		if _, err := io.Copy(io.Discard, base64.NewDecoder(base64.StdEncoding, strings.NewReader(in.ContentBase64))); err != nil {
			return wire.WriteResult{}, "", fmt.Errorf("content_base64: %v", err)
		}
		body = base64.NewDecoder(base64.StdEncoding, strings.NewReader(in.ContentBase64))
		size = base64.StdEncoding.DecodedLen(len(in.ContentBase64))
	}
	if size > maxWriteContent {
		return wire.WriteResult{}, "", fmt.Errorf("the content is about %d bytes; fs_write takes at most %d (16 MiB): upload bigger files with PUT /bots/{bot_id}/files over HTTP, or data_import", size, maxWriteContent)
	}
	res, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.WriteResult, error) {
		return a.Write(ctx, wire.WriteRequest{Path: in.Path, Mode: in.Mode, ExpectedRevision: in.ExpectedRevision, MakeParents: true}, body)
	})
	if err != nil {
		return res, "", err
	}
	return res, fmt.Sprintf("wrote %d bytes to %s (revision %s)", res.Size, res.Path, res.Revision), nil
}

func (h handlers) fsEdit(ctx context.Context, _ *call, in FsEditInput) (wire.EditResult, string, error) {
	res, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.EditResult, error) {
		return a.Edit(ctx, wire.EditRequest{Path: in.Path, Edits: in.Edits, DryRun: in.DryRun, ExpectedRevision: in.ExpectedRevision})
	})
	if err != nil {
		return res, "", err
	}
	verb := "applied"
	if in.DryRun {
		verb = "would apply (dry run)"
	}
	return res, fmt.Sprintf("%s %d replacement(s) to %s\n%s", verb, res.Replacements, res.Path, res.Diff), nil
}

func (h handlers) fsMkdir(ctx context.Context, _ *call, in FsMkdirInput) (wire.FileInfo, string, error) {
	parents := in.Parents == nil || *in.Parents
	fi, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.FileInfo, error) { return a.Mkdir(ctx, in.Path, parents) })
	if err != nil {
		return fi, "", err
	}
	return fi, "created " + fi.Path, nil
}

// FsDeleteOutput names the path deleted.
type FsDeleteOutput struct {
	FsDeleteInput
	Declined
}

func (h handlers) fsDelete(ctx context.Context, c *call, in FsDeleteInput) (FsDeleteOutput, string, error) {
	out := FsDeleteOutput{FsDeleteInput: in}
	if declined, err := h.confirm(ctx, c, h.fsDeleteQuestion(ctx, in)); declined != "" || err != nil {
		out.Declined.Declined = true
		return out, declined, err
	}
	missing, err := h.remove(ctx, in.BotID, func(a *client.Client) error { return a.Delete(ctx, in.Path, in.Recursive) })
	switch {
	case err != nil:
		return out, "", err
	case missing != nil:
		return out, in.Path + " does not exist: nothing to delete", nil
	}
	return out, "deleted " + in.Path, nil
}

func (h handlers) fsMove(ctx context.Context, _ *call, in FsMoveInput) (wire.FileInfo, string, error) {
	fi, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.FileInfo, error) {
		return a.Move(ctx, in.Source, in.Destination, in.Overwrite)
	})
	if err != nil {
		return fi, "", err
	}
	return fi, fmt.Sprintf("moved %s to %s", in.Source, fi.Path), nil
}

func (h handlers) fsCopy(ctx context.Context, _ *call, in FsMoveInput) (wire.FileInfo, string, error) {
	fi, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.FileInfo, error) {
		return a.Copy(ctx, in.Source, in.Destination, in.Overwrite)
	})
	if err != nil {
		return fi, "", err
	}
	return fi, fmt.Sprintf("copied %s to %s", in.Source, fi.Path), nil
}

func (h handlers) fsFind(ctx context.Context, _ *call, in FsFindInput) (wire.FindResult, string, error) {
	res, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.FindResult, error) {
		return a.Find(ctx, wire.FindRequest{Root: orData(in.Path), Pattern: in.Pattern, Type: in.Type, MaxResults: in.MaxResults})
	})
	if err != nil {
		return res, "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d match(es)", len(res.Matches))
	if res.Truncated {
		b.WriteString(" (capped: narrow the path or pattern, or raise max_results)")
	}
	for _, f := range res.Matches {
		b.WriteString("\n" + f.Path)
	}
	return res, b.String(), nil
}

func (h handlers) fsGrep(ctx context.Context, _ *call, in FsGrepInput) (wire.GrepResult, string, error) {
	res, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.GrepResult, error) {
		return a.Grep(ctx, wire.GrepRequest{
			Root: orData(in.Path), Pattern: in.Pattern, Regex: in.Regex, IgnoreCase: in.IgnoreCase, Include: in.Include,
			MaxFiles: in.MaxFiles, MaxMatches: in.MaxMatches, MaxBytes: in.MaxBytes,
		})
	})
	if err != nil {
		return res, "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d match(es) in %d file(s) scanned", len(res.Matches), res.FilesScanned)
	if res.Truncated {
		fmt.Fprintf(&b, " (stopped early: %s)", res.Reason)
	}
	for _, mt := range res.Matches {
		fmt.Fprintf(&b, "\n%s:%d: %s", mt.Path, mt.Line, mt.Text)
	}
	return res, b.String(), nil
}
