package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
)

func TestImportBusyboxAndRun(t *testing.T) {
	c := Client(t)
	ns := Namespace(t, c)
	ctx := namespaces.WithNamespace(t.Context(), ns)

	name := ImportArchive(t, ContainerdAddress(t), ns, BusyboxArchive(t))
	if name != BusyboxRef {
		t.Fatalf("imported image is named %q, want %q", name, BusyboxRef)
	}
	img, err := c.GetImage(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := img.IsUnpacked(ctx, Snapshotter); err != nil || !ok {
		t.Fatalf("image not unpacked for %s: %v", Snapshotter, err)
	}

	// The image must really run: a static busybox, its applets on PATH,
	// and a root account.
	out := run(ctx, t, c, img, "sh", "-c", "echo $PATH; id -un; ls -d /tmp")
	want := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nroot\n/tmp\n"
	if out != want {
		t.Errorf("container printed %q, want %q", out, want)
	}
}

func TestBusyboxArchiveIsCached(t *testing.T) {
	if a, b := BusyboxArchive(t), BusyboxArchive(t); a != b {
		t.Errorf("BusyboxArchive returned %s, then %s", a, b)
	}
}

func TestRegistryPush(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	ref := reg.PushArchive(t, BusyboxArchive(t), "berth/busybox:1")
	if want := reg.Host + "/berth/busybox:1"; ref != want {
		t.Errorf("PushArchive returned %q, want %q", ref, want)
	}

	c := Client(t)
	ns := Namespace(t, c)
	ctx := namespaces.WithNamespace(t.Context(), ns)
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(ctx, config.HostOptions{DefaultScheme: "http"}),
	})
	img, err := c.Pull(ctx, ref, client.WithResolver(resolver), client.WithPullUnpack, client.WithPullSnapshotter(Snapshotter))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if img.Name() != ref {
		t.Errorf("pulled image is named %q, want %q", img.Name(), ref)
	}
	if out := run(ctx, t, c, img, "echo", "pulled"); out != "pulled\n" {
		t.Errorf("container printed %q", out)
	}
}

// TestRegistryThrottleAndCancel pulls a multi-layer image from a slow
// registry that holds blob bytes after the first 64 KiB, cancels the pull
// once bytes flow, then pulls it at full speed. It uses containerd's default
// host configuration, which must reach a loopback registry over plain HTTP
// without being told to.
func TestRegistryThrottleAndCancel(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{BytesPerSecond: 64 << 10})
	ref := reg.PushRandomImage(t, "berth/big:1", 3, 1<<20)
	reg.HoldBlobs(64 << 10)

	c := Client(t)
	ns := Namespace(t, c)
	ctx := namespaces.WithNamespace(t.Context(), ns)
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(ctx, config.HostOptions{})})

	pullCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := c.Pull(pullCtx, ref, client.WithResolver(resolver))
		done <- err
	}()
	waitFor(t, func() bool { return reg.BlobBytesServed() > 0 })
	cancel()
	select {
	case err := <-done:
		// containerd 1.6 reports context.Canceled; with 2.x the content
		// stream breaks first and the client returns "failed to send
		// write: EOF". Either way the pull must fail.
		if err == nil {
			t.Fatal("cancelled pull succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("pull did not stop within 30s of its cancellation")
	}
	if served := reg.BlobBytesServed(); served > 64<<10 {
		t.Fatalf("the registry served %d bytes while it held all but the first 64 KiB", served)
	}

	reg.SetOptions(RegistryOptions{})
	reg.ReleaseBlobs()
	img, err := c.Pull(ctx, ref, client.WithResolver(resolver), client.WithPullUnpack, client.WithPullSnapshotter(Snapshotter))
	if err != nil {
		t.Fatalf("pull after lifting the throttle: %v", err)
	}
	layers, err := img.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 4 {
		t.Errorf("pulled image has %d layers, want busybox plus 3", len(layers))
	}
}

// TestRegistryBlobDelay holds blob downloads and releases them by lifting
// the delay, without containerd in the way.
func TestRegistryBlobDelay(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.PushArchive(t, BusyboxArchive(t), "berth/delay:1")
	manifest := reg.get(t, "/v2/berth/delay/manifests/1")
	var m struct {
		Config struct{ Digest string }
	}
	if err := json.Unmarshal(manifest, &m); err != nil || m.Config.Digest == "" {
		t.Fatalf("manifest %s: %v", manifest, err)
	}
	blob := "/v2/berth/delay/blobs/" + m.Config.Digest

	reg.SetOptions(RegistryOptions{BlobDelay: time.Hour})
	done := make(chan []byte, 1)
	go func() {
		resp, err := http.Get("http://" + reg.Host + blob)
		if err != nil {
			done <- nil
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- b
	}()
	waitFor(t, func() bool { return reg.BlobRequests() == 1 })
	if got := reg.get(t, "/v2/berth/delay/manifests/1"); !bytes.Equal(got, manifest) {
		t.Error("the blob delay held a manifest too")
	}
	select {
	case <-done:
		t.Fatal("a blob was served during an hour's delay")
	default:
	}

	reg.SetOptions(RegistryOptions{})
	select {
	case b := <-done:
		if len(b) == 0 {
			t.Error("the released download failed")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("lifting the delay did not release the waiting download")
	}
}

// TestRegistryOpenEndedRange checks the resumption request containerd makes
// after an interrupted download.
func TestRegistryOpenEndedRange(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	reg.PushArchive(t, BusyboxArchive(t), "berth/range:1")
	var m struct {
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal(reg.get(t, "/v2/berth/range/manifests/1"), &m); err != nil || len(m.Layers) == 0 {
		t.Fatalf("manifest: %v", err)
	}
	blob := "/v2/berth/range/blobs/" + m.Layers[0].Digest
	whole := reg.get(t, blob)

	req, _ := http.NewRequest(http.MethodGet, "http://"+reg.Host+blob, nil)
	req.Header.Set("Range", "bytes=100-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	tail, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(tail, whole[100:]) {
		t.Errorf("range bytes=100- of a %d-byte blob: %s, %d bytes", len(whole), resp.Status, len(tail))
	}
}

func (r *Registry) get(t *testing.T, path string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + r.Host + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", path, resp.Status, err)
	}
	return b
}

func TestUniqueNamespace(t *testing.T) {
	for _, name := range []string{"TestX", "TestY/sub_test#01", strings.Repeat("Long", 40), "///"} {
		ns := uniqueNamespace(name)
		if len(ns) > 76 || strings.Contains(ns, "--") || strings.HasSuffix(ns, "-") {
			t.Errorf("uniqueNamespace(%q) = %q, not a valid containerd namespace", name, ns)
		}
		if ns == uniqueNamespace(name) {
			t.Errorf("uniqueNamespace(%q) repeats %q", name, ns)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// run runs args in a fresh container from img and returns its output.
func run(ctx context.Context, t *testing.T, c *client.Client, img client.Image, args ...string) string {
	t.Helper()
	id := "run-" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
	ctr, err := c.NewContainer(ctx, id,
		client.WithSnapshotter(Snapshotter),
		client.WithNewSnapshot(id, img),
		client.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(args...)))
	if err != nil {
		t.Fatal(err)
	}
	defer ctr.Delete(context.WithoutCancel(ctx), client.WithSnapshotCleanup)

	// The shim writes the output to a file itself: with FIFOs copied by
	// the client, a starved client could still be opening them when the
	// task was deleted, and the output was lost.
	logPath := filepath.Join(t.TempDir(), "out.log")
	task, err := ctr.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		t.Fatal(err)
	}
	output := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}
	defer task.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-exited:
		if st.ExitCode() != 0 {
			t.Fatalf("%v exited with %d: %s", args, st.ExitCode(), output())
		}
	case <-time.After(time.Minute):
		t.Fatalf("%v did not exit within a minute", args)
	}
	// The shim has written all once the task is deleted.
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	return output()
}

// lockedBuffer takes stdout and stderr, which are copied by two goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
