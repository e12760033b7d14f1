// Package resources defines berth's MCP resources and resource templates.
// Like the tools, they are thin: they parse the URI, check the caller may
// read it, and call the Manager.
package resources

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/skills"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/containerd/errdefs"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// URI templates of berth's resources.
const (
	WorkspaceTemplate = "berth://bots/{bot_id}/workspace"
	// FilesTemplate reads a file by its absolute container path without the
	// leading slash: berth://bots/b/files/data/notes.md is /data/notes.md.
	FilesTemplate = "berth://bots/{bot_id}/files/{+path}"
	// ExportTemplate is an archive data_export made.
	ExportTemplate = "berth://bots/{bot_id}/exports/{export_id}"
	// SnapshotsTemplate and SnapshotTemplate are a workspace's lineage and one version.
	SnapshotsTemplate = "berth://bots/{bot_id}/snapshots"
	SnapshotTemplate  = "berth://bots/{bot_id}/snapshots/{version}"
	// SkillTemplate is a skill's SKILL.md.
	SkillTemplate = "berth://bots/{bot_id}/skills/{name}"
	// ProcessOutputTemplate and TerminalOutputTemplate read a background
	// process's stream (stdout or stderr) or a terminal's output from a
	// byte offset, as process_output and terminal_read do.
	ProcessOutputTemplate  = "berth://bots/{bot_id}/processes/{process_id}/{stream}{?offset,limit}"
	TerminalOutputTemplate = "berth://bots/{bot_id}/terminals/{terminal_id}/output{?offset,limit}"
)

// Caps on a file read through the files resource.
const (
	maxTextResource = 1 << 20
	maxBlobResource = 8 << 20
)

// Register adds every resource template to s. hooks must be the hooks s
// was built with (server.WithHooks): reads of missing resources are
// answered through them.
func Register(s *server.MCPServer, hooks *server.Hooks, m *workspace.Manager, skillsCfg skills.Config) {
	hooks.AddBeforeReadResource(notFoundHook(m))
	s.AddResourceTemplate(
		mcp.NewResourceTemplate(WorkspaceTemplate, "workspace",
			mcp.WithTemplateDescription("The bot's workspace, as workspace_get returns it."),
			mcp.WithTemplateMIMEType("application/json"),
		),
		func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			bot, _ := argument(req, "bot_id")
			if err := auth.FromContext(ctx).Allow(auth.ScopeRead, bot); err != nil {
				return nil, err
			}
			ws, err := m.Get(ctx, bot)
			if err != nil {
				return nil, err
			}
			data, err := json.MarshalIndent(ws, "", "  ")
			if err != nil {
				return nil, err
			}
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "application/json", Text: string(data)}}, nil
		},
	)
	s.AddResourceTemplate(
		mcp.NewResourceTemplate(FilesTemplate, "file",
			mcp.WithTemplateDescription("A file in the bot's workspace by absolute path (without the leading slash): text, or a blob for binary files. Capped; larger files: fs_read or the HTTP download."),
		),
		readFile(m),
	)
	s.AddResourceTemplate(
		mcp.NewResourceTemplate(ExportTemplate, "export",
			mcp.WithTemplateDescription("A tar.gz that data_export made, as a blob (up to 8 MiB; bigger ones: the download path data_export returned)."),
			mcp.WithTemplateMIMEType("application/gzip"),
		),
		readExport(m),
	)
	s.AddResourceTemplate(
		mcp.NewResourceTemplate(SnapshotsTemplate, "snapshots",
			mcp.WithTemplateDescription("The workspace's lineage, as snapshot_list returns it."),
			mcp.WithTemplateMIMEType("application/json"),
		),
		readSnapshots(m, false),
	)
	s.AddResourceTemplate(
		mcp.NewResourceTemplate(SnapshotTemplate, "snapshot",
			mcp.WithTemplateDescription("One version of the workspace."),
			mcp.WithTemplateMIMEType("application/json"),
		),
		readSnapshots(m, true),
	)
	s.AddResourceTemplate(
		mcp.NewResourceTemplate(SkillTemplate, "skill",
			mcp.WithTemplateDescription("The SKILL.md of the bot's effective skill of that name."),
			mcp.WithTemplateMIMEType("text/markdown"),
		),
		func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			bot, _ := argument(req, "bot_id")
			name, _ := argument(req, "name")
			if err := auth.FromContext(ctx).Allow(auth.ScopeRead, bot); err != nil {
				return nil, err
			}
			text, err := workspace.Ask(ctx, m, bot, func(a *client.Client) (string, error) { return skills.Read(ctx, a, skillsCfg, name) })
			if err != nil {
				return nil, err
			}
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "text/markdown", Text: text}}, nil
		},
	)
	s.AddResourceTemplate(
		mcp.NewResourceTemplate(ProcessOutputTemplate, "process-output",
			mcp.WithTemplateDescription("A background process's stdout or stderr from a byte offset (default 0; limit default 65536, at most 1 MiB), as process_output returns it: pass next_offset as offset to read on. Subscribe to hear of new output."),
			mcp.WithTemplateMIMEType("application/json"),
		),
		readOutput(m, func(ctx context.Context, a *client.Client, req mcp.ReadResourceRequest, offset int64, limit int) (wire.OutputChunk, error) {
			id, _ := argument(req, "process_id")
			stream, _ := argument(req, "stream")
			if stream != wire.StreamStdout && stream != wire.StreamStderr {
				return wire.OutputChunk{}, fmt.Errorf("%w: stream %q: stdout or stderr", errdefs.ErrInvalidArgument, stream)
			}
			return a.ProcessOutput(ctx, id, stream, offset, limit)
		}),
	)
	s.AddResourceTemplate(
		mcp.NewResourceTemplate(TerminalOutputTemplate, "terminal-output",
			mcp.WithTemplateDescription("A terminal's output from a byte offset (default 0; limit default 65536, at most 1 MiB), as terminal_read returns it: pass next_offset as offset to read on. Subscribe to hear of new output."),
			mcp.WithTemplateMIMEType("application/json"),
		),
		readOutput(m, func(ctx context.Context, a *client.Client, req mcp.ReadResourceRequest, offset int64, limit int) (wire.OutputChunk, error) {
			id, _ := argument(req, "terminal_id")
			return a.ReadTerminal(ctx, id, offset, limit)
		}),
	)
}

// outputChunk is a piece of a process's or terminal's output, shaped as
// the process_output and terminal_read tools shape it.
type outputChunk struct {
	Output     string `json:"output"`
	Offset     int64  `json:"offset"`
	NextOffset int64  `json:"next_offset"`
	Total      int64  `json:"total"`
	Dropped    int64  `json:"dropped,omitempty"`
	Running    bool   `json:"running"`
	ExitCode   *int   `json:"exit_code,omitempty"`
}

// readOutput serves an output template: the same scope as the tools that
// read output (exec), the offset and limit from the URI's query.
func readOutput(m *workspace.Manager, read func(context.Context, *client.Client, mcp.ReadResourceRequest, int64, int) (wire.OutputChunk, error)) server.ResourceTemplateHandlerFunc {
	return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		bot, _ := argument(req, "bot_id")
		if err := auth.FromContext(ctx).Allow(auth.ScopeExec, bot); err != nil {
			return nil, err
		}
		offset, err := queryInt(req, "offset", 0, 1<<62)
		if err != nil {
			return nil, err
		}
		limit, err := queryInt(req, "limit", 0, wire.MaxOutputLimit)
		if err != nil {
			return nil, err
		}
		c, err := workspace.Ask(ctx, m, bot, func(a *client.Client) (wire.OutputChunk, error) {
			return read(ctx, a, req, offset, int(limit))
		})
		if err != nil {
			return nil, err
		}
		out := outputChunk{Output: strings.ToValidUTF8(string(c.Data), "\uFFFD"), Offset: c.Offset, NextOffset: c.NextOffset, Total: c.Total, Dropped: c.Dropped}
		switch {
		case c.Process != nil:
			out.Running, out.ExitCode = c.Process.Running, c.Process.ExitCode
		case c.Terminal != nil:
			out.Running, out.ExitCode = c.Terminal.Running, c.Terminal.ExitCode
		}
		data, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return nil, err
		}
		return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "application/json", Text: string(data)}}, nil
	}
}

// queryInt is an optional numeric variable of the URI's query, 0 when
// absent.
func queryInt(req mcp.ReadResourceRequest, name string, lo, hi int64) (int64, error) {
	v, err := argument(req, name)
	if err != nil || v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%w: %s=%q in %s: a number from %d to %d", errdefs.ErrInvalidArgument, name, v, req.Params.URI, lo, hi)
	}
	return n, nil
}

func readSnapshots(m *workspace.Manager, one bool) server.ResourceTemplateHandlerFunc {
	return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		bot, _ := argument(req, "bot_id")
		if err := auth.FromContext(ctx).Allow(auth.ScopeRead, bot); err != nil {
			return nil, err
		}
		lineage, err := m.ListSnapshots(ctx, bot)
		if err != nil {
			return nil, err
		}
		var v any = lineage
		if one {
			want, _ := argument(req, "version")
			v = nil
			for _, s := range lineage.Versions {
				if fmt.Sprint(s.Version) == want {
					v = s
				}
			}
			if v == nil {
				return nil, fmt.Errorf("%s has no snapshot version %q", bot, want)
			}
		}
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return nil, err
		}
		return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "application/json", Text: string(data)}}, nil
	}
}

func readExport(m *workspace.Manager) server.ResourceTemplateHandlerFunc {
	return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		bot, _ := argument(req, "bot_id")
		id, _ := argument(req, "export_id")
		if err := auth.FromContext(ctx).Allow(auth.ScopeRead, bot); err != nil {
			return nil, err
		}
		f, err := m.OpenExport(bot, id)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Size() > maxBlobResource {
			return nil, fmt.Errorf("export %s is %d bytes, more than a resource returns (%d): download it from /bots/%s/data/export?export_id=%s", id, st.Size(), maxBlobResource, bot, id)
		}
		data, err := io.ReadAll(io.LimitReader(f, maxBlobResource))
		if err != nil {
			return nil, err
		}
		return []mcp.ResourceContents{mcp.BlobResourceContents{URI: req.Params.URI, MIMEType: "application/gzip", Blob: base64.StdEncoding.EncodeToString(data)}}, nil
	}
}

func readFile(m *workspace.Manager) server.ResourceTemplateHandlerFunc {
	return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		bot, _ := argument(req, "bot_id")
		path, err := argument(req, "path")
		if err != nil {
			return nil, err
		}
		if err := auth.FromContext(ctx).Allow(auth.ScopeRead, bot); err != nil {
			return nil, err
		}
		path = "/" + strings.TrimPrefix(path, "/")
		text, err := workspace.Ask(ctx, m, bot, func(a *client.Client) (wire.ReadTextResult, error) {
			return a.ReadText(ctx, wire.ReadTextRequest{Path: path, Limit: 20000, MaxBytes: maxTextResource})
		})
		if err != nil {
			return nil, err
		}
		if !text.Binary {
			if text.Truncated {
				return nil, fmt.Errorf("%s is larger than this resource returns (%d bytes); read it with fs_read by line window or download it from /bots/%s/files", path, maxTextResource, bot)
			}
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: mimeOr(text.MIMEType, "text/plain"), Text: text.Text}}, nil
		}
		if text.Size > maxBlobResource {
			return nil, fmt.Errorf("%s is %d bytes, more than this resource returns (%d); download it from /bots/%s/files", path, text.Size, maxBlobResource, bot)
		}
		data, err := workspace.Ask(ctx, m, bot, func(a *client.Client) ([]byte, error) {
			rc, _, err := a.ReadRange(ctx, path, 0, maxBlobResource)
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			return io.ReadAll(io.LimitReader(rc, maxBlobResource))
		})
		if err != nil {
			return nil, err
		}
		return []mcp.ResourceContents{mcp.BlobResourceContents{URI: req.Params.URI, MIMEType: mimeOr(text.MIMEType, "application/octet-stream"), Blob: base64.StdEncoding.EncodeToString(data)}}, nil
	}
}

func mimeOr(mime, fallback string) string {
	if mime == "" {
		return fallback
	}
	return mime
}

// argument returns a URI template variable of the request.
func argument(req mcp.ReadResourceRequest, name string) (string, error) {
	v := req.Params.Arguments[name]
	switch v := v.(type) {
	case string:
		return v, nil
	case []string:
		if len(v) == 1 {
			return v[0], nil
		}
	}
	return "", fmt.Errorf("missing %s in %s", name, req.Params.URI)
}
