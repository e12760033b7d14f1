package tools

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/server"
)

// SnapshotCreateInput names a new snapshot.
type SnapshotCreateInput struct {
	BotID string `json:"bot_id"`
	Name  string `json:"name,omitempty" jsonschema:"description=display name for the version"`
}

func (s SnapshotCreateInput) bot() string { return s.BotID }

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
}

func snapshotTools(d Deps) []server.ServerTool {
	m := d.Manager
	return []server.ServerTool{
		define("snapshot_create", "Snapshot workspace",
			"Save the workspace's whole filesystem as the next numbered version while it keeps running: processes keep their PIDs, terminals and background commands survive (the workspace is paused only while the changes are read).",
			hints{}, auth.ScopeManage,
			func(ctx context.Context, c *call, in SnapshotCreateInput) (workspace.Snapshot, string, error) {
				s, err := m.CreateSnapshot(ctx, in.BotID, in.Name, c.progress(ctx))
				if err != nil {
					return s, "", err
				}
				return s, fmt.Sprintf("saved version %d of %s (%d bytes of changes; paused %d ms)", s.Version, in.BotID, s.SizeBytes, s.PauseMilli), nil
			}),
		define("snapshot_list", "List snapshots",
			"The workspace's lineage: its image and its numbered versions with name, source (manual, pre_rollback), time, size and parent.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead,
			func(ctx context.Context, _ *call, in BotInput) (workspace.Lineage, string, error) {
				l, err := m.ListSnapshots(ctx, in.BotID)
				if err != nil {
					return l, "", err
				}
				summary := fmt.Sprintf("%s: image %s, %d version(s)", in.BotID, l.Image, len(l.Versions))
				for _, v := range l.Versions {
					summary += fmt.Sprintf("\nv%d %s %q %s %d bytes", v.Version, v.Source, v.Name, v.CreatedAt.Format("2006-01-02 15:04:05"), v.SizeBytes)
				}
				return l, summary, nil
			}),
		define("snapshot_rollback", "Roll back workspace",
			"Replace the workspace's files with a version. The current state is first saved as a pre_rollback version (roll back to it to undo); the workspace restarts, so running processes and terminals end.",
			hints{destructive: true}, auth.ScopeManage,
			func(ctx context.Context, c *call, in SnapshotVersionInput) (RollbackOutput, string, error) {
				ws, pre, err := m.Rollback(ctx, in.BotID, in.Version, c.progress(ctx))
				if err != nil {
					return RollbackOutput{}, "", err
				}
				return RollbackOutput{Workspace: ws, PreRollback: pre},
					fmt.Sprintf("%s now runs version %d; the state before is version %d", in.BotID, in.Version, pre.Version), nil
			}),
		define("snapshot_delete", "Delete snapshot",
			"Delete a version and free its space. Refused while another version or the live workspace builds on it.",
			hints{destructive: true, idempotent: true}, auth.ScopeManage,
			func(ctx context.Context, _ *call, in SnapshotVersionInput) (SnapshotVersionInput, string, error) {
				if err := m.DeleteSnapshot(ctx, in.BotID, in.Version); err != nil {
					return in, "", err
				}
				return in, fmt.Sprintf("deleted version %d of %s", in.Version, in.BotID), nil
			}),
	}
}
