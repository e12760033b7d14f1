// Package runtime is berth's boundary to the container runtime. It owns
// images, containers, tasks and their statistics, and speaks containerd
// today. It knows nothing about bots, MCP or the agent protocol: callers
// hand it complete container specifications and get plain data back.
//
// Errors carry errdefs classes (NotFound, AlreadyExists, InvalidArgument,
// Unavailable, ...) so the layers above can map them without knowing
// containerd.
package runtime

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/containerd/errdefs"
)

// Runtime is the narrow set of operations berth needs from a container
// runtime. It is deliberately small so that a second backend (Kubernetes
// pods on containerd nodes) can implement it without touching the tools.
// It is composed of one interface per concern so that a caller can ask for
// only what it uses; runtimetest.Suite states the behaviour every
// implementation shares.
type Runtime interface {
	// Ping checks that the runtime answers.
	Ping(ctx context.Context) error

	Images
	Containers
	Tasks
	Snapshots
	Metrics
}

// Images are the images the runtime holds.
type Images interface {
	// EnsureImage makes ref available and unpacked for snapshotter,
	// pulling it as policy says. progress, if not nil, is called as
	// bytes arrive. Cancelling ctx abandons the pull and leaves nothing.
	EnsureImage(ctx context.Context, ref string, policy PullPolicy, snapshotter string, progress func(PullProgress)) (Image, error)
	// ImportImages reads an OCI or docker archive and unpacks its images.
	// name, if set, names an archive's single unnamed image.
	ImportImages(ctx context.Context, archive io.Reader, snapshotter, name string) ([]Image, error)
	// ListImages lists the images, sorted by name.
	ListImages(ctx context.Context) ([]Image, error)
	// Image describes the image named ref.
	Image(ctx context.Context, ref string) (Image, error)
	// DeleteImage removes the image record; containerd collects what only
	// it held.
	DeleteImage(ctx context.Context, ref string) error
}

// Containers are container records: identity, labels, configuration and
// writable layer, apart from the process that runs in them (Tasks).
type Containers interface {
	CreateContainer(ctx context.Context, spec ContainerSpec) error
	// CreateContainerFromSnapshot creates a container whose writable layer
	// starts from the committed snapshot parentKey.
	CreateContainerFromSnapshot(ctx context.Context, spec ContainerSpec, parentKey string) error
	// DeleteContainer removes the container, its task and its writable layer.
	DeleteContainer(ctx context.Context, id string) error
	Container(ctx context.Context, id string) (Container, error)
	// Containers lists containers that carry the label key.
	Containers(ctx context.Context, labelKey string) ([]Container, error)
	// SetLabels sets labels on the container; an empty value removes one.
	SetLabels(ctx context.Context, id string, labels map[string]string) error
	// ProcessEnv is the environment the container's process starts with.
	ProcessEnv(ctx context.Context, id string) ([]string, error)
	// CheckDevices reports device names the runtime cannot inject.
	CheckDevices(names []string) error
	// SetNetwork replaces the container's network configuration (spec's
	// Network); it applies from the next StartTask, a running task keeps
	// the network it started with.
	SetNetwork(ctx context.Context, id string, n Network) error
}

// Tasks run and stop a container's process.
type Tasks interface {
	// StartTask starts the container's process, replacing a stopped task.
	// A running task is left alone and its pid returned.
	StartTask(ctx context.Context, id, logPath string) (pid uint32, err error)
	// StopTask sends SIGTERM, waits up to grace, then SIGKILLs every
	// process, and removes the task. Stopping a stopped container is a no-op.
	StopTask(ctx context.Context, id string, grace time.Duration) error
}

// Snapshots are committed copies of containers' writable layers.
type Snapshots interface {
	// SnapshotContainer commits the container's writable layer as
	// snapshot key while its task keeps running, and says how long the
	// task was paused.
	SnapshotContainer(ctx context.Context, id, key string, labels map[string]string) (SnapshotInfo, time.Duration, error)
	// ListSnapshots lists committed snapshots carrying labelKey=labelValue.
	ListSnapshots(ctx context.Context, snapshotter, labelKey, labelValue string) ([]SnapshotInfo, error)
	// RollbackContainer rebases the stopped container's writable layer on
	// the committed snapshot key.
	RollbackContainer(ctx context.Context, id, key string) error
	// DeleteSnapshot removes a committed snapshot nothing builds on.
	DeleteSnapshot(ctx context.Context, snapshotter, key string) error
	// ReconcileSnapshots finishes or undoes snapshot work a crash interrupted.
	ReconcileSnapshots(ctx context.Context) error
	// DiffSnapshots lists what changed from one snapshot (committed or a
	// container's live layer) to another, a page at a time.
	DiffSnapshots(ctx context.Context, snapshotter, fromKey, toKey string, page Page) (SnapshotDiff, error)
	// ExportSnapshot names an image ref made of base's layers and those
	// of the committed snapshot key and the snapshots below it, with labels
	// on the image record.
	ExportSnapshot(ctx context.Context, snapshotter, key, base, ref string, labels map[string]string) (Image, error)
}

// Metrics measure what a container uses.
type Metrics interface {
	// Stats samples the task's cgroup counters.
	Stats(ctx context.Context, id string) (Stats, error)
	// StorageUsage is the size in bytes of the container's own writable layer.
	StorageUsage(ctx context.Context, id string) (int64, error)
}

// PullPolicy says when EnsureImage contacts the registry.
type PullPolicy string

const (
	PullIfNotPresent PullPolicy = "if_not_present"
	PullAlways       PullPolicy = "always"
	PullNever        PullPolicy = "never"
)

// ParsePullPolicy accepts the policy names of the tools; empty means if_not_present.
func ParsePullPolicy(s string) (PullPolicy, error) {
	switch p := PullPolicy(s); p {
	case "":
		return PullIfNotPresent, nil
	case PullIfNotPresent, PullAlways, PullNever:
		return p, nil
	}
	return "", fmt.Errorf("pull policy %q is not one of if_not_present, always, never", s)
}

// PullProgress is a snapshot of one image pull.
type PullProgress struct {
	Phase      string // "resolving", "downloading", "unpacking"
	Done       int64  // bytes of this image's blobs present so far
	Total      int64  // bytes of this image's blobs, once the manifest is known
	Layers     int
	LayersDone int
}

// Image is an image the runtime holds.
type Image struct {
	Name      string    `json:"name"`
	Digest    string    `json:"digest"`
	Size      int64     `json:"size_bytes"`
	CreatedAt time.Time `json:"created_at"`
	Pulled    bool      `json:"pulled,omitempty"`
	// Labels of the image record; berth.dev/owner-bot names the bot an
	// image belongs to.
	Labels map[string]string `json:"labels,omitempty"`
}

// Mount is a host path made visible in a container.
type Mount struct {
	Source, Destination string
	ReadOnly            bool
}

// Limits bound what a container may use; zero means unlimited.
type Limits struct {
	CPUs        float64 `json:"cpus,omitempty"`
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
	Pids        int64   `json:"pids,omitempty"`
}

// ContainerSpec is everything needed to create a container.
type ContainerSpec struct {
	ID          string
	Image       string
	Snapshotter string
	Labels      map[string]string
	Hostname    string
	Args        []string
	Env         []string // added to the image's environment
	Mounts      []Mount
	Limits      Limits
	Devices     []string // CDI device names
	// RunAsRoot runs the process as root whatever the image's User says
	// (berth's init must be root); the image's user is passed to it in
	// ImageUserEnv so it can apply it to the commands it runs.
	RunAsRoot bool
	// Network is the container's network; the zero value is a network
	// namespace of its own with only loopback.
	Network Network
}

// Network says which network namespace a container's process gets and
// which host files name its resolver and hosts. The runtime knows nothing
// of bridges or policies: whoever prepared the namespace hands over its path.
type Network struct {
	// NetnsPath joins this existing network namespace (a bind-mounted
	// namespace file) instead of creating a new one.
	NetnsPath string
	// Host runs in the host's network namespace; NetnsPath must be empty.
	Host bool
	// ResolvConf and Hosts are host files bind-mounted read-only at
	// /etc/resolv.conf and /etc/hosts; empty leaves the image's.
	ResolvConf, Hosts string
}

// Validate says why n cannot be applied.
func (n Network) Validate() error {
	if n.Host && n.NetnsPath != "" {
		return fmt.Errorf("%w: a host-network container cannot also join namespace %s", errdefs.ErrInvalidArgument, n.NetnsPath)
	}
	return nil
}

// TaskStatus is the state of a container's process.
type TaskStatus string

const (
	TaskRunning TaskStatus = "running"
	TaskStopped TaskStatus = "stopped"
	TaskPaused  TaskStatus = "paused"
	TaskNone    TaskStatus = "none" // never started, or its task was removed
	TaskUnknown TaskStatus = "unknown"
)

// Container is a container as the runtime sees it.
type Container struct {
	ID          string
	Image       string
	Snapshotter string
	Labels      map[string]string
	CreatedAt   time.Time
	Status      TaskStatus
	PID         uint32
	ExitStatus  uint32
}

// Stats are cumulative cgroup counters at one instant.
type Stats struct {
	At            time.Time
	CPUUsageNanos uint64
	MemoryUsage   uint64
	MemoryLimit   uint64 // 0 when unlimited
	Pids          uint64
	PidsLimit     uint64 // 0 when unlimited
}
