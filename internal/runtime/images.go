package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/remedy"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// progressInterval is how often a pull reports the bytes of blobs still
// arriving (a variable so that a test can take the ticker out of the way).
var progressInterval = 200 * time.Millisecond

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
			return Image{}, remedy.With(remedy.ImportImage, fmt.Errorf("%w: image %s is not present and the pull policy is never", errdefs.ErrNotFound, ref))
		}
	}
	rules := pullRulesFrom(ctx)
	host, err := RegistryHost(ref)
	if err != nil {
		return Image{}, err
	}
	if !RegistryAllowed(host, rules.Registries) {
		return Image{}, fmt.Errorf("%w: image %s is in registry %s, which this token may not pull from (allowed: %s); an operator can add it to --allowed-registries or import the image",
			errdefs.ErrPermissionDenied, ref, host, strings.Join(rules.Registries, ", "))
	}
	img, err := r.pull(ctx, c, ref, host, snapshotter, rules.Terse, progress)
	if err != nil {
		var pe *PullError
		if errors.As(err, &pe) && rules.Log != nil {
			rules.Log.Warn("image pull failed at the registry", "image", ref, "reported", pe.Error(), "cause", pe.Detail)
		}
		return Image{}, err
	}
	info, err := describe(ctx, img)
	info.Pulled = true
	return info, err
}

// PullRules bound the pulls made for one caller. The zero value, the
// operator's, allows every registry and reports failures in full.
type PullRules struct {
	// Registries are the hosts (host or host:port, as in image references)
	// a pull may contact; nil, or an entry "*", allows any.
	Registries []string
	// Terse reports a failed registry by class only (not found,
	// unauthorized, unreachable), so that pulls cannot probe which hosts
	// and ports answer and how.
	Terse bool
	// Log, if set, gets the cause of a registry failure.
	Log *slog.Logger
}

type pullRulesKey struct{}

// WithPullRules returns ctx whose pulls follow rules.
func WithPullRules(ctx context.Context, rules PullRules) context.Context {
	return context.WithValue(ctx, pullRulesKey{}, rules)
}

func pullRulesFrom(ctx context.Context) PullRules {
	rules, _ := ctx.Value(pullRulesKey{}).(PullRules)
	return rules
}

// RegistryHost is the registry (host or host:port) of an image reference,
// "docker.io" for Docker Hub's short names.
func RegistryHost(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("%w: image reference %q: %v", errdefs.ErrInvalidArgument, ref, err)
	}
	return reference.Domain(named), nil
}

// RegistryAllowed says whether host is in allowed (nil allows any, as does
// an entry "*"). Hosts compare without regard to case; a port must match.
func RegistryAllowed(host string, allowed []string) bool {
	if allowed == nil {
		return true
	}
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(a, host) {
			return true
		}
	}
	return false
}

// PullError is a pull that failed at the registry. Its message is what the
// caller may see; Detail is the underlying failure, for berth's log.
type PullError struct {
	class  error
	msg    string
	Detail error
}

func (e *PullError) Error() string { return e.msg }
func (e *PullError) Unwrap() error { return e.class }

// pull fetches ref under a lease of its own. The image record is what keeps
// the content afterwards; if the pull fails or is cancelled, deleting the
// lease synchronously lets containerd's GC drop every blob it fetched.
func (r *Containerd) pull(ctx context.Context, c *containerd.Client, ref, host, snapshotter string, terse bool, progress func(PullProgress)) (containerd.Image, error) {
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
	hosts := config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(r.opts.RegistryConfigDir)})
	resolver := &resolveRecorder{Resolver: docker.NewResolver(docker.ResolverOptions{Hosts: hosts})}
	opts := []containerd.RemoteOpt{
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter),
		containerd.WithImageHandler(tracker.handler()),
	}
	if progress != nil {
		opts = append(opts, containerd.WithImageHandlerWrapper(tracker.landed(progress)))
	}
	img, err := c.Pull(ctx, ref, opts...)
	close(stop)
	wg.Wait()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("pull of %s cancelled: %w", ref, ctx.Err())
		}
		if rerr := resolver.failed(); rerr != nil {
			return nil, registryError(ctx, hosts, ref, host, terse, rerr)
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

	// sendMu orders reports from the ticker and from landed blobs; last is
	// the figure sent last, so that an unchanged one is not sent again.
	sendMu sync.Mutex
	last   PullProgress
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

// landed wraps the pull's handlers so that every blob of this image that
// lands in the content store is reported. The ticker in report alone is not
// enough: on a busy machine a whole download can pass between two ticks, and
// the client would see "resolving" and then "unpacked", never the bytes.
func (t *pullTracker) landed(progress func(PullProgress)) func(images.Handler) images.Handler {
	return func(h images.Handler) images.Handler {
		return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			children, err := h.Handle(ctx, desc)
			if err == nil && (images.IsLayerType(desc.MediaType) || images.IsConfigType(desc.MediaType)) {
				t.send(ctx, progress)
			}
			return children, err
		})
	}
}

// report sends the figures every progressInterval until stop, so that a
// large blob shows its bytes arriving.
func (t *pullTracker) report(ctx context.Context, stop <-chan struct{}, progress func(PullProgress)) {
	tick := time.NewTicker(progressInterval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.send(ctx, progress)
	}
}

// send reports the current figures if they changed since the last report.
func (t *pullTracker) send(ctx context.Context, progress func(PullProgress)) {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	done, total, layers, layersDone := t.totals(ctx)
	p := PullProgress{Phase: "downloading", Done: done, Total: total, Layers: layers, LayersDone: layersDone}
	if total > 0 && done == total {
		p.Phase = "unpacking"
	}
	if p != t.last && total > 0 {
		progress(p)
		t.last = p
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
			info = Image{Name: img.Name(), Digest: img.Target().Digest.String(), CreatedAt: img.Metadata().CreatedAt, Labels: img.Labels()}
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Image describes the image named ref.
func (r *Containerd) Image(ctx context.Context, ref string) (Image, error) {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return Image{}, err
	}
	img, err := c.GetImage(ctx, ref)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, r.wrap(err))
	}
	info, err := describe(ctx, img)
	if err != nil {
		info = Image{Name: img.Name(), Digest: img.Target().Digest.String(), CreatedAt: img.Metadata().CreatedAt, Labels: img.Labels()}
	}
	return info, nil
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
		Labels:    img.Labels(),
	}, nil
}

// resolveRecorder keeps the error of resolving the reference: the first
// contact with the registry, whose failure is the registry's to explain
// (and, for a terse caller, to hide), unlike containerd's own failures.
type resolveRecorder struct {
	remotes.Resolver
	mu  sync.Mutex
	err error
}

func (r *resolveRecorder) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	name, desc, err := r.Resolver.Resolve(ctx, ref)
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
	return name, desc, err
}

func (r *resolveRecorder) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// registryError explains a failed resolution of ref at host. A caller that
// is not told details learns only "not found" or "unauthorized" from a
// host that answers like a registry, and one message for everything else:
// a closed port, a TLS mismatch and a web server that is not a registry
// must look alike, or pulls would map the network behind berth.
func registryError(ctx context.Context, hosts docker.RegistryHosts, ref, host string, terse bool, err error) error {
	unreachable := &PullError{class: errdefs.ErrUnavailable, Detail: err,
		msg: fmt.Sprintf("pull %s: registry %s is unreachable or not a registry", ref, host)}
	var class error
	var msg string
	var status remoteerrors.ErrUnexpectedStatus
	switch {
	case errdefs.IsNotFound(err):
		class, msg = errdefs.ErrNotFound, fmt.Sprintf("pull %s: image not found in registry %s", ref, host)
	case errors.Is(err, docker.ErrInvalidAuthorization),
		errors.As(err, &status) && (status.StatusCode == http.StatusUnauthorized || status.StatusCode == http.StatusForbidden):
		class, msg = errdefs.ErrPermissionDenied, fmt.Sprintf("pull %s: registry %s refused access (unauthorized): the image may not exist or may need credentials in berth's registry config", ref, host)
	case errors.As(err, &status):
		class, msg = errdefs.ErrUnavailable, fmt.Sprintf("pull %s: registry %s answered %s", ref, host, status.Status)
	default:
		if terse {
			return unreachable
		}
		return &PullError{class: errdefs.ErrUnavailable, Detail: err, msg: fmt.Sprintf("pull %s: registry %s is unreachable: %v", ref, host, err)}
	}
	if !terse {
		return &PullError{class: class, Detail: err, msg: msg + ": " + err.Error()}
	}
	if !isRegistry(ctx, hosts, host) {
		return unreachable
	}
	return &PullError{class: class, Detail: err, msg: msg}
}

// isRegistry says whether host answers GET /v2/ as registries do: with the
// Docker-Distribution-API-Version header that Docker Hub, GHCR, Quay,
// Artifact Registry, ACR, ECR and the distribution registry all send.
func isRegistry(ctx context.Context, hosts docker.RegistryHosts, host string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rhosts, err := hosts(host)
	if err != nil {
		return false
	}
	for _, h := range rhosts {
		u := url.URL{Scheme: h.Scheme, Host: h.Host, Path: strings.TrimSuffix(h.Path, "/") + "/"}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			continue
		}
		client := h.Client
		if client == nil {
			client = http.DefaultClient
		}
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.Header.Get("Docker-Distribution-API-Version") != "" {
			return true
		}
	}
	return false
}
