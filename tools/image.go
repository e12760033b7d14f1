package tools

import (
	"context"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/server"
)

// ImageListOutput is one page of images.
type ImageListOutput struct {
	Images     []runtime.Image `json:"images"`
	NextCursor string          `json:"next_cursor,omitempty" jsonschema:"description=pass as cursor to get the next page; absent on the last page"`
}

// ImageImportInput names an archive on berth's host.
type ImageImportInput struct {
	Path string `json:"path" jsonschema:"description=absolute path on berth's host of an OCI or docker image archive (docker save / ctr export / berth image pack)"`
	Name string `json:"name,omitempty" jsonschema:"description=name for the archive's image when the archive does not name it"`
}

// ImageImportOutput lists the imported images.
type ImageImportOutput struct {
	Images []runtime.Image `json:"images"`
}

// ImageDeleteInput names an image to delete.
type ImageDeleteInput struct {
	Image string `json:"image" jsonschema:"description=the image's name, as image_list shows it"`
}

// bot is the bot whose snapshot_export made the image, if it is one: its
// own exports are the bot's to delete.
func (i ImageDeleteInput) bot() string {
	rest, ok := strings.CutPrefix(i.Image, workspace.SnapshotImagePrefix)
	if !ok {
		return ""
	}
	bot, _, _ := strings.Cut(rest, ":")
	return bot
}

func imageTools(d Deps) []server.ServerTool {
	m := d.Manager
	return []server.ServerTool{
		define("image_list", "List images",
			"List the images berth can create workspaces from, sorted by name, a page at a time.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead,
			func(ctx context.Context, _ *call, in PageInput) (ImageListOutput, string, error) {
				limit, err := in.limit()
				if err != nil {
					return ImageListOutput{}, "", err
				}
				imgs, more, err := m.ListImages(ctx, in.Cursor, limit)
				if err != nil {
					return ImageListOutput{}, "", err
				}
				out := ImageListOutput{Images: imgs}
				if more && len(imgs) > 0 {
					out.NextCursor = imgs[len(imgs)-1].Name
				}
				return out, fmt.Sprintf("%d image(s)%s", len(imgs), moreText(more)), nil
			}),
		define("image_import", "Import image",
			"Import an OCI or docker image archive from a path on berth's host, for hosts without registry access. Needs the admin scope (stdio, or the admin token).",
			hints{idempotent: true}, auth.ScopeAdmin,
			func(ctx context.Context, _ *call, in ImageImportInput) (ImageImportOutput, string, error) {
				imgs, err := m.ImportImages(ctx, in.Path, in.Name)
				if err != nil {
					return ImageImportOutput{}, "", err
				}
				names := make([]string, len(imgs))
				for i, img := range imgs {
					names[i] = img.Name
				}
				return ImageImportOutput{Images: imgs}, fmt.Sprintf("imported %v", names), nil
			}),
		define("image_delete", "Delete image",
			"Delete an image that no workspace was created from. A bot may delete its own snapshot_export images ("+workspace.SnapshotImagePrefix+"{bot_id}:v{version}); other images are shared and need the admin scope.",
			hints{destructive: true, idempotent: false}, auth.ScopeManage,
			func(ctx context.Context, _ *call, in ImageDeleteInput) (ImageDeleteInput, string, error) {
				if in.bot() == "" {
					if err := auth.FromContext(ctx).Allow(auth.ScopeAdmin, ""); err != nil {
						return in, "", err
					}
				}
				if err := m.DeleteImage(ctx, in.Image); err != nil {
					return in, "", err
				}
				return in, "deleted image " + in.Image, nil
			}),
	}
}
