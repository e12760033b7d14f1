package tools

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/server"
)

// SnapshotCreateInput names a new snapshot.
type SnapshotCreateInput struct {
	BotID string `json:"bot_id"`
	Name  string `json:"name,omitempty" jsonschema:"description=display name for the version"`
}

func (s SnapshotCreateInput) bot() string { return s.BotID }

// SnapshotListInput pages a lineage.
type SnapshotListInput struct {
	BotID  string `json:"bot_id"`
	Offset int    `json:"offset,omitempty" jsonschema:"minimum=0,description=next_offset of the previous page"`
	Limit  int    `json:"limit,omitempty" jsonschema:"minimum=0,maximum=1000,description=versions per page (oldest first; default 100)"`
}

func (s SnapshotListInput) bot() string { return s.BotID }

// Versions per snapshot_list page.
const (
	snapshotListDefaultLimit = 100
	snapshotListMaxLimit     = 1000
)

// SnapshotVersionInput names a version.
type SnapshotVersionInput struct {
	BotID   string `json:"bot_id"`
	Version int    `json:"version" jsonschema:"minimum=1"`
}

func (s SnapshotVersionInput) bot() string { return s.BotID }

// RollbackOutput is the workspace after a rollback.
type RollbackOutput struct {
	Workspace   workspace.Workspace `json:"workspace"`
	PreRollback workspace.Snapshot  `json:"pre_rollback" jsonschema:"description=the automatic snapshot of the state before the rollback: roll back to it to undo"`
	Declined
}

// SnapshotDeleteOutput names the version deleted.
type SnapshotDeleteOutput struct {
	SnapshotVersionInput
	Declined
}

// SnapshotDiffInput compares two versions, or a version and the live workspace.
type SnapshotDiffInput struct {
	BotID  string `json:"bot_id"`
	From   int    `json:"from_version" jsonschema:"minimum=1"`
	To     int    `json:"to_version,omitempty" jsonschema:"minimum=0,description=absent or 0: the live workspace"`
	Offset int    `json:"offset,omitempty" jsonschema:"minimum=0,description=next_offset of the previous page"`
	Limit  int    `json:"limit,omitempty" jsonschema:"minimum=0,maximum=5000,description=changes per page (default 200)"`
}

func (s SnapshotDiffInput) bot() string { return s.BotID }

// ForkInput makes a new workspace from a version of another.
type ForkInput struct {
	BotID    string `json:"bot_id" jsonschema:"description=the workspace to fork from"`
	Version  int    `json:"version" jsonschema:"minimum=1"`
	NewBotID string `json:"new_bot_id" jsonschema:"description=the bot that gets the new workspace"`
}

func (f ForkInput) bot() string { return f.BotID }

func snapshotTools(h handlers) []server.ServerTool {
	return []server.ServerTool{
		define("snapshot_create", "Snapshot workspace",
			"Save the workspace's whole filesystem as the next numbered version while it keeps running: processes keep their PIDs, terminals and background commands survive (the workspace is paused only while the changes are read).",
			hints{}, auth.ScopeManage, h.snapshotCreate),
		define("snapshot_list", "List snapshots",
			"The workspace's lineage, a page of versions at a time: its image and its numbered versions with name, source (manual, pre_rollback), time, parent, the size of the changes each holds and the disk each takes, and the disk all take together.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead, h.snapshotList),
		define("snapshot_rollback", "Roll back workspace",
			"Replace the workspace's files with a version. The current state is first saved as a pre_rollback version (roll back to it to undo); the workspace restarts, so running processes and terminals end.",
			hints{destructive: true}, auth.ScopeManage, h.snapshotRollback),
		define("snapshot_diff", "Diff snapshots",
			"Files added, modified and deleted between two versions, or from a version to the live workspace, sorted and paged.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead, h.snapshotDiff),
		define("workspace_fork", "Fork workspace",
			"Create a new workspace for new_bot_id whose files start as a version of bot_id's workspace (same image, limits and devices; env is not copied). The two are independent afterwards.",
			hints{idempotent: false}, auth.ScopeManage, h.workspaceFork),
		define("snapshot_delete", "Delete snapshot",
			"Delete a version and free its space. Refused while a later version is stored as changes on it (delete those first) or the live workspace was rolled back to it.",
			hints{destructive: true, idempotent: true}, auth.ScopeManage, h.snapshotDelete),
		define("snapshot_export", "Export snapshot as image",
			"Make a version an OCI image named "+workspace.SnapshotImagePrefix+"{bot_id}:v{version}: the workspace's image with the version's layers on top. "+
				"workspace_create can then start any bot from it, and containerd's tools can export it. Nothing is copied; exporting again replaces the image.",
			hints{destructive: true, idempotent: true}, auth.ScopeManage, h.snapshotExport),
	}
}

func (h handlers) snapshotCreate(ctx context.Context, c *call, in SnapshotCreateInput) (workspace.Snapshot, string, error) {
	s, err := h.Manager.CreateSnapshot(ctx, in.BotID, in.Name, c.progress(ctx))
	if err != nil {
		return s, "", err
	}
	summary := fmt.Sprintf("saved version %d of %s (%d bytes of changes; paused %d ms)", s.Version, in.BotID, s.SizeBytes, s.PauseMilli)
	if s.Compacted {
		summary += fmt.Sprintf("; compacted: stored with its whole content (%d bytes of disk) so that the lineage stays mountable", s.DiskBytes)
	}
	return s, summary, nil
}

func (h handlers) snapshotList(ctx context.Context, _ *call, in SnapshotListInput) (workspace.Lineage, string, error) {
	if in.Offset < 0 || in.Limit < 0 || in.Limit > snapshotListMaxLimit {
		return workspace.Lineage{}, "", fmt.Errorf("offset must not be negative and limit must be between 0 and %d", snapshotListMaxLimit)
	}
	l, err := h.Manager.ListSnapshots(ctx, in.BotID)
	if err != nil {
		return l, "", err
	}
	limit := in.Limit
	if limit == 0 {
		limit = snapshotListDefaultLimit
	}
	l.TotalVersions = len(l.Versions)
	l.Versions = l.Versions[min(in.Offset, len(l.Versions)):]
	if len(l.Versions) > limit {
		l.Versions, l.NextOffset = l.Versions[:limit], in.Offset+limit
	}
	summary := fmt.Sprintf("%s: image %s, %d version(s) taking %d bytes of disk", in.BotID, l.Image, l.TotalVersions, l.DiskBytes)
	if l.NextOffset > 0 {
		summary += fmt.Sprintf("; more follow: pass offset %d", l.NextOffset)
	}
	for _, v := range l.Versions {
		summary += fmt.Sprintf("\nv%d %s %q %s %d bytes of changes, %d on disk", v.Version, v.Source, v.Name, v.CreatedAt.Format("2006-01-02 15:04:05"), v.SizeBytes, v.DiskBytes)
		if v.Compacted {
			summary += " (compacted)"
		}
	}
	return l, summary, nil
}

func (h handlers) snapshotRollback(ctx context.Context, c *call, in SnapshotVersionInput) (RollbackOutput, string, error) {
	if declined, err := h.confirm(ctx, c, h.rollbackQuestion(ctx, in)); declined != "" || err != nil {
		return RollbackOutput{Declined: Declined{true}}, declined, err
	}
	ws, pre, err := h.Manager.Rollback(ctx, in.BotID, in.Version, c.progress(ctx))
	if err != nil {
		return RollbackOutput{}, "", err
	}
	return RollbackOutput{Workspace: ws, PreRollback: pre},
		fmt.Sprintf("%s now runs version %d; the state before is version %d", in.BotID, in.Version, pre.Version), nil
}

func (h handlers) snapshotDiff(ctx context.Context, _ *call, in SnapshotDiffInput) (runtime.SnapshotDiff, string, error) {
	if in.Offset < 0 || in.Limit < 0 || in.Limit > runtime.DiffMaxLimit {
		return runtime.SnapshotDiff{}, "", fmt.Errorf("offset must not be negative and limit must be between 0 and %d", runtime.DiffMaxLimit)
	}
	diff, err := h.Manager.DiffSnapshots(ctx, in.BotID, in.From, in.To, runtime.Page{Offset: in.Offset, Limit: in.Limit})
	if err != nil {
		return diff, "", err
	}
	to := "the live workspace"
	if in.To > 0 {
		to = fmt.Sprintf("version %d", in.To)
	}
	summary := fmt.Sprintf("%d change(s) from version %d to %s", diff.Total, in.From, to)
	if diff.NextOffset > 0 {
		summary += fmt.Sprintf("; more follow: pass offset %d", diff.NextOffset)
	}
	if diff.Truncated {
		summary += "; capped: compare narrower versions"
	}
	for _, ch := range diff.Changes {
		summary += fmt.Sprintf("\n%s %s (%s)", ch.Kind, ch.Path, ch.Type)
	}
	return diff, summary, nil
}

func (h handlers) workspaceFork(ctx context.Context, c *call, in ForkInput) (workspace.Workspace, string, error) {
	if err := auth.FromContext(ctx).Allow(auth.ScopeManage, in.NewBotID); err != nil {
		return workspace.Workspace{}, "", err
	}
	// The fork runs the source's image, which may be another bot's export.
	if src, err := h.Manager.Get(ctx, in.BotID); err == nil {
		if err := checkImageOwner(ctx, h.Manager, src.Image); err != nil {
			return workspace.Workspace{}, "", err
		}
	}
	ws, err := h.Manager.Fork(ctx, in.BotID, in.Version, in.NewBotID, c.progress(ctx))
	if err != nil {
		return ws, "", err
	}
	return ws, fmt.Sprintf("forked %s version %d as %s (%s)", in.BotID, in.Version, in.NewBotID, ws.Status), nil
}

func (h handlers) snapshotDelete(ctx context.Context, c *call, in SnapshotVersionInput) (SnapshotDeleteOutput, string, error) {
	out := SnapshotDeleteOutput{SnapshotVersionInput: in}
	if declined, err := h.confirm(ctx, c, h.snapshotDeleteQuestion(ctx, in)); declined != "" || err != nil {
		out.Declined.Declined = true
		return out, declined, err
	}
	if err := h.Manager.DeleteSnapshot(ctx, in.BotID, in.Version); err != nil {
		if gone(err) {
			return out, fmt.Sprintf("%v: nothing to delete", err), nil
		}
		return out, "", err
	}
	return out, fmt.Sprintf("deleted version %d of %s", in.Version, in.BotID), nil
}

func (h handlers) snapshotExport(ctx context.Context, _ *call, in SnapshotVersionInput) (runtime.Image, string, error) {
	img, err := h.Manager.ExportSnapshot(ctx, in.BotID, in.Version)
	if err != nil {
		return img, "", err
	}
	return img, fmt.Sprintf("version %d of %s is image %s (%s)", in.Version, in.BotID, img.Name, img.Digest), nil
}
