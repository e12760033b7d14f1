package runtime

// Compaction of long lineages.
//
// Every version is stored on the one it builds on, so a container started,
// rolled back or forked on version n mounts all versions below it as
// overlay lower directories. Overlay takes at most 500 of them, and the
// mount options must fit a page (containerd shortens the paths past that,
// not indefinitely). So no version is stored more than maxChainDepth
// versions above the image: the version that would be is stored on the
// image's top layer instead, holding its whole content (its changes are
// still taken and sized against the version it builds on, which stays its
// parent in the lineage, LabelSnapshotCompactedFrom). Versions after it
// build on it incrementally again, so a lineage stores one full copy of
// the workspace's writes per maxChainDepth versions, and every version,
// compacted or not, keeps its files, number, name and diff.
//
// The compacted content is computed from the new version after the task
// resumed: it does not lengthen the pause. It is committed in the same
// single Commit as any version, under the operation's lease, so a crash
// leaves nothing that ReconcileSnapshots does not already collect.

import (
	"context"
	"fmt"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxChainDepth is the most versions one version is stored on, itself
// included. A variable so that tests can reach it with a few versions.
var maxChainDepth = 32

// chainDepth counts the berth snapshots from key down (key included) and
// returns the snapshot below them: the image's top layer, or "" for an
// image without layers.
func (r *Containerd) chainDepth(ctx context.Context, sn snapshots.Snapshotter, key string) (int, string, error) {
	depth := 0
	for k := key; k != ""; depth++ {
		info, err := sn.Stat(ctx, k)
		if err != nil {
			return 0, "", fmt.Errorf("snapshot %s: %w", k, r.wrap(err))
		}
		if info.Labels[LabelSnapshotLayer] == "" {
			return depth, k, nil
		}
		k = info.Parent
	}
	return depth, "", nil
}

// flatten prepares the active snapshot key on root holding everything the
// mounts upper hold over root, and returns key. ctx carries the
// operation's lease.
func (r *Containerd) flatten(ctx context.Context, c *containerd.Client, sn snapshots.Snapshotter, key, root string, upper []mount.Mount) (string, error) {
	var lower []mount.Mount
	if root != "" {
		viewKey := key + "-root"
		m, err := sn.View(ctx, viewKey, root)
		if err != nil {
			return "", fmt.Errorf("view of %s: %w", root, r.wrap(err))
		}
		defer r.removeQuietly(ctx, sn, viewKey)
		lower = m
	}
	full, err := c.DiffService().Compare(ctx, lower, upper,
		diff.WithMediaType(ocispec.MediaTypeImageLayer), diff.WithReference("berth-compact-"+key))
	if err != nil {
		return "", fmt.Errorf("compute the whole content: %w", r.wrap(err))
	}
	mounts, err := sn.Prepare(ctx, key, root)
	if err != nil {
		return "", fmt.Errorf("prepare: %w", r.wrap(err))
	}
	if _, err := c.DiffService().Apply(ctx, full, mounts, diff.WithSyncFs(true)); err != nil {
		r.removeQuietly(ctx, sn, key)
		return "", fmt.Errorf("apply the whole content: %w", r.wrap(err))
	}
	return key, nil
}
