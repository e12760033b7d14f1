package runtime

// Forking a workspace from one of its snapshots.

import (
	"context"
	"fmt"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/snapshots"
	ctrcdi "github.com/containerd/containerd/v2/pkg/cdi"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
)

// CreateContainerFromSnapshot creates (but does not start) a container from
// spec like CreateContainer, except that its writable layer (snapshot key
// spec.ID, in spec.Snapshotter) is prepared on the committed snapshot
// parentKey instead of on the image's top layer. The image still provides
// the process configuration (env, user, working directory...).
//
// The new container shares nothing writable with the snapshot's source:
// each has its own active snapshot on top of read-only layers. While the
// fork exists, parentKey is the base of its writable layer, so
// DeleteSnapshot refuses to remove it (errdefs.ErrFailedPrecondition), as
// for a rolled-back workspace; snapshots of the fork are incremental on
// parentKey. parentKey should come from an image compatible with
// spec.Image (the user and paths of the image config must exist in it).
func (r *Containerd) CreateContainerFromSnapshot(ctx context.Context, spec ContainerSpec, parentKey string) error {
	if parentKey == "" {
		return fmt.Errorf("%w: parent snapshot key is required", errdefs.ErrInvalidArgument)
	}
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return err
	}
	parent, err := c.SnapshotService(spec.Snapshotter).Stat(ctx, parentKey)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", parentKey, r.wrap(err))
	}
	if parent.Kind != snapshots.KindCommitted {
		return fmt.Errorf("%w: snapshot %s is not committed", errdefs.ErrInvalidArgument, parentKey)
	}
	return r.newContainer(ctx, "fork", spec, func(containerd.Image) containerd.NewContainerOpts {
		return withSnapshotOn(spec.ID, parentKey)
	})
}

// withSnapshotOn prepares the container's writable layer key on parent.
// newContainer runs it under a lease, so a failed creation leaves nothing.
func withSnapshotOn(key, parent string) containerd.NewContainerOpts {
	return func(ctx context.Context, client *containerd.Client, c *containers.Container) error {
		if _, err := client.SnapshotService(c.Snapshotter).Prepare(ctx, key, parent); err != nil {
			return fmt.Errorf("prepare writable layer on %s: %w", parent, err)
		}
		c.SnapshotKey = key
		return nil
	}
}

// containerSpecOpts builds the OCI spec options of a container from spec,
// for CreateContainer and CreateContainerFromSnapshot alike.
func containerSpecOpts(img containerd.Image, spec ContainerSpec) []oci.SpecOpts {
	specOpts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithProcessArgs(spec.Args...),
		oci.WithEnv(spec.Env),
		oci.WithHostname(spec.Hostname),
		oci.WithMounts(ociMounts(spec.Mounts)),
	}
	specOpts = append(specOpts, withNetwork(spec.Network))
	if spec.RunAsRoot {
		specOpts = append(specOpts, recordImageUser, oci.WithUIDGID(0, 0), oci.WithAdditionalGIDs("root"))
	}
	if l := spec.Limits; l.CPUs > 0 {
		specOpts = append(specOpts, oci.WithCPUCFS(int64(l.CPUs*cpuPeriod), cpuPeriod))
	}
	if l := spec.Limits; l.MemoryBytes > 0 {
		specOpts = append(specOpts, oci.WithMemoryLimit(uint64(l.MemoryBytes)))
	}
	if l := spec.Limits; l.Pids > 0 {
		specOpts = append(specOpts, oci.WithPidsLimit(l.Pids))
	}
	if len(spec.Devices) > 0 {
		specOpts = append(specOpts, ctrcdi.WithCDIDevices(spec.Devices...))
	}
	// containerd's default profile (Docker's) refuses what a workspace has no
	// business doing (user namespaces, mounts, keyctl, bpf, ...). It reads
	// the process capabilities, so it comes after everything that sets them.
	return append(specOpts, seccomp.WithDefaultProfile())
}
