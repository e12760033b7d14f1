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
	Image string `json:"image" jsonschema:"description=the image's name\\, as image_list shows it"`
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

func imageTools(h handlers) []server.ServerTool {
	return []server.ServerTool{
		define("image_list", "List images",
			"List the images this caller can create workspaces from, sorted by name, a page at a time. Images labelled "+workspace.LabelOwnerBot+" (a bot's snapshot_export) are listed only to callers that may use that bot.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead, h.imageList),
		define("image_import", "Import image",
			"Import an OCI or docker image archive from a path on berth's host, for hosts without registry access. Needs the admin scope (stdio, or the admin token).",
			hints{idempotent: true}, auth.ScopeAdmin, h.imageImport),
		define("image_delete", "Delete image",
			"Delete an image that no workspace was created from. A bot may delete its own snapshot_export images ("+workspace.SnapshotImagePrefix+"{bot_id}:v{version}); other images are shared and need the admin scope.",
			hints{destructive: true, idempotent: false}, auth.ScopeManage, h.imageDelete),
	}
}

func (h handlers) imageList(ctx context.Context, _ *call, in PageInput) (ImageListOutput, string, error) {
	limit, err := in.limit()
	if err != nil {
		return ImageListOutput{}, "", err
	}
	imgs, more, err := h.Manager.ListImages(ctx, in.Cursor, limit, imageOwnersOf(auth.FromContext(ctx)))
	if err != nil {
		return ImageListOutput{}, "", err
	}
	out := ImageListOutput{Images: imgs}
	if more && len(imgs) > 0 {
		out.NextCursor = imgs[len(imgs)-1].Name
	}
	return out, fmt.Sprintf("%d image(s)%s", len(imgs), moreText(more)), nil
}

func (h handlers) imageImport(ctx context.Context, _ *call, in ImageImportInput) (ImageImportOutput, string, error) {
	imgs, err := h.Manager.ImportImages(ctx, in.Path, in.Name)
	if err != nil {
		return ImageImportOutput{}, "", err
	}
	names := make([]string, len(imgs))
	for i, img := range imgs {
		names[i] = img.Name
	}
	return ImageImportOutput{Images: imgs}, fmt.Sprintf("imported %v", names), nil
}

func (h handlers) imageDelete(ctx context.Context, _ *call, in ImageDeleteInput) (ImageDeleteInput, string, error) {
	if in.bot() == "" {
		if err := auth.FromContext(ctx).Allow(auth.ScopeAdmin, ""); err != nil {
			return in, "", err
		}
	}
	if err := h.Manager.DeleteImage(ctx, in.Image); err != nil {
		return in, "", err
	}
	return in, "deleted image " + in.Image, nil
}

// imageOwnersOf says which bots' images p may use: nil for all, which is
// what admins and callers not limited to some bots get.
func imageOwnersOf(p *auth.Principal) func(owner string) bool {
	if p == nil {
		return func(string) bool { return false }
	}
	if p.Bots == nil || p.Allow(auth.ScopeAdmin, "") == nil {
		return nil
	}
	return func(owner string) bool { return p.Bots[owner] }
}

// checkImageOwner refuses an image that belongs to a bot the caller may
// not use: it holds that bot's files.
func checkImageOwner(ctx context.Context, m *workspace.Manager, image string) error {
	may := imageOwnersOf(auth.FromContext(ctx))
	if may == nil || image == "" {
		return nil
	}
	owner, err := m.ImageOwner(ctx, image)
	if err != nil {
		return err
	}
	if owner != "" && !may(owner) {
		return fmt.Errorf("permission denied: image %s belongs to bot %q, which %s may not use", image, owner, auth.FromContext(ctx).Name)
	}
	return nil
}

// imageAccess checks that the caller may use image ("" is the operator's
// default image) and returns the context to create from it under: callers
// without the admin scope pull only from the allowed registries, and hear
// of a failed registry only whether it was not found, unauthorized or
// unreachable, never the network detail (the log has it).
func imageAccess(ctx context.Context, d Deps, image string) (context.Context, error) {
	if image == "" || auth.FromContext(ctx).Allow(auth.ScopeAdmin, "") == nil {
		return ctx, nil
	}
	if err := checkImageOwner(ctx, d.Manager, image); err != nil {
		return ctx, err
	}
	return runtime.WithPullRules(ctx, runtime.PullRules{Registries: d.AllowedRegistries, Terse: true, Log: d.Logger}), nil
}
