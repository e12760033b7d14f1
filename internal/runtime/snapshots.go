package runtime

// Snapshots of running containers, and rollback.
//
// # What a snapshot is
//
// A snapshot is a committed containerd snapshot made from the container's
// writable layer (its active snapshot) without stopping the task:
//
//  1. what can be done while the task runs is: a read-only view of the
//     active snapshot's parent, its mounts, the manifest of the previous
//     version (see below);
//  2. the task is paused (cgroup freezer) only while what changed is read,
//     and resumed at once;
//  3. with the task running again, the changes become an uncompressed OCI
//     layer (ocispec.MediaTypeImageLayer), which is applied onto a new
//     active snapshot that is then committed under the caller's key.
//
// On overlayfs (snapshot_upper.go), step 2 walks the active snapshot's
// upper directory and copies only the entries that changed since the last
// version taken of it, and the layer is applied on that version: a version
// holds what changed since the previous one. Anywhere else (another
// snapshotter, overlay features the upper directory cannot be read without,
// the first version of a writable layer), the diff service compares the
// whole writable layer with its parent while the task is paused, and the
// layer is applied on that parent.
//
// The layer is not kept once applied: the snapshot holds the same files,
// and a second copy would double what each version costs. Export computes
// layers from the snapshots (snapshot_export.go).
//
// # Parent chain
//
// Versions of one writable layer build on each other. A fresh container's
// active snapshot sits on the image's top layer:
//
//	image top ← v1 ← v2 ← v3, and image top ← active
//
// RollbackContainer to v2 prepares a new active snapshot on v2; its first
// version holds everything written since, on v2, and later ones build on
// that:
//
//	image top ← v1 ← v2 ← active, then v2 ← v4 ← v5
//
// A snapshot cannot be deleted while it is the parent of another snapshot
// (committed or active), so v1 stays while v2, or a container rolled back
// or forked on it, needs it (DeleteSnapshot says so with
// errdefs.ErrFailedPrecondition).
//
// # Garbage collection and crashes
//
// Committed snapshots carry "containerd.io/gc.root", so containerd's
// garbage collector keeps them (versions made before layers stopped being
// kept also reference theirs). Everything else a snapshot makes (the
// parent view, the layer, the snapshot the layer is applied to, the new
// manifest until the active snapshot's label references it) is made under
// a lease that expires after leaseExpiry and is deleted when the operation
// ends. The committed snapshot is created by a single Commit that already
// carries the root label, after the layer is applied, so a berth killed at
// any point leaves either a complete snapshot or only leased objects,
// which the garbage collector removes once the lease is deleted
// (ReconcileSnapshots) or expires. The files copied while the task was
// paused sit in a stage directory beside the upper directory; the next
// snapshot of the container, or its deletion, removes a stage left behind.
//
// The one effect outside containerd's metadata is the paused task: berth
// labels the container (LabelSnapshotPaused) before pausing it and removes
// the label after resuming, so ReconcileSnapshots can resume a task that a
// killed berth left frozen.
//
// RollbackContainer keeps the container's old writable layer until the new
// one exists: it commits the old active snapshot (a metadata operation for
// overlayfs, no data is copied) under a hold name marked with
// LabelRollbackOf/LabelRollbackTo, prepares the new active snapshot under the
// container's snapshot key, and only then removes the hold. If berth dies
// in between, the container has no active snapshot until ReconcileSnapshots
// finishes the rollback (or, if the target snapshot is gone, restores the
// old layer on top of the hold).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Labels the runtime puts on snapshots, containers and leases.
const (
	snapshotLabelPrefix = "berth.dev/snapshot."

	// LabelSnapshotLayer marks a committed snapshot made by
	// SnapshotContainer; its value is the layer's size in bytes.
	LabelSnapshotLayer = snapshotLabelPrefix + "layer-size"
	// LabelSnapshotCompactedFrom marks a version that holds its whole
	// content on the image (see maxChainDepth); its value is the version
	// its changes were taken against, which stays its parent in the
	// lineage.
	LabelSnapshotCompactedFrom = snapshotLabelPrefix + "compacted-from"
	// LabelSnapshotPaused is on a container while SnapshotContainer has its
	// task paused; its value is the snapshot key.
	LabelSnapshotPaused = snapshotLabelPrefix + "paused"
	// LabelRollbackOf and LabelRollbackTo mark the snapshot that holds a
	// container's old writable layer while RollbackContainer replaces it.
	LabelRollbackOf = snapshotLabelPrefix + "rollback-of"
	LabelRollbackTo = snapshotLabelPrefix + "rollback-to"
	// labelSnapshotOp marks the leases of snapshot operations.
	labelSnapshotOp = snapshotLabelPrefix + "op"

	labelGCRoot = "containerd.io/gc.root"
	// labelLayerRef references the layer of a version made when versions
	// kept it (containerd.io/gc.ref.content[.name] = digest).
	labelLayerRef = "containerd.io/gc.ref.content.berth.layer"
)

// leaseExpiry bounds how long the leftovers of an interrupted snapshot
// survive when nobody runs ReconcileSnapshots. It must exceed the longest
// snapshot: an expired lease no longer protects an unfinished layer.
const leaseExpiry = 24 * time.Hour

// SnapshotInfo is one committed snapshot of a container's writable layer.
type SnapshotInfo struct {
	Key       string
	Parent    string // the snapshot it is stored on
	Labels    map[string]string
	Created   time.Time
	Size      int64 // disk usage of the committed snapshot itself, not its parents
	LayerSize int64 // bytes of the uncompressed layer it was made from
}

// Base is the snapshot whose content s's changes were taken against: its
// Parent, unless s was compacted.
func (s SnapshotInfo) Base() string {
	if b := s.Labels[LabelSnapshotCompactedFrom]; b != "" {
		return b
	}
	return s.Parent
}

// inflight holds the lease IDs and container IDs of snapshot operations
// this process is running, so ReconcileSnapshots leaves them alone.
var inflight sync.Map

// inflightKey names an object of this runtime's namespace in inflight.
func (r *Containerd) inflightKey(kind, id string) string {
	return r.opts.Namespace + "/" + kind + "/" + id
}

// SnapshotContainer commits the container's writable layer as snapshot key
// while its task keeps running; see the package notes above. labels are
// added to the snapshot (the caller's bot label, version, name). It returns
// how long the task was paused (zero when it was not running). The caller
// serializes operations on one container.
func (r *Containerd) SnapshotContainer(ctx context.Context, id, key string, labels map[string]string) (SnapshotInfo, time.Duration, error) {
	if key == "" {
		return SnapshotInfo{}, 0, fmt.Errorf("%w: snapshot key is required", errdefs.ErrInvalidArgument)
	}
	c, ctr, ctx, err := r.load(ctx, id)
	if err != nil {
		return SnapshotInfo{}, 0, err
	}
	info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return SnapshotInfo{}, 0, r.wrap(err)
	}
	if info.SnapshotKey == "" {
		return SnapshotInfo{}, 0, fmt.Errorf("%w: container %s has no writable layer", errdefs.ErrFailedPrecondition, id)
	}
	sn := c.SnapshotService(info.Snapshotter)
	active, err := sn.Stat(ctx, info.SnapshotKey)
	if err != nil {
		return SnapshotInfo{}, 0, fmt.Errorf("container %s writable layer: %w", id, r.wrap(err))
	}
	if _, err := sn.Stat(ctx, key); err == nil {
		return SnapshotInfo{}, 0, fmt.Errorf("%w: snapshot %s already exists", errdefs.ErrAlreadyExists, key)
	} else if !errdefs.IsNotFound(err) {
		return SnapshotInfo{}, 0, r.wrap(err)
	}

	ctx, done, err := r.snapshotLease(ctx, c, "snapshot", key)
	if err != nil {
		return SnapshotInfo{}, 0, err
	}
	ok := false
	defer func() { done(!ok) }()

	// Everything that can happen before the pause does.
	suffix := randomSuffix()
	lowerKey := key + ".lower-" + suffix
	lower, err := sn.View(ctx, lowerKey, active.Parent)
	if err != nil {
		return SnapshotInfo{}, 0, fmt.Errorf("view of the parent layer: %w", r.wrap(err))
	}
	defer r.removeQuietly(ctx, sn, lowerKey)
	upper, err := sn.Mounts(ctx, info.SnapshotKey)
	if err != nil {
		return SnapshotInfo{}, 0, fmt.Errorf("mounts of the writable layer: %w", r.wrap(err))
	}

	// On overlayfs, read only what changed in the upper directory since the
	// version the active snapshot's manifest describes (see
	// snapshot_upper.go); elsewhere, or when that cannot be done, the diff
	// service compares the whole writable layer with its parent.
	upperDir := overlayUpper(upper)
	var prev *upperManifest
	base := active.Parent
	if upperDir != "" {
		if b := active.Labels[labelUpperBase]; b != "" {
			if bi, err := sn.Stat(ctx, b); err == nil && bi.Kind == snapshots.KindCommitted {
				if m, err := loadUpperManifest(ctx, c.ContentStore(), active.Labels); err == nil && m != nil {
					prev, base = m, b
				}
			}
		}
	}
	stage := ""
	if upperDir != "" {
		// Next to the upper directory: the same filesystem, so copies can
		// share extents; it goes with the snapshot's directory should berth
		// die before removing it.
		// A berth killed mid-snapshot left its stage behind; operations on
		// one container are serialized, so any found now is such a one.
		if old, err := filepath.Glob(filepath.Join(filepath.Dir(upperDir), "berth-stage-*")); err == nil {
			for _, dir := range old {
				_ = os.RemoveAll(dir)
			}
		}
		stage = filepath.Join(filepath.Dir(upperDir), "berth-stage-"+suffix)
		if err := os.Mkdir(stage, 0o700); err != nil {
			upperDir = ""
		} else {
			defer os.RemoveAll(stage)
		}
	}
	var capt *upperCapture
	var desc ocispec.Descriptor
	ref := "berth-snapshot-" + key + "-" + suffix
	paused, err := r.runPaused(ctx, c, ctr, key, func() error {
		if upperDir != "" {
			var cerr error
			if capt, cerr = captureUpper(upperDir, stage, prev); cerr == nil {
				return nil
			}
			capt = nil
		}
		d, err := c.DiffService().Compare(ctx, lower, upper,
			diff.WithMediaType(ocispec.MediaTypeImageLayer), diff.WithReference(ref))
		desc = d
		return err
	})
	if err != nil {
		return SnapshotInfo{}, paused, err
	}
	if capt != nil {
		// The task runs again; pack what was copied while it was paused.
		if desc, err = storeUpperLayer(ctx, c.ContentStore(), capt, stage, ref); err != nil {
			return SnapshotInfo{}, paused, fmt.Errorf("write layer: %w", r.wrap(err))
		}
	} else {
		base = active.Parent
	}

	// Build the committed snapshot from the layer on its base.
	applyKey := key + ".apply-" + suffix
	mounts, err := sn.Prepare(ctx, applyKey, base)
	if err != nil {
		return SnapshotInfo{}, paused, fmt.Errorf("prepare snapshot: %w", r.wrap(err))
	}
	commitFrom := applyKey
	defer func() {
		if commitFrom != "" {
			r.removeQuietly(ctx, sn, commitFrom)
		}
	}()
	if _, err := c.DiffService().Apply(ctx, desc, mounts, diff.WithSyncFs(true)); err != nil {
		return SnapshotInfo{}, paused, fmt.Errorf("apply layer: %w", r.wrap(err))
	}
	// The layer itself is not kept (it would be a second copy of the
	// version): the operation's lease lets the garbage collector take it,
	// and export rebuilds it from the snapshots.
	all := make(map[string]string, len(labels)+3)
	for k, v := range labels {
		all[k] = v
	}
	depth, root, err := r.chainDepth(ctx, sn, base)
	if err != nil {
		return SnapshotInfo{}, paused, err
	}
	if depth >= maxChainDepth {
		if commitFrom, err = r.flatten(ctx, c, sn, key+".flat-"+suffix, root, mounts); err != nil {
			return SnapshotInfo{}, paused, fmt.Errorf("compact snapshot %s: %w", key, err)
		}
		r.removeQuietly(ctx, sn, applyKey)
		all[LabelSnapshotCompactedFrom] = base
	}
	all[labelGCRoot] = time.Now().UTC().Format(time.RFC3339)
	all[LabelSnapshotLayer] = strconv.FormatInt(desc.Size, 10)
	if err := sn.Commit(ctx, key, commitFrom, snapshots.WithLabels(all)); err != nil {
		return SnapshotInfo{}, paused, fmt.Errorf("commit snapshot %s: %w", key, r.wrap(err))
	}
	commitFrom = ""
	ok = true
	if capt != nil {
		// The next snapshot builds on this one. Should this fail or berth
		// die first, the active snapshot still names an older version and
		// its manifest, which together stay exact: the next version is
		// then built on that older one.
		_ = r.recordUpper(ctx, c, sn, info.SnapshotKey, key, capt.manifest)
	}

	out, err := r.snapshotInfo(ctx, sn, key)
	if err != nil {
		return SnapshotInfo{}, paused, err
	}
	return out, paused, nil
}

// runPaused runs read with the container's task paused, if it runs, and
// resumes it as soon as read returns, even when ctx is cancelled.
func (r *Containerd) runPaused(ctx context.Context, c *containerd.Client, ctr containerd.Container, key string, read func() error) (time.Duration, error) {
	task, err := ctr.Task(ctx, nil)
	if err != nil && !errdefs.IsNotFound(err) {
		return 0, r.wrap(err)
	}
	running := false
	if task != nil {
		st, err := task.Status(ctx)
		if err != nil {
			return 0, r.wrap(err)
		}
		running = st.Status == containerd.Running
	}
	if !running {
		if err := read(); err != nil {
			return 0, fmt.Errorf("compute layer: %w", r.wrap(err))
		}
		return 0, nil
	}

	// The label lets ReconcileSnapshots resume the task should berth die
	// while it is frozen.
	id := ctr.ID()
	inflight.Store(r.inflightKey("ctr", id), struct{}{})
	defer inflight.Delete(r.inflightKey("ctr", id))
	if _, err := ctr.SetLabels(ctx, map[string]string{LabelSnapshotPaused: key}); err != nil {
		return 0, r.wrap(err)
	}
	defer func() {
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = clearLabel(cleanup, c, id, LabelSnapshotPaused)
	}()

	start := time.Now()
	if err := task.Pause(ctx); err != nil {
		// The pause may have happened even though the call failed
		// (cancelled while runc froze the cgroup): undo it to be sure.
		resumeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		_ = task.Resume(resumeCtx)
		cancel()
		return time.Since(start), fmt.Errorf("pause task: %w", r.wrap(err))
	}
	cerr := read()
	resumeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	rerr := task.Resume(resumeCtx)
	cancel()
	paused := time.Since(start)
	if rerr != nil {
		return paused, fmt.Errorf("resume task after snapshot: %w", r.wrap(rerr))
	}
	if cerr != nil {
		return paused, fmt.Errorf("compute layer: %w", r.wrap(cerr))
	}
	return paused, nil
}

// ListSnapshots lists the snapshots SnapshotContainer committed in
// snapshotter that carry labelKey=labelValue (all of them when labelKey is
// empty), oldest first.
func (r *Containerd) ListSnapshots(ctx context.Context, snapshotter, labelKey, labelValue string) ([]SnapshotInfo, error) {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	sn := c.SnapshotService(snapshotter)
	filter := fmt.Sprintf("labels.%q", LabelSnapshotLayer)
	if labelKey != "" {
		filter = fmt.Sprintf("labels.%q==%q", labelKey, labelValue)
	}
	var infos []snapshots.Info
	err = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindCommitted && info.Labels[LabelSnapshotLayer] != "" {
			infos = append(infos, info)
		}
		return nil
	}, filter)
	if err != nil {
		return nil, r.wrap(err)
	}
	// One Usage call per snapshot: a few at a time, so a long lineage
	// lists in a fraction of the round trips' sum.
	usages := make([]snapshots.Usage, len(infos))
	errs := make([]error, len(infos))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, info := range infos {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			usages[i], errs[i] = sn.Usage(ctx, info.Name)
		}()
	}
	wg.Wait()
	out := make([]SnapshotInfo, 0, len(infos))
	for i, info := range infos {
		if errdefs.IsNotFound(errs[i]) {
			continue // deleted while we listed
		}
		if errs[i] != nil {
			return nil, r.wrap(errs[i])
		}
		out = append(out, newSnapshotInfo(info, usages[i]))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

func (r *Containerd) snapshotInfo(ctx context.Context, sn snapshots.Snapshotter, key string) (SnapshotInfo, error) {
	info, err := sn.Stat(ctx, key)
	if err != nil {
		return SnapshotInfo{}, r.wrap(err)
	}
	usage, err := sn.Usage(ctx, key)
	if err != nil {
		return SnapshotInfo{}, r.wrap(err)
	}
	return newSnapshotInfo(info, usage), nil
}

func newSnapshotInfo(info snapshots.Info, usage snapshots.Usage) SnapshotInfo {
	out := SnapshotInfo{
		Key:     info.Name,
		Parent:  info.Parent,
		Labels:  info.Labels,
		Created: info.Created,
		Size:    usage.Size,
	}
	out.LayerSize, _ = strconv.ParseInt(info.Labels[LabelSnapshotLayer], 10, 64)
	return out
}

// RollbackContainer replaces the container's writable layer with a new,
// empty one on top of the committed snapshot key, under the container's
// snapshot key, so the container record does not change. The task must not
// run (a stopped task is removed: it would keep the old layer mounted). The
// old layer is discarded: take a snapshot first to keep it.
//
// Crash window: between committing the old layer under a hold name and
// preparing the new one, the container has no active snapshot; the hold
// (a gc root, labelled LabelRollbackOf) keeps the old data and
// ReconcileSnapshots completes the rollback. If preparing the new layer
// fails, the old layer comes back on top of the hold, with the same files.
func (r *Containerd) RollbackContainer(ctx context.Context, id, key string) error {
	c, ctr, ctx, err := r.load(ctx, id)
	if err != nil {
		return err
	}
	info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return r.wrap(err)
	}
	if info.SnapshotKey == "" {
		return fmt.Errorf("%w: container %s has no writable layer", errdefs.ErrFailedPrecondition, id)
	}
	if task, err := ctr.Task(ctx, nil); err == nil {
		st, err := task.Status(ctx)
		if err != nil {
			return r.wrap(err)
		}
		if st.Status != containerd.Stopped && st.Status != containerd.Created {
			return fmt.Errorf("%w: container %s is %s: stop it before rolling back", errdefs.ErrFailedPrecondition, id, st.Status)
		}
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove stopped task: %w", r.wrap(err))
		}
	} else if !errdefs.IsNotFound(err) {
		return r.wrap(err)
	}

	sn := c.SnapshotService(info.Snapshotter)
	target, err := sn.Stat(ctx, key)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", key, r.wrap(err))
	}
	if target.Kind != snapshots.KindCommitted {
		return fmt.Errorf("%w: snapshot %s is not a committed snapshot", errdefs.ErrInvalidArgument, key)
	}
	old, err := sn.Stat(ctx, info.SnapshotKey)
	if errdefs.IsNotFound(err) {
		// Nothing to keep (an earlier rollback died before ReconcileSnapshots ran).
		if _, err := sn.Prepare(ctx, info.SnapshotKey, key, snapshots.WithLabels(activeLabels(nil))); err != nil {
			return fmt.Errorf("prepare writable layer: %w", r.wrap(err))
		}
		return nil
	}
	if err != nil {
		return r.wrap(err)
	}

	hold := fmt.Sprintf("%s.rollback-%d", info.SnapshotKey, time.Now().UnixNano())
	holdLabels := map[string]string{
		labelGCRoot:     time.Now().UTC().Format(time.RFC3339),
		LabelRollbackOf: id,
		LabelRollbackTo: key,
	}
	if err := sn.Commit(ctx, hold, info.SnapshotKey, snapshots.WithLabels(holdLabels)); err != nil {
		return fmt.Errorf("set the old writable layer aside: %w", r.wrap(err))
	}
	if _, perr := sn.Prepare(ctx, info.SnapshotKey, key, snapshots.WithLabels(activeLabels(old.Labels))); perr != nil {
		if rerr := r.restoreHold(context.WithoutCancel(ctx), sn, info.SnapshotKey, hold, old.Labels); rerr != nil {
			return fmt.Errorf("prepare writable layer on %s: %w; restoring the old layer also failed (ReconcileSnapshots retries): %v", key, r.wrap(perr), rerr)
		}
		return fmt.Errorf("prepare writable layer on %s (the old layer is kept): %w", key, r.wrap(perr))
	}
	if err := sn.Remove(ctx, hold); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove the old writable layer %s (ReconcileSnapshots retries): %w", hold, r.wrap(err))
	}
	return nil
}

// activeLabels are the labels a replacement active snapshot inherits: not
// the manifest of the old one's upper directory.
func activeLabels(old map[string]string) map[string]string {
	out := make(map[string]string, len(old))
	for k, v := range old {
		if k == labelGCRoot || k == labelUpperManifest || strings.HasPrefix(k, snapshotLabelPrefix) {
			continue
		}
		out[k] = v
	}
	return out
}

// restoreHold puts the container's old layer back: a new active snapshot on
// top of the hold, which stops being a gc root and a pending rollback (its
// child keeps it, and it goes with the container).
func (r *Containerd) restoreHold(ctx context.Context, sn snapshots.Snapshotter, activeKey, hold string, labels map[string]string) error {
	if _, err := sn.Prepare(ctx, activeKey, hold, snapshots.WithLabels(activeLabels(labels))); err != nil && !errdefs.IsAlreadyExists(err) {
		return r.wrap(err)
	}
	_, err := sn.Update(ctx, snapshots.Info{Name: hold},
		"labels."+labelGCRoot, "labels."+LabelRollbackOf, "labels."+LabelRollbackTo)
	return r.wrap(err)
}

// DeleteSnapshot removes a committed snapshot made by SnapshotContainer and
// lets containerd collect its layer. It refuses with
// errdefs.ErrFailedPrecondition while another snapshot, or a container's
// writable layer, is built on it.
func (r *Containerd) DeleteSnapshot(ctx context.Context, snapshotter, key string) error {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return err
	}
	sn := c.SnapshotService(snapshotter)
	info, err := sn.Stat(ctx, key)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", key, r.wrap(err))
	}
	if info.Kind != snapshots.KindCommitted || info.Labels[LabelSnapshotLayer] == "" {
		return fmt.Errorf("%w: %s is not a snapshot made by berth", errdefs.ErrInvalidArgument, key)
	}
	var children []string
	err = sn.Walk(ctx, func(_ context.Context, child snapshots.Info) error {
		children = append(children, child.Name)
		return nil
	}, fmt.Sprintf("parent==%q", key))
	if err != nil {
		return r.wrap(err)
	}
	if len(children) > 0 {
		return fmt.Errorf("%w: snapshot %s is the base of %s: delete those first (a workspace rolled back to it needs it until it is deleted or rolled back elsewhere)",
			errdefs.ErrFailedPrecondition, key, strings.Join(children, ", "))
	}
	if err := sn.Remove(ctx, key); err != nil {
		if errdefs.IsFailedPrecondition(err) {
			return fmt.Errorf("%w: snapshot %s gained a child: %v", errdefs.ErrFailedPrecondition, key, err)
		}
		return r.wrap(err)
	}
	// The layer is unreferenced now; collect it (and the snapshot's files)
	// rather than wait for the next scheduled collection.
	return r.collectGarbage(ctx, c)
}

// ReconcileSnapshots repairs what a killed berth left half done: it resumes
// tasks left paused by SnapshotContainer, finishes interrupted rollbacks and
// deletes the leases of interrupted operations so that containerd collects
// their leftovers. Operations this process is running are left alone; call
// it at startup.
func (r *Containerd) ReconcileSnapshots(ctx context.Context) error {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return err
	}
	var errs []error

	ctrs, err := c.Containers(ctx)
	if err != nil {
		return r.wrap(err)
	}
	snapshotters := map[string]bool{}
	for _, ctr := range ctrs {
		info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, r.wrap(err))
			continue
		}
		snapshotters[info.Snapshotter] = true
		if _, ok := info.Labels[LabelSnapshotPaused]; ok {
			if err := r.resumeLeftPaused(ctx, c, ctr); err != nil {
				errs = append(errs, fmt.Errorf("container %s: %w", info.ID, err))
			}
		}
	}

	for name := range snapshotters {
		if err := r.reconcileRollbacks(ctx, c, name); err != nil {
			errs = append(errs, err)
		}
	}

	lm := c.LeasesService()
	ls, err := lm.List(ctx, fmt.Sprintf("labels.%q", labelSnapshotOp))
	if err != nil {
		errs = append(errs, r.wrap(err))
	}
	deleted := false
	for _, l := range ls {
		if _, busy := inflight.Load(r.inflightKey("lease", l.ID)); busy {
			continue
		}
		if err := lm.Delete(ctx, l); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, r.wrap(err))
			continue
		}
		deleted = true
	}
	if deleted {
		if err := r.collectGarbage(ctx, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Containerd) resumeLeftPaused(ctx context.Context, c *containerd.Client, ctr containerd.Container) error {
	if _, busy := inflight.Load(r.inflightKey("ctr", ctr.ID())); busy {
		return nil
	}
	if task, err := ctr.Task(ctx, nil); err == nil {
		st, err := task.Status(ctx)
		if err != nil {
			return r.wrap(err)
		}
		if st.Status == containerd.Paused || st.Status == containerd.Pausing {
			if err := task.Resume(ctx); err != nil {
				return fmt.Errorf("resume task: %w", r.wrap(err))
			}
		}
	} else if !errdefs.IsNotFound(err) {
		return r.wrap(err)
	}
	return r.wrap(clearLabel(ctx, c, ctr.ID(), LabelSnapshotPaused))
}

// reconcileRollbacks finishes rollbacks that a killed berth left between
// setting the old layer aside and removing it.
func (r *Containerd) reconcileRollbacks(ctx context.Context, c *containerd.Client, snapshotter string) error {
	sn := c.SnapshotService(snapshotter)
	var holds []snapshots.Info
	err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		holds = append(holds, info)
		return nil
	}, fmt.Sprintf("labels.%q", LabelRollbackOf))
	if err != nil {
		return r.wrap(err)
	}
	var errs []error
	for _, hold := range holds {
		if err := r.reconcileRollback(ctx, c, sn, snapshotter, hold); err != nil {
			errs = append(errs, fmt.Errorf("rollback hold %s: %w", hold.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Containerd) reconcileRollback(ctx context.Context, c *containerd.Client, sn snapshots.Snapshotter, snapshotter string, hold snapshots.Info) error {
	id, key := hold.Labels[LabelRollbackOf], hold.Labels[LabelRollbackTo]
	ctr, err := c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return r.removeOrRelease(ctx, sn, hold.Name) // the container went; so does its old layer
	}
	if err != nil {
		return r.wrap(err)
	}
	info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return r.wrap(err)
	}
	if info.Snapshotter != snapshotter {
		return r.removeOrRelease(ctx, sn, hold.Name)
	}
	active, err := sn.Stat(ctx, info.SnapshotKey)
	switch {
	case err == nil && active.Parent == hold.Name:
		// Restored on top of the hold; only the labels were left.
		return r.restoreHold(ctx, sn, info.SnapshotKey, hold.Name, nil)
	case err == nil:
		// The rollback completed; the old layer is no longer wanted.
		return r.removeOrRelease(ctx, sn, hold.Name)
	case !errdefs.IsNotFound(err):
		return r.wrap(err)
	}
	// The container has no writable layer: finish the rollback, or, when
	// its target is gone, give the old layer back.
	if t, err := sn.Stat(ctx, key); err == nil && t.Kind == snapshots.KindCommitted {
		if _, err := sn.Prepare(ctx, info.SnapshotKey, key); err != nil && !errdefs.IsAlreadyExists(err) {
			return r.wrap(err)
		}
		return r.removeOrRelease(ctx, sn, hold.Name)
	}
	return r.restoreHold(ctx, sn, info.SnapshotKey, hold.Name, nil)
}

// removeOrRelease removes a hold, or, when something was built on it,
// only its root and rollback labels so it goes with its children.
func (r *Containerd) removeOrRelease(ctx context.Context, sn snapshots.Snapshotter, name string) error {
	err := sn.Remove(ctx, name)
	if err == nil || errdefs.IsNotFound(err) {
		return nil
	}
	if !errdefs.IsFailedPrecondition(err) {
		return r.wrap(err)
	}
	_, err = sn.Update(ctx, snapshots.Info{Name: name},
		"labels."+labelGCRoot, "labels."+LabelRollbackOf, "labels."+LabelRollbackTo)
	return r.wrap(err)
}

// snapshotLease creates the lease an operation works under and returns ctx
// carrying it and a function that ends it; with discard set, the lease is
// deleted synchronously so that garbage collection removes its objects
// before it returns.
func (r *Containerd) snapshotLease(ctx context.Context, c *containerd.Client, op, key string) (context.Context, func(discard bool), error) {
	lm := c.LeasesService()
	lease, err := lm.Create(ctx, leases.WithRandomID(), leases.WithExpiration(leaseExpiry),
		leases.WithLabel(labelSnapshotOp, op+":"+key))
	if err != nil {
		return ctx, nil, r.wrap(err)
	}
	inflight.Store(r.inflightKey("lease", lease.ID), struct{}{})
	done := func(discard bool) {
		defer inflight.Delete(r.inflightKey("lease", lease.ID))
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		var opts []leases.DeleteOpt
		if discard {
			opts = append(opts, leases.SynchronousDelete)
		}
		_ = lm.Delete(cleanup, lease, opts...)
	}
	return leases.WithLease(ctx, lease.ID), done, nil
}

// collectGarbage runs containerd's garbage collector now: deleting a lease
// synchronously does that.
func (r *Containerd) collectGarbage(ctx context.Context, c *containerd.Client) error {
	lm := c.LeasesService()
	l, err := lm.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Minute))
	if err != nil {
		return r.wrap(err)
	}
	return r.wrap(lm.Delete(ctx, l, leases.SynchronousDelete))
}

// recordUpper stores the manifest of the active snapshot's upper directory
// as captured for version and labels the active snapshot with both, in one
// update, so they always agree.
func (r *Containerd) recordUpper(ctx context.Context, c *containerd.Client, sn snapshots.Snapshotter, activeKey, version string, m upperManifest) error {
	desc, err := writeJSONBlob(ctx, c.ContentStore(), "application/vnd.berth.upper-manifest+json", m, nil)
	if err != nil {
		return fmt.Errorf("write upper manifest: %w", r.wrap(err))
	}
	_, err = sn.Update(ctx, snapshots.Info{Name: activeKey, Labels: map[string]string{
		labelUpperBase:     version,
		labelUpperManifest: desc.Digest.String(),
	}}, "labels."+labelUpperBase, "labels."+labelUpperManifest)
	if err != nil {
		return fmt.Errorf("record upper manifest: %w", r.wrap(err))
	}
	return nil
}

// removeQuietly removes a temporary snapshot; the operation's lease
// collects it if this fails.
func (r *Containerd) removeQuietly(ctx context.Context, sn snapshots.Snapshotter, key string) {
	cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = sn.Remove(cleanup, key)
}

// clearLabel removes one label from a container.
func clearLabel(ctx context.Context, c *containerd.Client, id, label string) error {
	_, err := c.ContainerService().Update(ctx, containers.Container{ID: id}, "labels."+label)
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
