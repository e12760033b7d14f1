package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// RegistryOptions slow down blob downloads, so that a test can watch a pull
// make progress and cancel it midway. Manifests and uploads are never slowed.
type RegistryOptions struct {
	// BytesPerSecond caps the rate of each blob download; 0 means no cap.
	BytesPerSecond int64
	// BlobDelay holds each blob download before its first byte. A long
	// delay lifted later with SetOptions works as a gate.
	BlobDelay time.Duration
}

// Registry is an in-memory OCI registry served over plain HTTP on loopback.
// containerd's default host configuration reaches it without TLS setup: for a
// loopback host with a port it tries HTTPS, then falls back to HTTP.
type Registry struct {
	// Host is the registry's "127.0.0.1:PORT".
	Host string

	srv      *httptest.Server
	closed   chan struct{}
	requests atomic.Int64
	served   atomic.Int64

	mu      sync.Mutex
	opts    RegistryOptions
	changed chan struct{} // closed and replaced by SetOptions, HoldBlobs and ReleaseBlobs
	// allowance is how many more blob bytes may be sent while the gate is
	// shut (held); held false means the gate is open.
	held      bool
	allowance int64
}

// StartRegistry serves a fresh registry until the test ends.
func StartRegistry(t testing.TB, opts RegistryOptions) *Registry {
	t.Helper()
	r := &Registry{opts: opts, closed: make(chan struct{}), changed: make(chan struct{})}
	handler := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(r.throttle(handler))
	r.Host = r.srv.Listener.Addr().String()
	t.Cleanup(func() {
		// Release throttled downloads first: Close waits for every
		// request in flight.
		close(r.closed)
		r.srv.CloseClientConnections()
		r.srv.Close()
	})
	return r
}

// SetOptions changes the throttle. Downloads in progress adopt it at once,
// and those held by BlobDelay wait for the new delay instead, so setting a
// long delay and then lifting it holds and releases a pull.
func (r *Registry) SetOptions(opts RegistryOptions) {
	r.mu.Lock()
	r.opts = opts
	r.broadcastLocked()
	r.mu.Unlock()
}

// HoldBlobs shuts a gate on blob bytes: n more bytes go out, counted over all
// downloads, then every blob download stops mid-body until ReleaseBlobs.
// Unlike a rate or a delay it does not depend on how fast the machine is: a
// test that holds a pull after its first bytes sees it midway for certain.
func (r *Registry) HoldBlobs(n int64) {
	r.mu.Lock()
	r.held, r.allowance = true, n
	r.broadcastLocked()
	r.mu.Unlock()
}

// ReleaseBlobs opens the gate HoldBlobs shut; held downloads go on at once.
func (r *Registry) ReleaseBlobs() {
	r.mu.Lock()
	r.held, r.allowance = false, 0
	r.broadcastLocked()
	r.mu.Unlock()
}

// broadcastLocked wakes every download waiting on a change. r.mu is held.
func (r *Registry) broadcastLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// take waits until the gate lets at least one byte through and returns how
// many of want it lets through now (all of them while the gate is open).
func (r *Registry) take(ctx context.Context, want int) (int, error) {
	for {
		r.mu.Lock()
		if !r.held {
			r.mu.Unlock()
			return want, nil
		}
		if r.allowance > 0 {
			n := int(min(int64(want), r.allowance))
			r.allowance -= int64(n)
			r.mu.Unlock()
			return n, nil
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-r.closed:
			return 0, errors.New("registry closed")
		}
	}
}

func (r *Registry) options() RegistryOptions {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opts
}

// BlobRequests counts the blob downloads requested so far, held or not. With
// BlobBytesServed it lets a test wait until a pull is under way instead of
// sleeping for a guessed time.
func (r *Registry) BlobRequests() int64 { return r.requests.Load() }

// BlobBytesServed counts the blob bytes sent so far.
func (r *Registry) BlobBytesServed() int64 { return r.served.Load() }

func (r *Registry) throttle(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet || !isBlobPath(req.URL.Path) {
			next.ServeHTTP(w, req)
			return
		}
		r.requests.Add(1)
		if !r.hold(req.Context()) {
			return
		}
		completeRange(next, req)
		next.ServeHTTP(&throttledWriter{ResponseWriter: w, r: r, ctx: req.Context()}, req)
	})
}

// hold waits out BlobDelay, counted from now, and re-reads it whenever
// SetOptions changes it: lifting the delay releases the waiting downloads. It
// reports false if the download should be abandoned.
func (r *Registry) hold(ctx context.Context) bool {
	start := time.Now()
	for {
		r.mu.Lock()
		delay, changed := r.opts.BlobDelay, r.changed
		r.mu.Unlock()
		wait := time.Until(start.Add(delay))
		if wait <= 0 {
			return true
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
			return true
		case <-changed:
			timer.Stop()
		case <-ctx.Done():
			timer.Stop()
			return false
		case <-r.closed:
			timer.Stop()
			return false
		}
	}
}

// completeRange rewrites an open-ended "bytes=N-" range, which containerd
// sends to resume an interrupted download, to "bytes=N-END": the in-memory
// registry only parses ranges with both ends and would answer 416.
func completeRange(next http.Handler, req *http.Request) {
	rng := req.Header.Get("Range")
	start, ok := strings.CutPrefix(rng, "bytes=")
	if !ok || !strings.HasSuffix(start, "-") || strings.Count(start, "-") != 1 {
		return
	}
	head := httptest.NewRecorder()
	next.ServeHTTP(head, httptest.NewRequestWithContext(req.Context(), http.MethodHead, req.URL.String(), nil))
	size, err := strconv.ParseInt(head.Header().Get("Content-Length"), 10, 64)
	if head.Code != http.StatusOK || err != nil || size == 0 {
		return // let the registry answer the request as it is
	}
	req.Header.Set("Range", fmt.Sprintf("%s%d", rng, size-1))
}

// isBlobPath matches /v2/NAME/blobs/DIGEST, not the upload endpoints.
func isBlobPath(p string) bool {
	dir, file := path.Split(p)
	return strings.HasPrefix(p, "/v2/") && path.Base(dir) == "blobs" && strings.Contains(file, ":")
}

type throttledWriter struct {
	http.ResponseWriter
	r   *Registry
	ctx context.Context
}

func (w *throttledWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		bps := w.r.options().BytesPerSecond
		chunk := len(p)
		var pause time.Duration
		if bps > 0 {
			// Ten writes a second keep the rate smooth enough for
			// progress reports without burning the CPU.
			chunk = min(chunk, max(int(bps/10), 1))
		}
		allowed, err := w.r.take(w.ctx, chunk)
		if err != nil {
			return written, err
		}
		chunk = allowed
		if bps > 0 {
			pause = time.Duration(int64(chunk) * int64(time.Second) / bps)
		}
		n, err := w.ResponseWriter.Write(p[:chunk])
		written += n
		w.r.served.Add(int64(n))
		if err != nil {
			return written, err
		}
		p = p[chunk:]
		// Flushed bytes reach the client even if the gate now holds the
		// rest of this body.
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		if pause == 0 {
			continue
		}
		timer := time.NewTimer(pause)
		select {
		case <-timer.C:
		case <-w.ctx.Done():
			timer.Stop()
			return written, w.ctx.Err()
		case <-w.r.closed:
			timer.Stop()
			return written, errors.New("registry closed")
		}
	}
	return written, nil
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *throttledWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Ref returns the full reference of repoTag ("repo:tag") in this registry.
func (r *Registry) Ref(repoTag string) string {
	return r.Host + "/" + repoTag
}

// PushArchive pushes the (first) image of the OCI archive at archivePath as
// repoTag and returns its full reference, "127.0.0.1:PORT/repo:tag".
func (r *Registry) PushArchive(t testing.TB, archivePath, repoTag string) string {
	t.Helper()
	img, err := archiveImage(archivePath, t.TempDir())
	if err != nil {
		t.Fatalf("read image from %s: %v", archivePath, err)
	}
	return r.push(t, img, repoTag)
}

// PushRandomImage pushes the busybox test image with layers extra layers of
// layerSize random (incompressible) bytes each, so that pulling it takes
// several blobs and shows progress, and returns its full reference.
func (r *Registry) PushRandomImage(t testing.TB, repoTag string, layers int, layerSize int64) string {
	t.Helper()
	img, err := archiveImage(BusyboxArchive(t), t.TempDir())
	if err != nil {
		t.Fatalf("read busybox image: %v", err)
	}
	extra := make([]v1.Layer, layers)
	for i := range extra {
		if extra[i], err = random.Layer(layerSize, types.OCILayer); err != nil {
			t.Fatalf("random layer: %v", err)
		}
	}
	if img, err = mutate.AppendLayers(img, extra...); err != nil {
		t.Fatalf("append layers: %v", err)
	}
	return r.push(t, img, repoTag)
}

func (r *Registry) push(t testing.TB, img v1.Image, repoTag string) string {
	t.Helper()
	tag, err := name.NewTag(r.Ref(repoTag), name.Insecure)
	if err != nil {
		t.Fatalf("image reference %q: %v", repoTag, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.pushImage(ctx, tag.RepositoryStr(), tag.TagStr(), img); err != nil {
		t.Fatalf("push %s: %v", tag, err)
	}
	return tag.String()
}

// pushImage uploads img's blobs and then its manifest with the registry API.
// It speaks HTTP itself because go-containerregistry's remote package drags in
// Docker's credential helpers, which berth's module does not otherwise need.
func (r *Registry) pushImage(ctx context.Context, repo, tag string, img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		err = r.uploadBlob(ctx, repo, d, size, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := r.uploadBlob(ctx, repo, cfgName, int64(len(cfg)), bytes.NewReader(cfg)); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	mediaType, err := img.MediaType()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut,
		r.srv.URL+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(manifest))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", string(mediaType))
	return r.do(req, http.StatusCreated)
}

// uploadBlob uses the single-request upload (POST with the digest).
func (r *Registry) uploadBlob(ctx context.Context, repo string, d v1.Hash, size int64, body io.Reader) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		r.srv.URL+"/v2/"+repo+"/blobs/uploads/?digest="+url.QueryEscape(d.String()), body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	return r.do(req, http.StatusCreated)
}

func (r *Registry) do(req *http.Request, want int) error {
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// archiveImage unpacks an OCI archive into dir and opens its first image.
func archiveImage(archivePath, dir string) (v1.Image, error) {
	if err := untarLayout(archivePath, dir); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) == 0 {
		return nil, errors.New("index.json lists no image")
	}
	return idx.Image(m.Manifests[0].Digest)
}

// untarLayout extracts the files and directories of an OCI layout archive.
// The archive is our own, but a name that climbs out of dir is still refused.
func untarLayout(archivePath, dir string) error {
	f, err := os.Open(archivePath)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if !filepath.IsLocal(hdr.Name) {
			return fmt.Errorf("archive entry %q leaves the layout", hdr.Name)
		}
		target := filepath.Join(dir, hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.Create(target)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}
