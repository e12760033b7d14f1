// Package workspace owns the life of bot workspaces: it turns a bot id and
// its settings into a container with berth's agent as init, keeps every
// piece of state in containerd labels, serialises mutations per bot, and
// re-adopts what it finds after a restart. It is the only package that
// talks to the runtime; tools and resources call the Manager.
package workspace

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/remedy"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/containerd/errdefs"
)

// Label keys. Everything berth knows about a workspace is in these labels
// (and in the container's OCI spec), so a restarted berth needs nothing else.
const (
	labelPrefix    = "berth.dev/"
	LabelBot       = labelPrefix + "bot"
	labelDesired   = labelPrefix + "desired-state"
	labelImage     = labelPrefix + "image"
	labelLimits    = labelPrefix + "limits"
	labelDevices   = labelPrefix + "devices"
	labelEnvNames  = labelPrefix + "env-names"
	labelCreatedBy = labelPrefix + "created-by"
	labelStartedBy = labelPrefix + "started-by"
)

// Desired states, recorded so a restarted berth knows what the user wants.
const (
	desiredRunning = "running"
	desiredStopped = "stopped"
)

// In-container paths of berth's own files.
const (
	agentPathInContainer = "/.berth/berth"
)

// botIDPattern keeps ids safe as containerd ids, host path elements and
// URI segments: lower-case letters, digits, and single '-', '_' or '.'
// between them.
var botIDPattern = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*$`)

// MaxBotIDLength bounds bot ids (they end up in socket paths).
const MaxBotIDLength = 63

// ValidateBotID says why id cannot name a workspace, or nil.
func ValidateBotID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: bot_id is required", errdefs.ErrInvalidArgument)
	}
	if len(id) > MaxBotIDLength || !botIDPattern.MatchString(id) {
		return fmt.Errorf("%w: bot_id %q is invalid: use 1-%d lower-case letters and digits, separated by single '-', '_' or '.' (for example \"support-bot-1\")",
			errdefs.ErrInvalidArgument, id, MaxBotIDLength)
	}
	return nil
}

// Workspace is what berth reports about one bot's workspace.
type Workspace struct {
	BotID       string         `json:"bot_id"`
	Status      string         `json:"status" jsonschema:"enum=running,enum=stopped,enum=paused,enum=unknown"`
	Image       string         `json:"image"`
	Snapshotter string         `json:"snapshotter"`
	CreatedAt   time.Time      `json:"created_at"`
	Limits      runtime.Limits `json:"limits" jsonschema:"description=the limits the workspace runs with; a field absent (0) is unlimited: only workspaces made before berth set default limits have those"`
	Devices     []string       `json:"devices,omitempty"`
	EnvNames    []string       `json:"env_names,omitempty" jsonschema:"description=names of the environment variables set at create (values are not shown)"`
	PID         uint32         `json:"host_pid,omitempty"`
	CreatedBy   string         `json:"created_by,omitempty" jsonschema:"description=berth version that created the workspace"`
	Agent       *AgentStatus   `json:"agent,omitempty"`
	Network     string         `json:"network" jsonschema:"enum=none,enum=bridge,enum=host,description=network mode: none (loopback only)\\, bridge (own address on berth's bridge under the egress policy)\\, host (the host's network)"`
	IP          string         `json:"ip,omitempty" jsonschema:"description=the workspace's address on berth's bridge while it runs"`
	// HasPreservedData: a backup of /data kept by workspace_delete
	// preserve_data waits to be restored (workspace_create restore_data,
	// data_restore).
	HasPreservedData bool `json:"has_preserved_data"`
}

// AgentStatus is the health of a running workspace's agent.
type AgentStatus struct {
	Status          string `json:"status" jsonschema:"enum=ready,enum=outdated,enum=unreachable"`
	ProtocolVersion int    `json:"protocol_version,omitempty"`
	BerthVersion    string `json:"berth_version,omitempty"`
	Error           string `json:"error,omitempty"`
}

// Status values of a workspace.
const (
	StatusRunning = "running"
	StatusStopped = "stopped"
	StatusPaused  = "paused"
	StatusUnknown = "unknown"
)

func statusOf(s runtime.TaskStatus) string {
	switch s {
	case runtime.TaskRunning:
		return StatusRunning
	case runtime.TaskStopped, runtime.TaskNone:
		return StatusStopped
	case runtime.TaskPaused:
		return StatusPaused
	}
	return StatusUnknown
}

// splitList reads a comma-separated label value.
func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// ErrNotFound is returned for a bot without a workspace.
var ErrNotFound = errdefs.ErrNotFound

func notFound(bot string) error {
	return remedy.With(remedy.Create, fmt.Errorf("%w: bot %q has no workspace", ErrNotFound, bot))
}

// isNotFound reports whether err means the container is gone.
func isNotFound(err error) bool { return errors.Is(err, errdefs.ErrNotFound) }

// container is the bot's container, or the error that says the bot has no
// workspace (with its remedy) when there is none.
func (m *Manager) container(ctx context.Context, bot string) (runtime.Container, error) {
	ctr, err := m.rt.Container(ctx, bot)
	if isNotFound(err) {
		return runtime.Container{}, notFound(bot)
	}
	return ctr, err
}

// ListVisible returns up to limit of the workspaces that visible accepts
// (nil accepts all) whose bot id sorts after `after`, and whether more of
// those follow. It filters before it pages: a caller limited to some bots
// must neither count nor be told of ("more follow") the others, and must
// reach its own bots at any page size.
func (m *Manager) ListVisible(ctx context.Context, after string, limit int, visible func(bot string) bool) ([]Workspace, bool, error) {
	ctrs, err := m.rt.Containers(ctx, LabelBot)
	if err != nil {
		return nil, false, err
	}
	sort.Slice(ctrs, func(i, j int) bool { return ctrs[i].ID < ctrs[j].ID })
	out := []Workspace{}
	for _, c := range ctrs {
		if c.ID <= after || (visible != nil && !visible(c.ID)) {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, m.describe(ctx, c, false))
	}
	return out, false, nil
}
