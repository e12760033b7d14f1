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

// ListImages returns up to limit images whose name sorts after `after`.
func (m *Manager) ListImages(ctx context.Context, after string, limit int) ([]runtime.Image, bool, error) {
	imgs, err := m.rt.ListImages(ctx)
	if err != nil {
		return nil, false, err
	}
	out := []runtime.Image{}
	for _, img := range imgs {
		if img.Name <= after {
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
