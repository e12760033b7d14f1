package runtime

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// progressInterval is how often a pull reports progress.
const progressInterval = 200 * time.Millisecond

// NormalizeImageRef turns a user's image reference into containerd's
// canonical form ("debian" → "docker.io/library/debian:latest").
func NormalizeImageRef(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("%w: image reference %q: %v", errdefs.ErrInvalidArgument, ref, err)
	}
	return named.String(), nil
}

// EnsureImage makes ref present and unpacked for snapshotter.
func (r *Containerd) EnsureImage(ctx context.Context, ref string, policy PullPolicy, snapshotter string, progress func(PullProgress)) (Image, error) {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return Image{}, err
	}
	if policy != PullAlways {
		img, err := c.GetImage(ctx, ref)
		switch {
		case err == nil:
			if err := unpack(ctx, img, snapshotter); err != nil {
				return Image{}, r.wrap(err)
			}
			return describe(ctx, img)
		case !errdefs.IsNotFound(err):
			return Image{}, r.wrap(err)
		case policy == PullNever:
			return Image{}, fmt.Errorf("%w: image %s is not present and pull policy is never: import it with image_import or use pull_policy if_not_present", errdefs.ErrNotFound, ref)
		}
	}
	img, err := r.pull(ctx, c, ref, snapshotter, progress)
	if err != nil {
		return Image{}, err
	}
	info, err := describe(ctx, img)
	info.Pulled = true
	return info, err
}

// pull fetches ref under a lease of its own. The image record is what keeps
// the content afterwards; if the pull fails or is cancelled, deleting the
// lease synchronously lets containerd's GC drop every blob it fetched.
func (r *Containerd) pull(ctx context.Context, c *containerd.Client, ref, snapshotter string, progress func(PullProgress)) (containerd.Image, error) {
	lm := c.LeasesService()
	lease, err := lm.Create(ctx, leases.WithRandomID(), leases.WithExpiration(2*time.Hour))
	if err != nil {
		return nil, r.wrap(err)
	}
	defer func() {
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = lm.Delete(cleanup, lease, leases.SynchronousDelete)
	}()
	ctx = leases.WithLease(ctx, lease.ID)

	tracker := newPullTracker(c.ContentStore())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if progress != nil {
		progress(PullProgress{Phase: "resolving"})
		wg.Add(1)
		go func() {
			defer wg.Done()
			tracker.report(ctx, stop, progress)
		}()
	}
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(r.opts.RegistryConfigDir)}),
	})
	img, err := c.Pull(ctx, ref,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter),
		containerd.WithImageHandler(tracker.handler()),
	)
	close(stop)
	wg.Wait()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("pull of %s cancelled: %w", ref, ctx.Err())
		}
		return nil, fmt.Errorf("pull %s: %w", ref, r.wrap(err))
	}
	if progress != nil {
		done, total, layers, layersDone := tracker.totals(ctx)
		progress(PullProgress{Phase: "unpacked", Done: done, Total: total, Layers: layers, LayersDone: layersDone})
	}
	return img, nil
}

// pullTracker follows one pull: the image handler records the blobs of
// this image as the manifests are read, and report() sums what has landed
// in the content store plus what is in flight, counting only those blobs
// (so concurrent pulls of other images never leak into the figures).
type pullTracker struct {
	store content.Store

	mu    sync.Mutex
	blobs map[string]ocispec.Descriptor // by digest; layers and config only
}

func newPullTracker(store content.Store) *pullTracker {
	return &pullTracker{store: store, blobs: map[string]ocispec.Descriptor{}}
}

func (t *pullTracker) handler() images.Handler {
	return images.HandlerFunc(func(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if images.IsLayerType(desc.MediaType) || images.IsConfigType(desc.MediaType) {
			t.mu.Lock()
			t.blobs[desc.Digest.String()] = desc
			t.mu.Unlock()
		}
		return nil, nil
	})
}

func (t *pullTracker) totals(ctx context.Context) (done, total int64, layers, layersDone int) {
	t.mu.Lock()
	blobs := make([]ocispec.Descriptor, 0, len(t.blobs))
	for _, d := range t.blobs {
		blobs = append(blobs, d)
	}
	t.mu.Unlock()

	active := map[string]int64{}
	if statuses, err := t.store.ListStatuses(ctx); err == nil {
		for _, s := range statuses {
			active[s.Expected.String()] = s.Offset
		}
	}
	for _, d := range blobs {
		total += d.Size
		isLayer := images.IsLayerType(d.MediaType)
		if isLayer {
			layers++
		}
		if _, err := t.store.Info(ctx, d.Digest); err == nil {
			done += d.Size
			if isLayer {
				layersDone++
			}
			continue
		}
		done += min(active[d.Digest.String()], d.Size)
	}
	return done, total, layers, layersDone
}

func (t *pullTracker) report(ctx context.Context, stop <-chan struct{}, progress func(PullProgress)) {
	tick := time.NewTicker(progressInterval)
	defer tick.Stop()
	var last PullProgress
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		done, total, layers, layersDone := t.totals(ctx)
		p := PullProgress{Phase: "downloading", Done: done, Total: total, Layers: layers, LayersDone: layersDone}
		if total > 0 && done == total {
			p.Phase = "unpacking"
		}
		if p != last && total > 0 {
			progress(p)
			last = p
		}
	}
}

// ImportImages imports an OCI or docker archive and unpacks its images.
func (r *Containerd) ImportImages(ctx context.Context, rd io.Reader, snapshotter, name string) ([]Image, error) {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	opts := []containerd.ImportOpt{containerd.WithImportPlatform(platforms.Default())}
	if name != "" {
		// Names an unnamed image (an OCI layout without ref annotations).
		opts = append(opts, containerd.WithDigestRef(func(digest.Digest) string { return name }))
	}
	imgs, err := c.Import(ctx, rd, opts...)
	if err != nil {
		return nil, fmt.Errorf("import: %w", r.wrap(err))
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("%w: the archive holds no named image; pass a name for it", errdefs.ErrInvalidArgument)
	}
	var out []Image
	for _, rec := range imgs {
		img := containerd.NewImageWithPlatform(c, rec, platforms.Default())
		if err := unpack(ctx, img, snapshotter); err != nil {
			return nil, fmt.Errorf("unpack %s: %w", rec.Name, r.wrap(err))
		}
		info, err := describe(ctx, img)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// ListImages lists the images in berth's namespace, sorted by name.
func (r *Containerd) ListImages(ctx context.Context) ([]Image, error) {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	imgs, err := c.ListImages(ctx)
	if err != nil {
		return nil, r.wrap(err)
	}
	out := make([]Image, 0, len(imgs))
	for _, img := range imgs {
		info, err := describe(ctx, img)
		if err != nil {
			// An image whose content is incomplete still has a name and digest.
			info = Image{Name: img.Name(), Digest: img.Target().Digest.String(), CreatedAt: img.Metadata().CreatedAt}
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeleteImage removes the image named ref.
func (r *Containerd) DeleteImage(ctx context.Context, ref string) error {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return err
	}
	if err := c.ImageService().Delete(ctx, ref); err != nil {
		return fmt.Errorf("delete image %s: %w", ref, r.wrap(err))
	}
	return nil
}

func unpack(ctx context.Context, img containerd.Image, snapshotter string) error {
	ok, err := img.IsUnpacked(ctx, snapshotter)
	if err != nil || ok {
		return err
	}
	return img.Unpack(ctx, snapshotter)
}

func describe(ctx context.Context, img containerd.Image) (Image, error) {
	size, err := img.Size(ctx)
	if err != nil {
		return Image{}, err
	}
	return Image{
		Name:      img.Name(),
		Digest:    img.Target().Digest.String(),
		Size:      size,
		CreatedAt: img.Metadata().CreatedAt,
	}, nil
}
