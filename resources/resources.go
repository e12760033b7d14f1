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
	"strings"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/skills"
	"github.com/berth-dev/berth/internal/workspace"
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
