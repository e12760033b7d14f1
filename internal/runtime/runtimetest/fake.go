// Package runtimetest holds what tests of berth need of the runtime
// boundary: Suite, the behaviour every runtime.Runtime shares (run against
// containerd and against Fake), and Fake, an in-memory runtime that passes
// it, so the layers above get fast tests of their orchestration.
//
// It is for tests only. Fake runs no processes and keeps no files: it
// models records (images, containers, tasks, snapshots and their labels
// and parent chains) and the errdefs classes of their errors, nothing more.
// What Suite does not state, Fake does not promise.
package runtimetest

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/containerd/errdefs"
)

// Labels containerd puts on the snapshots runtime.Containerd commits; Fake
// puts the same, so callers see the same records.
const labelGCRoot = "containerd.io/gc.root"

// Fake is an in-memory runtime.Runtime. The zero value is not usable; call
// NewFake.
type Fake struct {
	mu         sync.Mutex
	images     map[string]*fakeImage
	registry   map[string]*fakeImage
	containers map[string]*fakeContainer
	snaps      map[string]map[string]*fakeSnap // snapshotter → key → snapshot
	devices    map[string]bool
	nextPID    uint32
	lastTime   time.Time
	hook       func(op, id string) error
}

type fakeImage struct {
	rec runtime.Image
	env []string
}

type fakeContainer struct {
	spec    runtime.ContainerSpec
	labels  map[string]string
	created time.Time
	task    *fakeTask
	env     []string
}

type fakeTask struct {
	pid    uint32
	status runtime.TaskStatus
	exit   uint32
}

type fakeSnap struct {
	key, parent string
	// base is the last version taken of an active snapshot: the next one
	// builds on it, as on overlayfs.
	base      string
	committed bool
	labels    map[string]string
	created   time.Time
}

var _ runtime.Runtime = (*Fake)(nil)

// NewFake returns an empty in-memory runtime.
func NewFake() *Fake {
	return &Fake{
		images:     map[string]*fakeImage{},
		registry:   map[string]*fakeImage{},
		containers: map[string]*fakeContainer{},
		snaps:      map[string]map[string]*fakeSnap{},
		devices:    map[string]bool{},
		nextPID:    100,
	}
}

// DefaultSnapshotter is the snapshotter AddImage unpacks for.
const DefaultSnapshotter = "overlayfs"

// AddImage makes an image named ref present and unpacked for
// DefaultSnapshotter, as an import would, with env as its configured
// environment.
func (f *Fake) AddImage(ref string, env ...string) runtime.Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	img := f.newImage(ref, nil, env)
	f.images[ref] = img
	f.unpack(img, DefaultSnapshotter)
	return img.rec
}

// AddRegistryImage makes ref pullable: EnsureImage finds it in the fake's
// registry when the image is not present (or the policy is always).
func (f *Fake) AddRegistryImage(ref string, env ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registry[ref] = f.newImage(ref, nil, env)
}

// AddDevices makes CDI device names injectable.
func (f *Fake) AddDevices(names ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range names {
		f.devices[n] = true
	}
}

// SetHook makes every operation first call hook with the operation's name
// (the Runtime method's) and the container id or image ref it is about
// (empty when none). An error from hook fails the operation before it does
// anything, which is how tests make a step fail. nil removes the hook.
func (f *Fake) SetHook(hook func(op, id string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = hook
}

// Exit ends the container's process as a crash or the OOM killer would:
// its task remains, stopped, with the exit status code.
func (f *Fake) Exit(id string, code uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.containers[id]
	if c == nil {
		return fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if c.task == nil || c.task.status == runtime.TaskStopped {
		return fmt.Errorf("%w: container %s has no running task", errdefs.ErrFailedPrecondition, id)
	}
	c.task.status = runtime.TaskStopped
	c.task.exit = code
	return nil
}

// call runs the hook for op and takes the lock; the caller defers f.mu.Unlock.
func (f *Fake) call(op, id string) error {
	f.mu.Lock()
	hook := f.hook
	f.mu.Unlock()
	if hook != nil {
		if err := hook(op, id); err != nil {
			return err
		}
	}
	f.mu.Lock()
	return nil
}

// now is strictly increasing, so records made one after the other sort in
// that order, as they do in containerd.
func (f *Fake) now() time.Time {
	t := time.Now().UTC()
	if !t.After(f.lastTime) {
		t = f.lastTime.Add(time.Microsecond)
	}
	f.lastTime = t
	return t
}

func (f *Fake) newImage(ref string, labels map[string]string, env []string) *fakeImage {
	sum := sha256.Sum256([]byte(ref + "\x00" + strconv.FormatInt(f.now().UnixNano(), 10)))
	return &fakeImage{
		rec: runtime.Image{
			Name: ref, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: 1 << 20,
			CreatedAt: f.now(), Labels: maps.Clone(labels),
		},
		env: slices.Clone(env),
	}
}

func copyImage(img *fakeImage) runtime.Image {
	out := img.rec
	out.Labels = maps.Clone(img.rec.Labels)
	return out
}

// layerKey is the committed snapshot an image's containers build on, as an
// unpacked image's top layer is in containerd.
func layerKey(img *fakeImage) string { return "layer-" + strings.TrimPrefix(img.rec.Digest, "sha256:") }

// unpack makes the image's layer snapshot in snapshotter.
func (f *Fake) unpack(img *fakeImage, snapshotter string) string {
	key := layerKey(img)
	sn := f.snapshotter(snapshotter)
	if sn[key] == nil {
		sn[key] = &fakeSnap{key: key, committed: true, labels: map[string]string{}, created: f.now()}
	}
	return key
}

func (f *Fake) snapshotter(name string) map[string]*fakeSnap {
	if f.snaps[name] == nil {
		f.snaps[name] = map[string]*fakeSnap{}
	}
	return f.snaps[name]
}

func notFound(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errdefs.ErrNotFound)
}

// Ping answers.
func (f *Fake) Ping(context.Context) error {
	if err := f.call("Ping", ""); err != nil {
		return err
	}
	f.mu.Unlock()
	return nil
}

// EnsureImage finds ref present or, as policy allows, in the fake registry.
func (f *Fake) EnsureImage(ctx context.Context, ref string, policy runtime.PullPolicy, snapshotter string, progress func(runtime.PullProgress)) (runtime.Image, error) {
	if err := f.call("EnsureImage", ref); err != nil {
		return runtime.Image{}, err
	}
	defer f.mu.Unlock()
	if img := f.images[ref]; img != nil && policy != runtime.PullAlways {
		f.unpack(img, snapshotter)
		return copyImage(img), nil
	}
	if policy == runtime.PullNever {
		return runtime.Image{}, fmt.Errorf("%w: image %s is not present and pull policy is never", errdefs.ErrNotFound, ref)
	}
	if err := ctx.Err(); err != nil {
		return runtime.Image{}, err
	}
	src := f.registry[ref]
	if src == nil {
		return runtime.Image{}, notFound("pull %s: not in the registry", ref)
	}
	if progress != nil {
		progress(runtime.PullProgress{Phase: "resolving"})
		progress(runtime.PullProgress{Phase: "downloading", Done: src.rec.Size, Total: src.rec.Size, Layers: 1, LayersDone: 1})
	}
	img := &fakeImage{rec: copyImage(src), env: slices.Clone(src.env)}
	f.images[ref] = img
	f.unpack(img, snapshotter)
	out := copyImage(img)
	out.Pulled = true
	return out, nil
}

// ImportImages reads the image names of an OCI archive's index.json, as
// containerd names imported images; no layer is read.
func (f *Fake) ImportImages(_ context.Context, archive io.Reader, snapshotter, name string) ([]runtime.Image, error) {
	if err := f.call("ImportImages", name); err != nil {
		return nil, err
	}
	f.mu.Unlock()
	names, err := archiveNames(archive, name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []runtime.Image
	for _, n := range names {
		img := f.images[n]
		if img == nil {
			img = f.newImage(n, nil, nil)
			f.images[n] = img
		}
		f.unpack(img, snapshotter)
		out = append(out, copyImage(img))
	}
	return out, nil
}

func archiveNames(archive io.Reader, name string) ([]string, error) {
	tr := tar.NewReader(archive)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the archive has no index.json", errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: read archive: %v", errdefs.ErrInvalidArgument, err)
		}
		if strings.TrimPrefix(h.Name, "./") != "index.json" {
			continue
		}
		var index struct {
			Manifests []struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&index); err != nil {
			return nil, fmt.Errorf("%w: index.json: %v", errdefs.ErrInvalidArgument, err)
		}
		var names []string
		for _, m := range index.Manifests {
			n := m.Annotations["io.containerd.image.name"]
			if n == "" {
				n = m.Annotations["org.opencontainers.image.ref.name"]
			}
			if n == "" && name != "" {
				n = name
			}
			if n != "" {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("%w: the archive holds no named image; pass a name for it", errdefs.ErrInvalidArgument)
		}
		return names, nil
	}
}

// ListImages lists the images, sorted by name.
func (f *Fake) ListImages(context.Context) ([]runtime.Image, error) {
	if err := f.call("ListImages", ""); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	out := make([]runtime.Image, 0, len(f.images))
	for _, img := range f.images {
		out = append(out, copyImage(img))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Image describes the image named ref.
func (f *Fake) Image(_ context.Context, ref string) (runtime.Image, error) {
	if err := f.call("Image", ref); err != nil {
		return runtime.Image{}, err
	}
	defer f.mu.Unlock()
	img := f.images[ref]
	if img == nil {
		return runtime.Image{}, notFound("image %s", ref)
	}
	return copyImage(img), nil
}

// DeleteImage removes the image record; containers made from it remain.
func (f *Fake) DeleteImage(_ context.Context, ref string) error {
	if err := f.call("DeleteImage", ref); err != nil {
		return err
	}
	defer f.mu.Unlock()
	if f.images[ref] == nil {
		return notFound("delete image %s", ref)
	}
	delete(f.images, ref)
	return nil
}

// CreateContainer records a container with a writable layer on its image,
// which must be unpacked for the spec's snapshotter (EnsureImage,
// ImportImages), as containerd needs.
func (f *Fake) CreateContainer(_ context.Context, spec runtime.ContainerSpec) error {
	if err := f.call("CreateContainer", spec.ID); err != nil {
		return err
	}
	defer f.mu.Unlock()
	img := f.images[spec.Image]
	if img == nil {
		return notFound("image %s", spec.Image)
	}
	if f.snapshotter(spec.Snapshotter)[layerKey(img)] == nil {
		return notFound("create container %s: image %s is not unpacked for %s", spec.ID, spec.Image, spec.Snapshotter)
	}
	return f.newContainer(spec, img, layerKey(img))
}

// CreateContainerFromSnapshot records a container whose writable layer is
// on the committed snapshot parentKey.
func (f *Fake) CreateContainerFromSnapshot(_ context.Context, spec runtime.ContainerSpec, parentKey string) error {
	if err := f.call("CreateContainerFromSnapshot", spec.ID); err != nil {
		return err
	}
	defer f.mu.Unlock()
	if parentKey == "" {
		return fmt.Errorf("%w: parent snapshot key is required", errdefs.ErrInvalidArgument)
	}
	parent := f.snapshotter(spec.Snapshotter)[parentKey]
	if parent == nil {
		return notFound("snapshot %s", parentKey)
	}
	if !parent.committed {
		return fmt.Errorf("%w: snapshot %s is not committed", errdefs.ErrInvalidArgument, parentKey)
	}
	img := f.images[spec.Image]
	if img == nil {
		return notFound("image %s", spec.Image)
	}
	return f.newContainer(spec, img, parentKey)
}

func (f *Fake) newContainer(spec runtime.ContainerSpec, img *fakeImage, parent string) error {
	for _, d := range spec.Devices {
		if !f.devices[d] {
			return fmt.Errorf("%w: unknown CDI device %s", errdefs.ErrInvalidArgument, d)
		}
	}
	if f.containers[spec.ID] != nil {
		return fmt.Errorf("%w: container %s already exists", errdefs.ErrAlreadyExists, spec.ID)
	}
	sn := f.snapshotter(spec.Snapshotter)
	if sn[spec.ID] != nil {
		return fmt.Errorf("%w: snapshot %s already exists", errdefs.ErrAlreadyExists, spec.ID)
	}
	sn[spec.ID] = &fakeSnap{key: spec.ID, parent: parent, labels: map[string]string{}, created: f.now()}
	env := append(slices.Clone(img.env), spec.Env...)
	if spec.RunAsRoot {
		env = append(env, runtime.ImageUserEnv+"=0:0")
	}
	labels := cleanLabels(spec.Labels, nil)
	spec.Labels, spec.Args = nil, slices.Clone(spec.Args)
	f.containers[spec.ID] = &fakeContainer{spec: spec, labels: labels, created: f.now(), env: env}
	return nil
}

// cleanLabels merges set into base, dropping empty values as containerd does.
func cleanLabels(base, set map[string]string) map[string]string {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	for k, v := range set {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func (f *Fake) container(id string) (*fakeContainer, error) {
	c := f.containers[id]
	if c == nil {
		return nil, notFound("container %q", id)
	}
	return c, nil
}

// CheckDevices reports the names AddDevices did not make injectable.
func (f *Fake) CheckDevices(names []string) error {
	if err := f.call("CheckDevices", ""); err != nil {
		return err
	}
	defer f.mu.Unlock()
	var unknown []string
	for _, n := range names {
		if !f.devices[n] {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("%w: unknown CDI device(s) %v", errdefs.ErrInvalidArgument, unknown)
	}
	return nil
}

// StartTask starts a task with a new pid, replacing a stopped one; a
// running task is left alone. logPath is created, as containerd's log
// file is.
func (f *Fake) StartTask(_ context.Context, id, logPath string) (uint32, error) {
	if err := f.call("StartTask", id); err != nil {
		return 0, err
	}
	defer f.mu.Unlock()
	c, err := f.container(id)
	if err != nil {
		return 0, err
	}
	if c.task != nil && (c.task.status == runtime.TaskRunning || c.task.status == runtime.TaskPaused) {
		return c.task.pid, nil
	}
	if f.snapshotter(c.spec.Snapshotter)[id] == nil {
		return 0, fmt.Errorf("%w: container %s has no writable layer", errdefs.ErrFailedPrecondition, id)
	}
	if logPath != "" {
		lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return 0, fmt.Errorf("create task: %w", err)
		}
		lf.Close()
	}
	f.nextPID++
	c.task = &fakeTask{pid: f.nextPID, status: runtime.TaskRunning}
	return c.task.pid, nil
}

// StopTask ends and removes the task; a container without one is left as
// it is.
func (f *Fake) StopTask(ctx context.Context, id string, _ time.Duration) error {
	if err := f.call("StopTask", id); err != nil {
		return err
	}
	defer f.mu.Unlock()
	c, err := f.container(id)
	if err != nil {
		return err
	}
	c.task = nil
	return nil
}

// DeleteContainer removes the container, its task and its writable layer.
func (f *Fake) DeleteContainer(_ context.Context, id string) error {
	if err := f.call("DeleteContainer", id); err != nil {
		return err
	}
	defer f.mu.Unlock()
	c, err := f.container(id)
	if err != nil {
		return err
	}
	delete(f.snapshotter(c.spec.Snapshotter), id)
	delete(f.containers, id)
	return nil
}

func (f *Fake) describe(id string, c *fakeContainer) runtime.Container {
	out := runtime.Container{
		ID: id, Image: c.spec.Image, Snapshotter: c.spec.Snapshotter,
		Labels: maps.Clone(c.labels), CreatedAt: c.created, Status: runtime.TaskNone,
	}
	if c.task != nil {
		out.Status, out.PID, out.ExitStatus = c.task.status, c.task.pid, c.task.exit
	}
	return out
}

// Container describes one container and the state of its task.
func (f *Fake) Container(_ context.Context, id string) (runtime.Container, error) {
	if err := f.call("Container", id); err != nil {
		return runtime.Container{}, err
	}
	defer f.mu.Unlock()
	c, err := f.container(id)
	if err != nil {
		return runtime.Container{}, err
	}
	return f.describe(id, c), nil
}

// Containers lists the containers that carry labelKey, by id.
func (f *Fake) Containers(_ context.Context, labelKey string) ([]runtime.Container, error) {
	if err := f.call("Containers", ""); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	out := []runtime.Container{}
	for _, id := range slices.Sorted(maps.Keys(f.containers)) {
		c := f.containers[id]
		if _, ok := c.labels[labelKey]; ok {
			out = append(out, f.describe(id, c))
		}
	}
	return out, nil
}

// SetLabels sets labels on the container; an empty value removes one.
func (f *Fake) SetLabels(_ context.Context, id string, labels map[string]string) error {
	if err := f.call("SetLabels", id); err != nil {
		return err
	}
	defer f.mu.Unlock()
	c, err := f.container(id)
	if err != nil {
		return err
	}
	c.labels = cleanLabels(c.labels, labels)
	return nil
}

// SetNetwork records n as the container's network from its next start.
func (f *Fake) SetNetwork(_ context.Context, id string, n runtime.Network) error {
	if err := f.call("SetNetwork", id); err != nil {
		return err
	}
	defer f.mu.Unlock()
	if err := n.Validate(); err != nil {
		return err
	}
	c, err := f.container(id)
	if err != nil {
		return err
	}
	c.spec.Network = n
	return nil
}

// NetworkOf is the network the container's spec holds, for tests of its
// callers (containerd keeps it in the OCI spec, out of runtime.Container).
func (f *Fake) NetworkOf(id string) (runtime.Network, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return runtime.Network{}, false
	}
	return c.spec.Network, true
}

// ProcessEnv is the image's environment, then the spec's.
func (f *Fake) ProcessEnv(_ context.Context, id string) ([]string, error) {
	if err := f.call("ProcessEnv", id); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	c, err := f.container(id)
	if err != nil {
		return nil, err
	}
	return slices.Clone(c.env), nil
}

// Stats are zero counters of a task that exists.
func (f *Fake) Stats(_ context.Context, id string) (runtime.Stats, error) {
	if err := f.call("Stats", id); err != nil {
		return runtime.Stats{}, err
	}
	defer f.mu.Unlock()
	c, err := f.container(id)
	if err != nil {
		return runtime.Stats{}, err
	}
	if c.task == nil {
		return runtime.Stats{}, notFound("no running task found: task %s", id)
	}
	return runtime.Stats{At: time.Now(), Pids: 1}, nil
}

// StorageUsage is zero: Fake keeps no files.
func (f *Fake) StorageUsage(_ context.Context, id string) (int64, error) {
	if err := f.call("StorageUsage", id); err != nil {
		return 0, err
	}
	defer f.mu.Unlock()
	if _, err := f.container(id); err != nil {
		return 0, err
	}
	return 0, nil
}

// SnapshotContainer commits the container's writable layer as key, a
// sibling of the layer (on the same parent), as runtime.Containerd does.
func (f *Fake) SnapshotContainer(_ context.Context, id, key string, labels map[string]string) (runtime.SnapshotInfo, time.Duration, error) {
	if err := f.call("SnapshotContainer", id); err != nil {
		return runtime.SnapshotInfo{}, 0, err
	}
	defer f.mu.Unlock()
	if key == "" {
		return runtime.SnapshotInfo{}, 0, fmt.Errorf("%w: snapshot key is required", errdefs.ErrInvalidArgument)
	}
	c, err := f.container(id)
	if err != nil {
		return runtime.SnapshotInfo{}, 0, err
	}
	sn := f.snapshotter(c.spec.Snapshotter)
	active := sn[id]
	if active == nil {
		return runtime.SnapshotInfo{}, 0, fmt.Errorf("%w: container %s has no writable layer", errdefs.ErrFailedPrecondition, id)
	}
	if sn[key] != nil {
		return runtime.SnapshotInfo{}, 0, fmt.Errorf("%w: snapshot %s already exists", errdefs.ErrAlreadyExists, key)
	}
	all := maps.Clone(labels)
	if all == nil {
		all = map[string]string{}
	}
	now := f.now()
	all[labelGCRoot] = now.Format(time.RFC3339)
	all[runtime.LabelSnapshotLayer] = "1024"
	parent := active.parent
	if b := sn[active.base]; b != nil && b.committed {
		parent = b.key
	}
	s := &fakeSnap{key: key, parent: parent, committed: true, labels: all, created: now}
	sn[key] = s
	active.base = key
	return snapInfo(s), 0, nil
}

func snapInfo(s *fakeSnap) runtime.SnapshotInfo {
	out := runtime.SnapshotInfo{
		Key: s.key, Parent: s.parent, Labels: maps.Clone(s.labels), Created: s.created,
	}
	out.LayerSize, _ = strconv.ParseInt(s.labels[runtime.LabelSnapshotLayer], 10, 64)
	out.Size = out.LayerSize
	return out
}

// ListSnapshots lists the committed snapshots SnapshotContainer made that
// carry labelKey=labelValue (all of them when labelKey is empty), oldest
// first.
func (f *Fake) ListSnapshots(_ context.Context, snapshotter, labelKey, labelValue string) ([]runtime.SnapshotInfo, error) {
	if err := f.call("ListSnapshots", ""); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	out := []runtime.SnapshotInfo{}
	for _, s := range f.snapshotter(snapshotter) {
		if !s.committed || s.labels[runtime.LabelSnapshotLayer] == "" {
			continue
		}
		if labelKey != "" && s.labels[labelKey] != labelValue {
			continue
		}
		out = append(out, snapInfo(s))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// RollbackContainer puts the stopped container's writable layer on key,
// discarding the old one.
func (f *Fake) RollbackContainer(_ context.Context, id, key string) error {
	if err := f.call("RollbackContainer", id); err != nil {
		return err
	}
	defer f.mu.Unlock()
	c, err := f.container(id)
	if err != nil {
		return err
	}
	sn := f.snapshotter(c.spec.Snapshotter)
	if c.task != nil {
		if c.task.status != runtime.TaskStopped {
			return fmt.Errorf("%w: container %s is %s: stop it before rolling back", errdefs.ErrFailedPrecondition, id, c.task.status)
		}
		c.task = nil
	}
	target := sn[key]
	if target == nil {
		return notFound("snapshot %s", key)
	}
	if !target.committed {
		return fmt.Errorf("%w: snapshot %s is not a committed snapshot", errdefs.ErrInvalidArgument, key)
	}
	sn[id] = &fakeSnap{key: id, parent: key, labels: map[string]string{}, created: f.now()}
	return nil
}

// DeleteSnapshot removes a committed snapshot SnapshotContainer made,
// refusing while another snapshot or a writable layer builds on it.
func (f *Fake) DeleteSnapshot(_ context.Context, snapshotter, key string) error {
	if err := f.call("DeleteSnapshot", key); err != nil {
		return err
	}
	defer f.mu.Unlock()
	sn := f.snapshotter(snapshotter)
	s := sn[key]
	if s == nil {
		return notFound("snapshot %s", key)
	}
	if !s.committed || s.labels[runtime.LabelSnapshotLayer] == "" {
		return fmt.Errorf("%w: %s is not a snapshot made by berth", errdefs.ErrInvalidArgument, key)
	}
	var children []string
	for _, o := range sn {
		if o.parent == key {
			children = append(children, o.key)
		}
	}
	if len(children) > 0 {
		sort.Strings(children)
		return fmt.Errorf("%w: snapshot %s is the base of %s: delete those first", errdefs.ErrFailedPrecondition, key, strings.Join(children, ", "))
	}
	delete(sn, key)
	return nil
}

// ReconcileSnapshots has nothing to repair: Fake's operations are atomic.
func (f *Fake) ReconcileSnapshots(context.Context) error {
	if err := f.call("ReconcileSnapshots", ""); err != nil {
		return err
	}
	f.mu.Unlock()
	return nil
}

// DiffSnapshots checks its arguments as runtime.Containerd does and finds
// no change: Fake keeps no files.
func (f *Fake) DiffSnapshots(_ context.Context, snapshotter, fromKey, toKey string, page runtime.Page) (runtime.SnapshotDiff, error) {
	if err := f.call("DiffSnapshots", toKey); err != nil {
		return runtime.SnapshotDiff{}, err
	}
	defer f.mu.Unlock()
	if fromKey == "" || toKey == "" {
		return runtime.SnapshotDiff{}, fmt.Errorf("%w: both snapshot keys are required", errdefs.ErrInvalidArgument)
	}
	if page.Offset < 0 {
		return runtime.SnapshotDiff{}, fmt.Errorf("%w: negative offset %d", errdefs.ErrInvalidArgument, page.Offset)
	}
	sn := f.snapshotter(snapshotter)
	for _, k := range []string{fromKey, toKey} {
		if sn[k] == nil {
			return runtime.SnapshotDiff{}, notFound("snapshot %s", k)
		}
	}
	return runtime.SnapshotDiff{Changes: []runtime.Change{}}, nil
}

// ExportSnapshot names an image ref for the committed snapshot key on
// base, replacing an image of that name.
func (f *Fake) ExportSnapshot(_ context.Context, snapshotter, key, base, ref string, labels map[string]string) (runtime.Image, error) {
	if err := f.call("ExportSnapshot", ref); err != nil {
		return runtime.Image{}, err
	}
	defer f.mu.Unlock()
	s := f.snapshotter(snapshotter)[key]
	if s == nil {
		return runtime.Image{}, notFound("snapshot %s", key)
	}
	if !s.committed {
		return runtime.Image{}, fmt.Errorf("%w: snapshot %s is not committed", errdefs.ErrInvalidArgument, key)
	}
	b := f.images[base]
	if b == nil {
		return runtime.Image{}, notFound("image %s", base)
	}
	img := f.newImage(ref, labels, b.env)
	f.images[ref] = img
	return copyImage(img), nil
}
