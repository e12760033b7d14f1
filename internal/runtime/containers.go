package runtime

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	cdi "tags.cncf.io/container-device-interface/pkg/cdi"
)

// cpuPeriod is the CFS period used to express CPU limits.
const cpuPeriod = 100_000

// CreateContainer creates (but does not start) a container from spec.
func (r *Containerd) CreateContainer(ctx context.Context, spec ContainerSpec) error {
	return r.newContainer(ctx, "create", spec, func(img containerd.Image) containerd.NewContainerOpts {
		return containerd.WithNewSnapshot(spec.ID, img)
	})
}

// newContainer creates the container of spec with the writable layer that
// layer makes from spec's image. It works under a lease labelled like the
// snapshot operations' (op names it), not under containerd's default lease:
// a berth killed midway leaves a lease that the next reconcile clears.
func (r *Containerd) newContainer(ctx context.Context, op string, spec ContainerSpec, layer func(containerd.Image) containerd.NewContainerOpts) error {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return err
	}
	img, err := c.GetImage(ctx, spec.Image)
	if err != nil {
		return fmt.Errorf("image %s: %w", spec.Image, r.wrap(err))
	}
	if err := r.CheckDevices(spec.Devices); err != nil {
		return err
	}
	lctx, done, err := r.snapshotLease(ctx, c, op, spec.ID)
	if err != nil {
		return err
	}
	// Once created, the container record holds its layer; the lease only
	// covers the way there.
	_, err = c.NewContainer(lctx, spec.ID,
		containerd.WithImage(img),
		containerd.WithSnapshotter(spec.Snapshotter),
		layer(img),
		containerd.WithNewSpec(containerSpecOpts(img, spec)...),
		containerd.WithContainerLabels(spec.Labels),
	)
	done(err != nil)
	if err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, r.wrap(err))
	}
	return nil
}

// ImageUserEnv carries the image's user ("uid:gid[:group,group...]") to a
// process that RunAsRoot made root, so it can run its children as that user.
const ImageUserEnv = "BERTH_IMAGE_USER"

// recordImageUser runs after the image config resolved the image's User
// (names included, from the image's /etc/passwd) and before root replaces it.
func recordImageUser(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	u := s.Process.User
	v := fmt.Sprintf("%d:%d", u.UID, u.GID)
	if len(u.AdditionalGids) > 0 {
		groups := make([]string, len(u.AdditionalGids))
		for i, g := range u.AdditionalGids {
			groups[i] = strconv.FormatUint(uint64(g), 10)
		}
		v += ":" + strings.Join(groups, ",")
	}
	s.Process.Env = append(s.Process.Env, ImageUserEnv+"="+v)
	return nil
}

func ociMounts(mounts []Mount) []specs.Mount {
	out := make([]specs.Mount, 0, len(mounts))
	for _, m := range mounts {
		opts := []string{"rbind", "rw"}
		if m.ReadOnly {
			opts = []string{"rbind", "ro"}
		}
		out = append(out, specs.Mount{Type: "bind", Source: m.Source, Destination: m.Destination, Options: opts})
	}
	return out
}

// CheckDevices reports CDI device names that no spec in the spec dirs provides.
func (r *Containerd) CheckDevices(names []string) error {
	if len(names) == 0 {
		return nil
	}
	cache := cdi.GetDefaultCache()
	_ = cache.Refresh() // a broken spec of another vendor must not hide good ones
	var unknown []string
	for _, n := range names {
		if cache.GetDevice(n) == nil {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("%w: unknown CDI device(s) %v; known devices: %v (spec dirs %v)",
			errdefs.ErrInvalidArgument, unknown, cache.ListDevices(), r.opts.CDISpecDirs)
	}
	return nil
}

// StartTask starts the container's init process with its output appended
// to logPath. A leftover stopped task is removed first.
func (r *Containerd) StartTask(ctx context.Context, id, logPath string) (uint32, error) {
	_, ctr, ctx, err := r.load(ctx, id)
	if err != nil {
		return 0, err
	}
	// A task left behind by a berth killed mid-stop may still be
	// registered for a moment after its removal, so creating the new one
	// is retried a few times; a shim orphaned by an interrupted delete is
	// cleared (see reapOrphanShim).
	var task containerd.Task
	for attempt := 0; ; attempt++ {
		if old, err := ctr.Task(ctx, nil); err == nil {
			st, err := old.Status(ctx)
			if err != nil {
				return 0, r.wrap(err)
			}
			if st.Status == containerd.Running || st.Status == containerd.Paused {
				return old.Pid(), nil
			}
			if _, err := old.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				return 0, fmt.Errorf("remove old task: %w", r.wrap(err))
			}
		} else if !errdefs.IsNotFound(err) {
			return 0, r.wrap(err)
		}
		task, err = ctr.NewTask(ctx, cio.LogFile(logPath))
		if err == nil {
			break
		}
		leftover := errdefs.IsAlreadyExists(err) || strings.Contains(err.Error(), "file exists")
		if !leftover || attempt == 4 {
			return 0, fmt.Errorf("create task: %w", r.wrap(err))
		}
		if attempt >= 1 {
			ns, _ := namespaces.Namespace(ctx)
			if reaped, rerr := r.reapOrphanShim(ns, id, err); rerr != nil {
				return 0, fmt.Errorf("create task: %w (and clearing an orphaned shim failed: %v)", r.wrap(err), rerr)
			} else if reaped {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
	if err := task.Start(ctx); err != nil {
		_, _ = task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
		return 0, fmt.Errorf("start task: %w", r.wrap(err))
	}
	return task.Pid(), nil
}

// StopTask stops the container's processes: SIGTERM to init, which
// forwards it; SIGKILL to all after grace.
func (r *Containerd) StopTask(ctx context.Context, id string, grace time.Duration) error {
	_, ctr, ctx, err := r.load(ctx, id)
	if err != nil {
		return err
	}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return r.wrap(err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return r.wrap(err)
	}
	st, err := task.Status(ctx)
	if err != nil {
		return r.wrap(err)
	}
	if st.Status == containerd.Paused {
		_ = task.Resume(ctx)
	}
	if st.Status != containerd.Stopped {
		if err := task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
			return r.wrap(err)
		}
		select {
		case <-exited:
		case <-time.After(grace):
			if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
				return r.wrap(err)
			}
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				return errors.New("the workspace did not exit 30s after SIGKILL")
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return r.wrap(err)
	}
	return nil
}

// DeleteContainer removes the container with its task and writable layer.
func (r *Containerd) DeleteContainer(ctx context.Context, id string) error {
	_, ctr, ctx, err := r.load(ctx, id)
	if err != nil {
		return err
	}
	if task, err := ctr.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return r.wrap(err)
		}
	}
	if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return r.wrap(err)
	}
	return nil
}

// Container describes one container and the state of its task.
func (r *Containerd) Container(ctx context.Context, id string) (Container, error) {
	_, ctr, ctx, err := r.load(ctx, id)
	if err != nil {
		return Container{}, err
	}
	info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return Container{}, r.wrap(err)
	}
	return r.describe(ctx, ctr, info)
}

// Containers lists the containers that carry labelKey.
func (r *Containerd) Containers(ctx context.Context, labelKey string) ([]Container, error) {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	ctrs, err := c.Containers(ctx, fmt.Sprintf("labels.%q", labelKey))
	if err != nil {
		return nil, r.wrap(err)
	}
	out := make([]Container, 0, len(ctrs))
	for _, ctr := range ctrs {
		info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata)
		if errdefs.IsNotFound(err) {
			continue // deleted while we listed
		}
		if err != nil {
			return nil, r.wrap(err)
		}
		c, err := r.describe(ctx, ctr, info)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// describe reports a task it cannot read as TaskUnknown, except when
// containerd itself failed: that is the caller's error, not the task's state.
func (r *Containerd) describe(ctx context.Context, ctr containerd.Container, info containers.Container) (Container, error) {
	out := Container{
		ID:          info.ID,
		Image:       info.Image,
		Snapshotter: info.Snapshotter,
		Labels:      info.Labels,
		CreatedAt:   info.CreatedAt,
		Status:      TaskNone,
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		if err := r.containerdFailure(err); err != nil {
			return out, err
		}
		if !errdefs.IsNotFound(err) {
			out.Status = TaskUnknown
		}
		return out, nil
	}
	st, err := task.Status(ctx)
	if err != nil {
		if err := r.containerdFailure(err); err != nil {
			return out, err
		}
		out.Status = TaskUnknown
		return out, nil
	}
	out.PID = task.Pid()
	out.ExitStatus = st.ExitStatus
	switch st.Status {
	case containerd.Running:
		out.Status = TaskRunning
	case containerd.Stopped, containerd.Created:
		out.Status = TaskStopped
	case containerd.Paused, containerd.Pausing:
		out.Status = TaskPaused
	default:
		out.Status = TaskUnknown
	}
	return out, nil
}

// containerdFailure is err as wrap makes it when containerd did not answer
// or cannot be reached, else nil.
func (r *Containerd) containerdFailure(err error) error {
	err = r.wrap(err)
	var ue *UnavailableError
	var nr *NotRespondingError
	if errors.As(err, &ue) || errors.As(err, &nr) {
		return err
	}
	return nil
}

// SetLabels sets (or, with an empty value, removes) labels on a container.
func (r *Containerd) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	_, ctr, ctx, err := r.load(ctx, id)
	if err != nil {
		return err
	}
	if _, err := ctr.SetLabels(ctx, labels); err != nil {
		return r.wrap(err)
	}
	return nil
}

// ProcessEnv reads the environment from the container's OCI spec.
func (r *Containerd) ProcessEnv(ctx context.Context, id string) ([]string, error) {
	_, ctr, ctx, err := r.load(ctx, id)
	if err != nil {
		return nil, err
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		return nil, r.wrap(err)
	}
	if spec.Process == nil {
		return nil, nil
	}
	return spec.Process.Env, nil
}

// StorageUsage sums the container's active snapshot (its writable layer).
func (r *Containerd) StorageUsage(ctx context.Context, id string) (int64, error) {
	c, ctr, ctx, err := r.load(ctx, id)
	if err != nil {
		return 0, err
	}
	info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return 0, r.wrap(err)
	}
	usage, err := c.SnapshotService(info.Snapshotter).Usage(ctx, info.SnapshotKey)
	if err != nil {
		return 0, r.wrap(err)
	}
	return usage.Size, nil
}
