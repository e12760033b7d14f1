package tools

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/server"
)

// BotInput names one bot's workspace.
type BotInput struct {
	BotID string `json:"bot_id" jsonschema:"description=the bot whose workspace this is (lower-case letters\\, digits\\, single - _ or . between them; at most 63)"`
}

func (b BotInput) bot() string { return b.BotID }

// CreateInput are the settings of a new workspace.
type CreateInput struct {
	BotID       string            `json:"bot_id" jsonschema:"description=the bot whose workspace this is (lower-case letters\\, digits\\, single - _ or . between them; at most 63)"`
	Image       string            `json:"image,omitempty" jsonschema:"description=OCI image reference; default from berth's config"`
	PullPolicy  string            `json:"pull_policy,omitempty" jsonschema:"enum=if_not_present,enum=always,enum=never,description=when to pull the image (default if_not_present)"`
	Devices     []string          `json:"devices,omitempty" jsonschema:"description=CDI device names to inject\\, e.g. nvidia.com/gpu=0; tokens without the admin scope may use only the devices berth's --allowed-devices lists"`
	Snapshotter string            `json:"snapshotter,omitempty" jsonschema:"description=containerd snapshotter; default from berth's config"`
	Env         map[string]string `json:"env,omitempty" jsonschema:"description=environment variables for every command in the workspace"`
	CPUs        float64           `json:"cpus,omitempty" jsonschema:"minimum=0,description=CPU limit in cores\\, e.g. 1.5; 0 = berth's default (--default-cpus); at most --max-cpus"`
	Memory      string            `json:"memory,omitempty" jsonschema:"description=memory limit such as 512M or 2G (bytes if no unit); empty = berth's default (--default-memory); at most --max-memory"`
	Pids        int64             `json:"pids,omitempty" jsonschema:"minimum=0,description=maximum number of processes; 0 = berth's default (--default-pids); at most --max-pids"`
	RestoreData bool              `json:"restore_data,omitempty" jsonschema:"description=bring back the /data that workspace_delete preserve_data kept"`
	Network     string            `json:"network,omitempty" jsonschema:"enum=none,enum=bridge,enum=host,description=network mode: bridge (own address on berth's bridge with DNS; egress under the workspace's policy; no access to other workspaces or the host)\\, none (loopback only) or host (the host's network; admin scope only); default from berth's --default-network (bridge where available)"`
}

func (c CreateInput) bot() string { return c.BotID }

// CreateOutput says what workspace_create did.
type CreateOutput struct {
	Workspace  workspace.Workspace `json:"workspace"`
	Created    bool                `json:"created" jsonschema:"description=false when the workspace already existed"`
	Pulled     bool                `json:"pulled,omitempty" jsonschema:"description=true when the image was pulled from a registry"`
	NotApplied []string            `json:"not_applied,omitempty" jsonschema:"description=requested settings that the existing workspace kept"`
	Restored   *wire.ImportResult  `json:"restored,omitempty" jsonschema:"description=what restore_data brought back"`
	// The workspace exists even when the restore failed, so the call
	// succeeds and says so here rather than hiding the workspace.
	RestoreError string `json:"restore_error,omitempty" jsonschema:"description=why restore_data failed; the workspace was created all the same and the backup kept (data_restore retries\\, data_preserved_delete discards it)"`
}

// DeleteInput names a workspace to delete.
type DeleteInput struct {
	BotID         string `json:"bot_id" jsonschema:"description=the bot whose workspace this is"`
	GraceSeconds  int    `json:"grace_seconds,omitempty" jsonschema:"minimum=0,maximum=3600,description=seconds between SIGTERM and SIGKILL; default from berth's config"`
	PreserveData  bool   `json:"preserve_data,omitempty" jsonschema:"description=keep a backup of /data on berth's host for workspace_create restore_data"`
	KeepSnapshots bool   `json:"keep_snapshots,omitempty" jsonschema:"description=keep the workspace's snapshot versions (default: deleted with it)"`
}

func (d DeleteInput) bot() string { return d.BotID }

// StopInput names a workspace and how long its processes get to exit.
type StopInput struct {
	BotID        string `json:"bot_id" jsonschema:"description=the bot whose workspace this is"`
	GraceSeconds int    `json:"grace_seconds,omitempty" jsonschema:"minimum=0,maximum=3600,description=seconds between SIGTERM and SIGKILL; default from berth's config"`
}

func (s StopInput) bot() string { return s.BotID }

func (s StopInput) grace() (time.Duration, error) {
	if s.GraceSeconds < 0 || s.GraceSeconds > 3600 {
		return 0, fmt.Errorf("grace_seconds must be between 0 and 3600")
	}
	return time.Duration(s.GraceSeconds) * time.Second, nil
}

// DeleteOutput confirms a deletion.
type DeleteOutput struct {
	BotID         string `json:"bot_id"`
	Deleted       bool   `json:"deleted" jsonschema:"description=false when the bot had no workspace (nothing was deleted; not an error)"`
	PreservedData bool   `json:"preserved_data,omitempty"`
	Declined
}

// PageInput pages through a list.
type PageInput struct {
	Cursor string `json:"cursor,omitempty" jsonschema:"description=next_cursor of the previous page"`
	Limit  int    `json:"limit,omitempty" jsonschema:"minimum=0,maximum=1000,description=entries per page (default 100)"`
}

func (p PageInput) limit() (int, error) {
	switch {
	case p.Limit == 0:
		return 100, nil
	case p.Limit < 0 || p.Limit > 1000:
		return 0, fmt.Errorf("limit must be between 1 and 1000")
	}
	return p.Limit, nil
}

// ListOutput is one page of workspaces.
type ListOutput struct {
	Workspaces []workspace.Workspace `json:"workspaces"`
	NextCursor string                `json:"next_cursor,omitempty" jsonschema:"description=pass as cursor to get the next page; absent on the last page"`
}

func workspaceTools(h handlers) []server.ServerTool {
	return []server.ServerTool{
		define("workspace_create", "Create workspace",
			"Create the bot's long-lived Linux workspace (a container with persistent files) and start it. Pulls the image if needed, reporting progress. If the workspace already exists it is returned unchanged and not_applied lists the requested settings it kept.",
			hints{idempotent: true, openWorld: true}, auth.ScopeManage, h.workspaceCreate),
		define("workspace_get", "Get workspace",
			"Describe the bot's workspace: status, image, limits, devices and the health of its agent.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead, h.workspaceGet),
		define("workspace_list", "List workspaces",
			"List workspaces, sorted by bot id, a page at a time.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead, h.workspaceList),
		define("workspace_start", "Start workspace",
			"Start the bot's stopped workspace and wait until its agent answers. Starting a running workspace does nothing.",
			hints{idempotent: true}, auth.ScopeManage, h.workspaceStart),
		define("workspace_stop", "Stop workspace",
			"Stop the bot's workspace: SIGTERM to every process, then SIGKILL after the grace period. Files are kept; it stays stopped until workspace_start.",
			hints{destructive: true, idempotent: true}, auth.ScopeManage, h.workspaceStop),
		define("workspace_delete", "Delete workspace",
			"Stop and delete the bot's workspace with all its files, its snapshots (unless keep_snapshots) and its data_export archives. This cannot be undone, except for /data with preserve_data=true. Deleting a bot that has no workspace succeeds with deleted=false.",
			hints{destructive: true, idempotent: true}, auth.ScopeManage, h.workspaceDelete),
		define("workspace_metrics", "Workspace metrics",
			"CPU, memory, process count and storage used by the bot's running workspace. Cheap enough to poll every few seconds.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead, h.workspaceMetrics),
	}
}

func (h handlers) workspaceCreate(ctx context.Context, c *call, in CreateInput) (CreateOutput, string, error) {
	mem, err := workspace.ParseSize(in.Memory)
	if err != nil {
		return CreateOutput{}, "", err
	}
	if ctx, err = imageAccess(ctx, h.Deps, in.Image); err != nil {
		return CreateOutput{}, "", err
	}
	res, err := h.Manager.Create(ctx, workspace.CreateRequest{
		BotID: in.BotID, Image: in.Image, PullPolicy: in.PullPolicy, Devices: in.Devices,
		Snapshotter: in.Snapshotter, Env: in.Env, RestoreData: in.RestoreData,
		Limits: runtime.Limits{CPUs: in.CPUs, MemoryBytes: mem, Pids: in.Pids},
		// Devices reach the host's hardware: only admins pick any.
		AnyDevice: auth.FromContext(ctx).Allow(auth.ScopeAdmin, "") == nil,
		// Host networking escapes the policy and the isolation: admins only.
		Network: in.Network, AllowHostNetwork: auth.FromContext(ctx).Allow(auth.ScopeAdmin, "") == nil,
	}, c.progress(ctx))
	if err != nil {
		return CreateOutput{}, "", err
	}
	out := CreateOutput{Workspace: res.Workspace, Created: res.Created, Pulled: res.Pulled, NotApplied: res.NotApplied, Restored: res.Restored, RestoreError: res.RestoreError}
	summary := fmt.Sprintf("created workspace %s from %s; it is %s", in.BotID, res.Workspace.Image, res.Workspace.Status)
	if res.RestoreError != "" {
		summary += "; its preserved /data was NOT restored (the backup is kept: data_restore retries, data_preserved_delete discards it): " + res.RestoreError
	}
	if !res.Created {
		summary = fmt.Sprintf("workspace %s already exists (%s, %s)", in.BotID, res.Workspace.Image, res.Workspace.Status)
		if len(res.NotApplied) > 0 {
			summary += "; these requested settings were NOT applied: " + strings.Join(res.NotApplied, "; ")
		}
	}
	return out, summary, nil
}

func (h handlers) workspaceGet(ctx context.Context, _ *call, in BotInput) (workspace.Workspace, string, error) {
	ws, err := h.Manager.Get(ctx, in.BotID)
	if err != nil {
		return ws, "", err
	}
	return ws, fmt.Sprintf("workspace %s is %s (%s)", ws.BotID, ws.Status, ws.Image), nil
}

func (h handlers) workspaceList(ctx context.Context, _ *call, in PageInput) (ListOutput, string, error) {
	limit, err := in.limit()
	if err != nil {
		return ListOutput{}, "", err
	}
	list, more, err := h.Manager.ListVisible(ctx, in.Cursor, limit, mayUseBot(auth.FromContext(ctx)))
	if err != nil {
		return ListOutput{}, "", err
	}
	out := ListOutput{Workspaces: list}
	if more && len(list) > 0 {
		out.NextCursor = list[len(list)-1].BotID
	}
	return out, fmt.Sprintf("%d workspace(s)%s", len(list), moreText(more)), nil
}

func (h handlers) workspaceStart(ctx context.Context, _ *call, in BotInput) (workspace.Workspace, string, error) {
	ws, err := h.Manager.Start(ctx, in.BotID)
	if err != nil {
		return ws, "", err
	}
	return ws, fmt.Sprintf("workspace %s is %s", ws.BotID, ws.Status), nil
}

func (h handlers) workspaceStop(ctx context.Context, _ *call, in StopInput) (workspace.Workspace, string, error) {
	grace, err := in.grace()
	if err != nil {
		return workspace.Workspace{}, "", err
	}
	ws, err := h.Manager.Stop(ctx, in.BotID, grace)
	if err != nil {
		return ws, "", err
	}
	return ws, fmt.Sprintf("workspace %s is %s", ws.BotID, ws.Status), nil
}

func (h handlers) workspaceDelete(ctx context.Context, c *call, in DeleteInput) (DeleteOutput, string, error) {
	grace, err := StopInput{GraceSeconds: in.GraceSeconds}.grace()
	if err != nil {
		return DeleteOutput{}, "", err
	}
	if declined, err := h.confirm(ctx, c, h.deleteQuestion(ctx, in)); declined != "" || err != nil {
		return DeleteOutput{BotID: in.BotID, Declined: Declined{true}}, declined, err
	}
	deleted, err := h.Manager.Delete(ctx, in.BotID, workspace.DeleteOptions{Grace: grace, PreserveData: in.PreserveData, KeepSnapshots: in.KeepSnapshots})
	if err != nil {
		return DeleteOutput{}, "", err
	}
	if !deleted {
		summary := fmt.Sprintf("bot %s has no workspace: nothing to delete", in.BotID)
		if h.Manager.HasPreservedData(in.BotID) {
			summary += "; a preserved /data waits for workspace_create restore_data (data_preserved_delete removes it)"
		}
		return DeleteOutput{BotID: in.BotID}, summary, nil
	}
	summary := fmt.Sprintf("deleted workspace %s", in.BotID)
	if in.PreserveData {
		summary += "; /data is preserved for workspace_create restore_data"
	}
	return DeleteOutput{BotID: in.BotID, Deleted: true, PreservedData: in.PreserveData}, summary, nil
}

func (h handlers) workspaceMetrics(ctx context.Context, _ *call, in BotInput) (workspace.Metrics, string, error) {
	mt, err := h.Manager.Metrics(ctx, in.BotID)
	if err != nil {
		return mt, "", err
	}
	return mt, fmt.Sprintf("%s: cpu %.1f%%, memory %d bytes, %d processes, storage %d bytes",
		in.BotID, mt.CPUPercent, mt.MemoryUsage, mt.Pids, mt.StorageUsed), nil
}

// mayUseBot is the filter of what a principal may see: nil (everything)
// for one not limited to some bots.
func mayUseBot(p *auth.Principal) func(bot string) bool {
	if p == nil || p.Bots == nil {
		return nil
	}
	return func(bot string) bool { return p.Bots[bot] }
}

func moreText(more bool) string {
	if more {
		return "; more follow: pass next_cursor"
	}
	return ""
}
