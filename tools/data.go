package tools

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"

	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// maxInlineArchive caps data_import's base64 archive; bigger archives go
// through PUT /bots/{bot_id}/data/import.
const maxInlineArchive = 16 << 20

// DataExportInput archives part of the workspace.
type DataExportInput struct {
	BotID string `json:"bot_id"`
	Path  string `json:"path,omitempty" jsonschema:"description=directory to archive: /data (the default) or a directory in it; relative paths are taken from /data"`
}

// DataExportDeleteInput names a kept export to delete.
type DataExportDeleteInput struct {
	BotID    string `json:"bot_id"`
	ExportID string `json:"export_id" jsonschema:"description=the export_id data_export returned"`
}

func (d DataExportDeleteInput) bot() string { return d.BotID }

func (d DataExportInput) bot() string { return d.BotID }

// DataExportOutput describes the archive and where to get it.
type DataExportOutput struct {
	workspace.Export
	ResourceURI string `json:"resource_uri" jsonschema:"description=read it as a blob resource (up to 8 MiB)"`
	DownloadURL string `json:"download_path" jsonschema:"description=download it over berth's HTTP transport at any size (same bearer token)"`
}

func (o DataExportOutput) content() []mcp.Content {
	return []mcp.Content{mcp.NewResourceLink(o.ResourceURI, "export-"+o.ID+".tar.gz",
		fmt.Sprintf("tar.gz of %s in %s's workspace", o.Path, o.BotID), "application/gzip")}
}

// DataImportInput extracts an archive into the workspace.
type DataImportInput struct {
	BotID         string `json:"bot_id"`
	ArchiveBase64 string `json:"archive_base64" jsonschema:"description=the archive (tar\\, tar.gz or zip)\\, base64; up to 16 MiB\\, bigger ones: PUT /bots/{bot_id}/data/import"`
	Path          string `json:"path,omitempty" jsonschema:"description=directory to extract into (default /data)"`
	Format        string `json:"format,omitempty" jsonschema:"enum=auto,enum=tar,enum=tar.gz,enum=zip,description=default auto"`
}

func (d DataImportInput) bot() string { return d.BotID }

func dataTools(h handlers) []server.ServerTool {
	return []server.ServerTool{
		define("data_export", "Export data",
			"Archive /data (or a directory in it; paths outside /data are refused) as tar.gz while the workspace keeps running; modes, empty directories and symlinks (as links) are kept. Returns a resource link, and a download path on the HTTP transport for any size. "+
				"Berth keeps the newest 5 exports per bot within a per-bot size quota; over it, the export is refused: delete old ones with data_export_delete.",
			hints{readOnly: true}, auth.ScopeRead, h.dataExport),
		define("data_export_delete", "Delete export",
			"Delete an archive data_export kept on berth's host, freeing its share of the bot's export quota. The workspace is not touched.",
			// Write scope: a read-only token destroys nothing, not even a
			// host-side copy another token made. Its exports count against
			// the quota like any; the refusal says who can free it.
			hints{destructive: true, idempotent: false}, auth.ScopeWrite, h.dataExportDelete),
		define("data_import", "Import data",
			"Extract a tar, tar.gz or zip archive under /data (or a directory in it). Absolute paths, '..', links out of the target, devices and archives past the entry or size caps are refused; a refused or failed import changes nothing. setuid/setgid bits are dropped.",
			hints{destructive: true}, auth.ScopeWrite, h.dataImport),
		define("data_restore", "Restore preserved data",
			"Bring back into the running workspace the /data that workspace_delete preserve_data kept. The backup is removed only after the restore succeeded.",
			hints{destructive: true}, auth.ScopeWrite, h.dataRestore),
		define("data_preserved_delete", "Discard preserved data",
			"Delete the backup of /data that workspace_delete preserve_data kept, for good. Works whether or not the bot has a workspace; discarding a backup that is not there succeeds.",
			hints{destructive: true, idempotent: true}, auth.ScopeManage, h.dataPreservedDelete),
	}
}

func (h handlers) dataExport(ctx context.Context, c *call, in DataExportInput) (DataExportOutput, string, error) {
	exp, err := h.Manager.SaveExport(ctx, in.BotID, in.Path, h.Limits.ExportQuota, c.progress(ctx))
	if err != nil {
		return DataExportOutput{}, "", err
	}
	out := DataExportOutput{
		Export:      exp,
		ResourceURI: fmt.Sprintf("berth://bots/%s/exports/%s", in.BotID, exp.ID),
		DownloadURL: fmt.Sprintf("/bots/%s/data/export?export_id=%s", in.BotID, exp.ID),
	}
	return out, fmt.Sprintf("exported %s (%d entries, %d bytes of files) to a %d-byte tar.gz: read %s or download %s",
		exp.Path, exp.Stats.Entries, exp.Stats.Bytes, exp.Size, out.ResourceURI, out.DownloadURL), nil
}

func (h handlers) dataExportDelete(ctx context.Context, _ *call, in DataExportDeleteInput) (DataExportDeleteInput, string, error) {
	if err := h.Manager.DeleteExport(in.BotID, in.ExportID); err != nil {
		return in, "", err
	}
	return in, fmt.Sprintf("deleted export %s of %s", in.ExportID, in.BotID), nil
}

// DataImportOutput is what an import extracted.
type DataImportOutput struct {
	wire.ImportResult
	Declined
}

func (h handlers) dataImport(ctx context.Context, c *call, in DataImportInput) (DataImportOutput, string, error) {
	if base64.StdEncoding.DecodedLen(len(in.ArchiveBase64)) > maxInlineArchive {
		return DataImportOutput{}, "", fmt.Errorf("archive_base64 is larger than %d bytes: upload it with PUT /bots/%s/data/import", maxInlineArchive, in.BotID)
	}
	archive, err := base64.StdEncoding.DecodeString(in.ArchiveBase64)
	if err != nil {
		return DataImportOutput{}, "", fmt.Errorf("archive_base64: %v", err)
	}
	if declined, err := h.confirm(ctx, c, h.importQuestion(ctx, in, archive)); declined != "" || err != nil {
		return DataImportOutput{Declined: Declined{true}}, declined, err
	}
	res, err := h.Manager.ImportData(ctx, in.BotID, in.Path, in.Format, bytes.NewReader(archive))
	if err != nil {
		return DataImportOutput{ImportResult: res}, "", err
	}
	return DataImportOutput{ImportResult: res}, fmt.Sprintf("imported %d entries (%d files, %d directories, %d symlinks, %d bytes) into %s",
		res.Entries, res.Files, res.Dirs, res.Symlinks, res.Bytes, res.Path), nil
}

func (h handlers) dataRestore(ctx context.Context, _ *call, in BotInput) (wire.ImportResult, string, error) {
	res, err := h.Manager.RestoreData(ctx, in.BotID)
	if err != nil {
		return res, "", err
	}
	return res, fmt.Sprintf("restored %d entries (%d bytes) into %s", res.Entries, res.Bytes, res.Path), nil
}

func (h handlers) dataPreservedDelete(ctx context.Context, _ *call, in BotInput) (PreservedDeleteOutput, string, error) {
	existed, err := h.Manager.DiscardPreservedData(in.BotID)
	if err != nil {
		return PreservedDeleteOutput{}, "", err
	}
	if !existed {
		return PreservedDeleteOutput{BotID: in.BotID}, fmt.Sprintf("bot %s has no preserved /data: nothing to discard", in.BotID), nil
	}
	return PreservedDeleteOutput{BotID: in.BotID, Deleted: true}, fmt.Sprintf("discarded the preserved /data of %s", in.BotID), nil
}

// PreservedDeleteOutput says what data_preserved_delete did.
type PreservedDeleteOutput struct {
	BotID   string `json:"bot_id"`
	Deleted bool   `json:"deleted" jsonschema:"description=false when there was no backup (not an error)"`
}
