package workspace

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/containerd/errdefs"
)

// LabelOwnerBot on an image names the bot it belongs to: only callers that
// may use that bot see it in image_list and create or fork workspaces from
// it. snapshot_export sets it, since the image holds the bot's files.
const LabelOwnerBot = labelPrefix + "owner-bot"

// ImageOwner is the bot an image belongs to, "" for a shared image. The
// label decides; an image named like a snapshot export belongs to the bot
// in its name even without one (made before the label existed, or imported
// under that name), so no one can pass another bot's export off as shared.
func ImageOwner(img runtime.Image) string {
	if bot := img.Labels[LabelOwnerBot]; bot != "" {
		return bot
	}
	return snapshotImageBot(img.Name)
}

// snapshotImageBot is the bot in a name SnapshotImagePrefix+bot+":v"+n,
// or "" for other names. A malformed name under the prefix belongs to a
// bot no token names, so only callers that may use every bot use it.
func snapshotImageBot(name string) string {
	rest, ok := strings.CutPrefix(name, SnapshotImagePrefix)
	if !ok {
		return ""
	}
	bot, _, _ := strings.Cut(rest, ":")
	if ValidateBotID(bot) != nil {
		return SnapshotImagePrefix + rest
	}
	return bot
}

// ImageOwner is the bot the image named ref belongs to, "" if it is shared.
// An image that is not there is judged by its name alone, so the answer
// never tells whether another bot's export exists.
func (m *Manager) ImageOwner(ctx context.Context, ref string) (string, error) {
	norm, err := runtime.NormalizeImageRef(ref)
	if err != nil {
		return "", err
	}
	img, err := m.rt.Image(ctx, norm)
	if isNotFound(err) {
		return snapshotImageBot(norm), nil
	}
	if err != nil {
		return "", err
	}
	return ImageOwner(img), nil
}

// ListImages returns up to limit of the images whose owner visible accepts
// (nil accepts all; shared images have owner "") and whose name sorts after
// `after`. It filters before it pages, so that no page counts others' images.
func (m *Manager) ListImages(ctx context.Context, after string, limit int, visible func(owner string) bool) ([]runtime.Image, bool, error) {
	imgs, err := m.rt.ListImages(ctx)
	if err != nil {
		return nil, false, err
	}
	out := []runtime.Image{}
	for _, img := range imgs {
		if img.Name <= after {
			continue
		}
		if owner := ImageOwner(img); owner != "" && visible != nil && !visible(owner) {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, img)
	}
	return out, false, nil
}

// ImportImages imports an OCI or docker archive from a host file and
// unpacks it for the default snapshotter. name names an unnamed image.
func (m *Manager) ImportImages(ctx context.Context, path, name string) ([]runtime.Image, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%w: path %q must be an absolute host path", errdefs.ErrInvalidArgument, path)
	}
	if name != "" {
		ref, err := runtime.NormalizeImageRef(name)
		if err != nil {
			return nil, err
		}
		name = ref
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: open archive: %v", errdefs.ErrInvalidArgument, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", errdefs.ErrInvalidArgument, path)
	}
	return m.rt.ImportImages(ctx, f, m.opts.Snapshotter, name)
}

// DeleteImage deletes the image named ref, unless a workspace was created
// from it: containerd would keep its layers anyway, and the name is how
// that workspace is described and forked.
func (m *Manager) DeleteImage(ctx context.Context, ref string) error {
	if ref == "" {
		return fmt.Errorf("%w: image is required", errdefs.ErrInvalidArgument)
	}
	ctrs, err := m.rt.Containers(ctx, LabelBot)
	if err != nil {
		return err
	}
	var users []string
	for _, c := range ctrs {
		if c.Image == ref {
			users = append(users, c.ID)
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("%w: image %s is used by workspace(s) %s; delete them first", errdefs.ErrFailedPrecondition, ref, strings.Join(users, ", "))
	}
	return m.rt.DeleteImage(ctx, ref)
}
