package workspace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/containerd/errdefs"
)

// Snapshot labels. Versions number a bot's snapshots 1..N; the live
// workspace records which version it was rolled back to.
const (
	labelSnapVersion = labelPrefix + "snapshot.version"
	labelSnapName    = labelPrefix + "snapshot.name"
	labelSnapSource  = labelPrefix + "snapshot.source"
	labelBasedOn     = labelPrefix + "based-on"
)

// Snapshot sources.
const (
	SourceManual      = "manual"
	SourcePreRollback = "pre_rollback"
)

// Snapshot is one saved version of a workspace's files.
type Snapshot struct {
	Version    int       `json:"version"`
	Name       string    `json:"name,omitempty"`
	Source     string    `json:"source" jsonschema:"enum=manual,enum=pre_rollback"`
	CreatedAt  time.Time `json:"created_at"`
	SizeBytes  int64     `json:"size_bytes" jsonschema:"description=bytes of the version's layer (the changes it holds over its parent)"`
	DiskBytes  int64     `json:"disk_bytes" jsonschema:"description=disk space the version itself takes (freed when it is deleted)"`
	Compacted  bool      `json:"compacted,omitempty" jsonschema:"description=stored with its whole content rather than on its parent (this keeps long lineages mountable)"`
	Parent     int       `json:"parent_version,omitempty" jsonschema:"description=the version this one builds on; absent: the image"`
	PauseMilli int64     `json:"pause_ms,omitempty" jsonschema:"description=how long the workspace was paused to take it"`
	key        string
	storedOn   string // the snapshot it is stored on: the one deleting it waits for
}

// Lineage is a workspace's image and its versions.
type Lineage struct {
	BotID     string     `json:"bot_id"`
	Image     string     `json:"image"`
	BasedOn   int        `json:"live_based_on,omitempty" jsonschema:"description=the version the live workspace was rolled back to; absent: the image"`
	Versions  []Snapshot `json:"versions"`
	DiskBytes int64      `json:"disk_bytes" jsonschema:"description=disk space all the versions take together"`
	// Set by pagers (snapshot_list); ListSnapshots returns every version.
	TotalVersions int `json:"total_versions,omitempty" jsonschema:"description=how many versions the lineage has"`
	NextOffset    int `json:"next_offset,omitempty" jsonschema:"description=more versions follow: pass this as offset"`
}

func snapshotKey(bot string, version int) string {
	return fmt.Sprintf("berth/%s/v%d", bot, version)
}

// versions lists the bot's snapshots, oldest first.
func (m *Manager) versions(ctx context.Context, bot, snapshotter string) ([]Snapshot, error) {
	infos, err := m.rt.ListSnapshots(ctx, snapshotter, LabelBot, bot)
	if err != nil {
		return nil, err
	}
	byKey := map[string]int{}
	var kept []runtime.SnapshotInfo
	for _, in := range infos {
		if v, err := strconv.Atoi(in.Labels[labelSnapVersion]); err == nil && v > 0 {
			byKey[in.Key] = v
			kept = append(kept, in)
		}
	}
	out := make([]Snapshot, 0, len(kept))
	for _, in := range kept {
		out = append(out, snapshotOf(in, byKey))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

func snapshotOf(in runtime.SnapshotInfo, byKey map[string]int) Snapshot {
	return Snapshot{
		Version: byKey[in.Key], Name: in.Labels[labelSnapName], Source: in.Labels[labelSnapSource],
		CreatedAt: in.Created, SizeBytes: in.LayerSize, DiskBytes: in.Size,
		Compacted: in.Labels[runtime.LabelSnapshotCompactedFrom] != "",
		Parent:    byKey[in.Base()], key: in.Key, storedOn: in.Parent,
	}
}

// ListSnapshots returns the workspace's lineage.
func (m *Manager) ListSnapshots(ctx context.Context, bot string) (Lineage, error) {
	if err := ValidateBotID(bot); err != nil {
		return Lineage{}, err
	}
	ctr, err := m.container(ctx, bot)
	if err != nil {
		return Lineage{}, err
	}
	vs, err := m.versions(ctx, bot, ctr.Snapshotter)
	if err != nil {
		return Lineage{}, err
	}
	based, _ := strconv.Atoi(ctr.Labels[labelBasedOn])
	l := Lineage{BotID: bot, Image: ctr.Image, BasedOn: based, Versions: vs}
	for _, v := range vs {
		l.DiskBytes += v.DiskBytes
	}
	return l, nil
}

// CreateSnapshot saves the workspace's whole writable filesystem as the
// next version while it keeps running.
func (m *Manager) CreateSnapshot(ctx context.Context, bot, name string, progress func(Progress)) (Snapshot, error) {
	if len(name) > 128 {
		return Snapshot{}, fmt.Errorf("%w: snapshot name longer than 128 bytes", errdefs.ErrInvalidArgument)
	}
	mctx, done, err := m.mutate(ctx, bot, 30*time.Minute)
	if err != nil {
		return Snapshot{}, err
	}
	defer done()
	return m.snapshot(mctx, bot, name, SourceManual, progress)
}

// snapshot takes the next version; callers hold the bot's lock.
func (m *Manager) snapshot(ctx context.Context, bot, name, source string, progress func(Progress)) (Snapshot, error) {
	ctr, err := m.container(ctx, bot)
	if err != nil {
		return Snapshot{}, err
	}
	vs, err := m.versions(ctx, bot, ctr.Snapshotter)
	if err != nil {
		return Snapshot{}, err
	}
	version := 1
	if len(vs) > 0 {
		version = vs[len(vs)-1].Version + 1
	}
	report(progress, Progress{Done: 0, Total: 2, Message: fmt.Sprintf("snapshotting %s as version %d", bot, version)})
	info, pause, err := m.rt.SnapshotContainer(ctx, bot, snapshotKey(bot, version), map[string]string{
		LabelBot:         bot,
		labelSnapVersion: strconv.Itoa(version),
		labelSnapName:    name,
		labelSnapSource:  source,
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", bot, err)
	}
	report(progress, Progress{Done: 2, Total: 2, Message: fmt.Sprintf("version %d of %s saved (paused %s)", version, bot, pause.Round(time.Millisecond))})
	byKey := map[string]int{info.Key: version}
	for _, s := range vs {
		byKey[s.key] = s.Version
	}
	s := snapshotOf(info, byKey)
	s.PauseMilli = pause.Milliseconds()
	return s, nil
}

// find returns version v of the bot's snapshots.
func find(vs []Snapshot, bot string, v int) (Snapshot, error) {
	for _, s := range vs {
		if s.Version == v {
			return s, nil
		}
	}
	known := make([]int, len(vs))
	for i, s := range vs {
		known[i] = s.Version
	}
	return Snapshot{}, fmt.Errorf("%w: %s has no snapshot version %d (versions: %v)", errdefs.ErrNotFound, bot, v, known)
}

// Rollback makes the workspace's files those of version v: it first saves
// the current state as a pre_rollback version, then restarts the workspace
// on v. The agent answers again before it returns.
func (m *Manager) Rollback(ctx context.Context, bot string, v int, progress func(Progress)) (Workspace, Snapshot, error) {
	mctx, done, err := m.mutate(ctx, bot, 30*time.Minute)
	if err != nil {
		return Workspace{}, Snapshot{}, err
	}
	defer done()
	ctr, err := m.container(mctx, bot)
	if err != nil {
		return Workspace{}, Snapshot{}, err
	}
	vs, err := m.versions(mctx, bot, ctr.Snapshotter)
	if err != nil {
		return Workspace{}, Snapshot{}, err
	}
	target, err := find(vs, bot, v)
	if err != nil {
		return Workspace{}, Snapshot{}, err
	}
	pre, err := m.snapshot(mctx, bot, fmt.Sprintf("before rollback to %d", v), SourcePreRollback, progress)
	if err != nil {
		return Workspace{}, Snapshot{}, fmt.Errorf("safety snapshot before rollback (nothing changed): %w", err)
	}
	report(progress, Progress{Done: 2, Total: 4, Message: fmt.Sprintf("stopping %s to roll back to version %d", bot, v)})
	m.agents.drop(bot)
	if err := m.rt.StopTask(mctx, bot, m.opts.StopGrace); err != nil {
		return Workspace{}, pre, err
	}
	if err := m.rt.RollbackContainer(mctx, bot, target.key); err != nil {
		return Workspace{}, pre, fmt.Errorf("rollback (the pre-rollback state is version %d): %w", pre.Version, err)
	}
	if err := m.rt.SetLabels(mctx, bot, map[string]string{labelBasedOn: strconv.Itoa(v)}); err != nil {
		return Workspace{}, pre, err
	}
	report(progress, Progress{Done: 3, Total: 4, Message: fmt.Sprintf("starting %s on version %d", bot, v)})
	if ctr.Labels[labelDesired] != desiredStopped {
		if err := m.start(mctx, bot); err != nil {
			return Workspace{}, pre, err
		}
	}
	ws, err := m.Get(mctx, bot)
	return ws, pre, err
}

// DeleteSnapshot removes version v; versions or the live workspace that
// build on it keep it alive.
func (m *Manager) DeleteSnapshot(ctx context.Context, bot string, v int) error {
	mctx, done, err := m.mutate(ctx, bot, 5*time.Minute)
	if err != nil {
		return err
	}
	defer done()
	ctr, err := m.container(mctx, bot)
	if err != nil {
		return err
	}
	vs, err := m.versions(mctx, bot, ctr.Snapshotter)
	if err != nil {
		return err
	}
	target, err := find(vs, bot, v)
	if err != nil {
		return err
	}
	// Only what is stored on v keeps it: a compacted version holds its
	// whole content, so the versions before it can go.
	var children []int
	for _, s := range vs {
		if s.storedOn == target.key {
			children = append(children, s.Version)
		}
	}
	if based, _ := strconv.Atoi(ctr.Labels[labelBasedOn]); based == v {
		return fmt.Errorf("%w: the live workspace builds on version %d; roll back to another version first", errdefs.ErrFailedPrecondition, v)
	}
	if len(children) > 0 {
		return fmt.Errorf("%w: versions %v are stored as changes on version %d, so it can only be deleted after them (a version stores only what changed since the one before, and a stored version is never rewritten)", errdefs.ErrFailedPrecondition, children, v)
	}
	return m.rt.DeleteSnapshot(mctx, ctr.Snapshotter, target.key)
}

// deleteSnapshots removes every version of a deleted workspace, newest
// first (children are always newer than their parents).
func (m *Manager) deleteSnapshots(ctx context.Context, bot, snapshotter string) error {
	vs, err := m.versions(ctx, bot, snapshotter)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(vs) - 1; i >= 0; i-- {
		err := m.rt.DeleteSnapshot(ctx, snapshotter, vs[i].key)
		switch {
		case err == nil, errors.Is(err, errdefs.ErrNotFound):
		case errors.Is(err, errdefs.ErrFailedPrecondition):
			// A fork builds on it: it stays until that fork is gone.
			m.log.Info("keeping a snapshot a fork builds on", "bot", bot, "version", vs[i].Version)
		default:
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DiffSnapshots lists the files added, modified and deleted from version
// from to version to (0: the live workspace), a page at a time.
func (m *Manager) DiffSnapshots(ctx context.Context, bot string, from, to int, page runtime.Page) (runtime.SnapshotDiff, error) {
	if err := ValidateBotID(bot); err != nil {
		return runtime.SnapshotDiff{}, err
	}
	ctr, err := m.container(ctx, bot)
	if err != nil {
		return runtime.SnapshotDiff{}, err
	}
	vs, err := m.versions(ctx, bot, ctr.Snapshotter)
	if err != nil {
		return runtime.SnapshotDiff{}, err
	}
	fromSnap, err := find(vs, bot, from)
	if err != nil {
		return runtime.SnapshotDiff{}, err
	}
	toKey := bot // the live writable layer is keyed by the container id
	if to > 0 {
		toSnap, err := find(vs, bot, to)
		if err != nil {
			return runtime.SnapshotDiff{}, err
		}
		toKey = toSnap.key
	}
	return m.rt.DiffSnapshots(ctx, ctr.Snapshotter, fromSnap.key, toKey, page)
}

// SnapshotImagePrefix begins the names of images snapshot_export makes.
// Each bot's exports are named after it, so no bot can replace an image
// that others use.
const SnapshotImagePrefix = "berth.local/snapshots/"

// ExportSnapshot makes version v of bot's workspace an image named
// SnapshotImagePrefix+bot+":v"+v.
func (m *Manager) ExportSnapshot(ctx context.Context, bot string, v int) (runtime.Image, error) {
	mctx, done, err := m.mutate(ctx, bot, 10*time.Minute)
	if err != nil {
		return runtime.Image{}, err
	}
	defer done()
	ctr, err := m.container(mctx, bot)
	if err != nil {
		return runtime.Image{}, err
	}
	vs, err := m.versions(mctx, bot, ctr.Snapshotter)
	if err != nil {
		return runtime.Image{}, err
	}
	target, err := find(vs, bot, v)
	if err != nil {
		return runtime.Image{}, err
	}
	return m.rt.ExportSnapshot(mctx, ctr.Snapshotter, target.key, ctr.Image, fmt.Sprintf("%s%s:v%d", SnapshotImagePrefix, bot, v), map[string]string{LabelOwnerBot: bot})
}

// createEnv recovers the env a workspace was created with: its names are
// a label, its values are in the container's spec.
func (m *Manager) createEnv(ctx context.Context, c runtime.Container) (map[string]string, error) {
	names := splitList(c.Labels[labelEnvNames])
	if len(names) == 0 {
		return nil, nil
	}
	spec, err := m.rt.ProcessEnv(ctx, c.ID)
	if err != nil {
		return nil, fmt.Errorf("read the env of %s: %w", c.ID, err)
	}
	env := map[string]string{}
	for _, kv := range spec {
		k, v, _ := strings.Cut(kv, "=")
		if slices.Contains(names, k) {
			env[k] = v // later entries win, as in the process
		}
	}
	return env, nil
}

// Fork creates a new workspace for newBot whose files start as version v
// of bot's workspace; image, limits, devices and env are bot's. The two are
// independent afterwards; v cannot be deleted while the fork builds on it.
func (m *Manager) Fork(ctx context.Context, bot string, v int, newBot string, progress func(Progress)) (Workspace, error) {
	if err := ValidateBotID(newBot); err != nil {
		return Workspace{}, err
	}
	if newBot == bot {
		return Workspace{}, fmt.Errorf("%w: the fork needs a new bot id", errdefs.ErrInvalidArgument)
	}
	// Lock both bots, in a fixed order so crossing forks cannot deadlock.
	first, second := bot, newBot
	if second < first {
		first, second = second, first
	}
	mctx, done1, err := m.mutate(ctx, first, m.opts.AgentTimeout+10*time.Minute)
	if err != nil {
		return Workspace{}, err
	}
	defer done1()
	_, done2, err := m.mutate(ctx, second, time.Minute)
	if err != nil {
		return Workspace{}, err
	}
	defer done2()

	src, err := m.rt.Container(mctx, bot)
	if isNotFound(err) {
		return Workspace{}, notFound(bot)
	} else if err != nil {
		return Workspace{}, err
	}
	if _, err := m.rt.Container(mctx, newBot); err == nil {
		return Workspace{}, fmt.Errorf("%w: bot %s already has a workspace", errdefs.ErrAlreadyExists, newBot)
	} else if !isNotFound(err) {
		return Workspace{}, err
	}
	vs, err := m.versions(mctx, bot, src.Snapshotter)
	if err != nil {
		return Workspace{}, err
	}
	target, err := find(vs, bot, v)
	if err != nil {
		return Workspace{}, err
	}
	if err := checkAgentBinary(m.opts.AgentBinary); err != nil {
		return Workspace{}, err
	}
	req := CreateRequest{BotID: newBot, Snapshotter: src.Snapshotter, Devices: splitList(src.Labels[labelDevices])}
	// The fork gets the source's mode and a copy of its policy; its own
	// address comes with its own attachment at start.
	// Host mode is an admin's choice that Fork cannot check, so a fork of a
	// host workspace gets the default mode instead.
	mode, pol := networkOf(src.Labels)
	if mode == NetworkHost {
		mode, _ = m.resolveNetworkMode("", false)
	}
	req.Network, req.networkPolicy = mode, &pol
	_ = json.Unmarshal([]byte(src.Labels[labelLimits]), &req.Limits)
	// The fork gets the source's limits within today's maximums; a source
	// made before berth had limits passes zeros, which take the defaults.
	if req.Limits, err = m.opts.Limits.Resolve(req.Limits); err != nil {
		return Workspace{}, fmt.Errorf("fork of %s: %w", bot, err)
	}
	if req.Env, err = m.createEnv(mctx, src); err != nil {
		return Workspace{}, err
	}
	report(progress, Progress{Done: 1, Total: 3, Message: fmt.Sprintf("forking %s version %d as %s", bot, v, newBot)})
	if err := m.rt.CreateContainerFromSnapshot(mctx, m.containerSpec(req, src.Image), target.key); err != nil {
		return Workspace{}, err
	}
	report(progress, Progress{Done: 2, Total: 3, Message: "starting " + newBot})
	if err := m.start(mctx, newBot); err != nil {
		if rbErr := m.remove(mctx, newBot); rbErr != nil {
			m.log.Error("roll back failed fork", "bot", newBot, "err", rbErr)
		}
		return Workspace{}, fmt.Errorf("fork %s was not created: %w", newBot, err)
	}
	return m.Get(mctx, newBot)
}
