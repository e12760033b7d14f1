package workspace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"

	pathpkg "path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/remedy"
	"github.com/containerd/errdefs"
)

// Data moved in and out of workspaces lives under the state directory:
// preserved/<bot>.tar.gz outlives a deleted workspace, and
// exports/<bot>/<id>.tar.gz are the archives data_export made.
const (
	maxExportsPerBot = 5
	exportIDLen      = 12
)

func (m *Manager) preservedPath(bot string) string {
	return filepath.Join(m.opts.StateDir, "preserved", bot+".tar.gz")
}

func (m *Manager) exportDir(bot string) string {
	return filepath.Join(m.opts.StateDir, "exports", bot)
}

// removeExports deletes the bot's data_export archives and their folder.
func (m *Manager) removeExports(bot string) error {
	if err := os.RemoveAll(m.exportDir(bot)); err != nil {
		return fmt.Errorf("remove the exports of %s: %w", bot, err)
	}
	return nil
}

// HasPreservedData says whether a backup of the bot's /data waits to be restored.
func (m *Manager) HasPreservedData(bot string) bool {
	_, err := os.Stat(m.preservedPath(bot))
	return err == nil
}

// exportTo streams the archive of path in the bot's running workspace into
// dst atomically (a temp file renamed into place once complete).
func (m *Manager) exportTo(ctx context.Context, bot, path, dst string, progress func(Progress)) (wire.ExportStats, error) {
	return m.exportLimited(ctx, bot, path, dst, progress, nil)
}

// exportLimited is exportTo whose archive stops with check's error once
// check refuses the bytes written so far (and the temp file they are in).
func (m *Manager) exportLimited(ctx context.Context, bot, path, dst string, progress func(Progress), check func(tmp string, written int64) (int64, error)) (wire.ExportStats, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return wire.ExportStats{}, err
	}
	body, err := Ask(ctx, m, bot, func(c *client.Client) (*client.ExportStream, error) { return c.Export(ctx, path) })
	if err != nil {
		return wire.ExportStats{}, err
	}
	defer body.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".export-*")
	if err != nil {
		return wire.ExportStats{}, err
	}
	defer os.Remove(tmp.Name())
	var w io.Writer = tmp
	if check != nil {
		w = &checkedWriter{w: tmp, check: func(n int64) (int64, error) { return check(tmp.Name(), n) }}
	}
	_, err = io.Copy(w, &progressReader{r: body, report: progress, message: "exporting " + path + " of " + bot})
	var refused *quotaError
	if errors.As(err, &refused) {
		tmp.Close()
		return wire.ExportStats{}, err
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return wire.ExportStats{}, fmt.Errorf("export %s of %s: %w", path, bot, m.AgentError(ctx, bot, err))
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return wire.ExportStats{}, err
	}
	return body.Stats(), nil
}

// importFrom extracts the archive at src into path of the bot's running
// workspace; the agent makes it all or nothing.
func (m *Manager) importFrom(ctx context.Context, bot string, req wire.ImportRequest, src io.Reader) (wire.ImportResult, error) {
	return Ask(ctx, m, bot, func(c *client.Client) (wire.ImportResult, error) { return c.Import(ctx, req, src) })
}

// ImportData extracts an archive into the bot's workspace under path
// (default /data). A refused or failed import changes nothing.
func (m *Manager) ImportData(ctx context.Context, bot, path, format string, archive io.Reader) (wire.ImportResult, error) {
	return m.importFrom(ctx, bot, wire.ImportRequest{Path: path, Format: format}, archive)
}

// ExportData streams a tar.gz of path (default /data) of the running
// workspace. The caller closes the reader.
func (m *Manager) ExportData(ctx context.Context, bot, path string) (*client.ExportStream, error) {
	path, err := DataPath(path)
	if err != nil {
		return nil, err
	}
	return Ask(ctx, m, bot, func(c *client.Client) (*client.ExportStream, error) { return c.Export(ctx, path) })
}

// Export is an archive data_export left under the state directory.
type Export struct {
	ID        string           `json:"export_id"`
	BotID     string           `json:"bot_id"`
	Path      string           `json:"path"`
	Size      int64            `json:"size_bytes"`
	Stats     wire.ExportStats `json:"contents"`
	CreatedAt time.Time        `json:"created_at"`
	file      string
}

// DataPath is the directory an export of p archives: p cleaned, relative
// paths taken from /data (as the agent does), default /data. Anything
// outside /data is refused: an export is a copy of the bot's data, and
// path=/ would otherwise archive the whole root filesystem onto berth's host.
func DataPath(p string) (string, error) {
	const dir = wire.DefaultDataDir
	if p == "" {
		return dir, nil
	}
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: path contains a NUL byte", errdefs.ErrInvalidArgument)
	}
	clean := p
	if !pathpkg.IsAbs(clean) {
		clean = pathpkg.Join(dir, clean)
	}
	clean = pathpkg.Clean(clean)
	if clean != dir && !strings.HasPrefix(clean, dir+"/") {
		return "", fmt.Errorf("%w: path %q is outside %s: exports archive %s or a directory in it", errdefs.ErrInvalidArgument, p, dir, dir)
	}
	return clean, nil
}

// SaveExport archives path of the bot's workspace into a new export kept
// under the state directory (the newest few per bot are kept). The bot's
// kept exports, this one included, may use at most quota bytes (0: no
// quota): an export that would pass it is refused or stopped, and nothing
// of it is kept.
func (m *Manager) SaveExport(ctx context.Context, bot, path string, quota int64, progress func(Progress)) (Export, error) {
	if err := ValidateBotID(bot); err != nil {
		return Export{}, err
	}
	path, err := DataPath(path)
	if err != nil {
		return Export{}, err
	}
	var check func(string, int64) (int64, error)
	if quota > 0 {
		if used, _ := m.exportUsage(bot, ""); used >= quota {
			return Export{}, m.quotaRefusal(bot, path, quota, used, false)
		}
		// Re-measured as the archive grows, so that exports running at
		// once cannot pass the quota together.
		check = func(tmp string, written int64) (int64, error) {
			others, err := m.exportUsage(bot, tmp)
			if err != nil {
				return 0, err
			}
			if others+written > quota {
				return 0, m.quotaRefusal(bot, path, quota, others, true)
			}
			return quota - others, nil
		}
	}
	id := randomID()
	dst := filepath.Join(m.exportDir(bot), id+".tar.gz")
	stats, err := m.exportLimited(ctx, bot, path, dst, progress, check)
	if err != nil {
		return Export{}, err
	}
	m.pruneExports(bot)
	st, err := os.Stat(dst)
	if err != nil {
		return Export{}, err
	}
	return Export{ID: id, BotID: bot, Path: path, Size: st.Size(), Stats: stats, CreatedAt: st.ModTime().UTC(), file: dst}, nil
}

// exportUsage is the bytes of the bot's export directory: kept archives and
// those being written, except the file skip.
func (m *Manager) exportUsage(bot, skip string) (int64, error) {
	entries, err := os.ReadDir(m.exportDir(bot))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var total int64
	for _, e := range entries {
		if filepath.Join(m.exportDir(bot), e.Name()) == skip {
			continue
		}
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
	}
	return total, nil
}

// quotaError is an export refused for the bot's export quota.
type quotaError struct{ msg string }

func (e *quotaError) Error() string { return e.msg }
func (e *quotaError) Unwrap() error { return errdefs.ErrResourceExhausted }

// quotaRefusal says how much of its quota the bot's exports use, and how to
// free space: the kept exports, oldest first, to delete.
func (m *Manager) quotaRefusal(bot, path string, quota, used int64, during bool) error {
	var b strings.Builder
	if during {
		fmt.Fprintf(&b, "export of %s of %s stopped and not kept: with the %s its other exports use, it grew past the bot's export quota of %s.",
			path, bot, humanBytes(used), humanBytes(quota))
	} else {
		fmt.Fprintf(&b, "export of %s of %s refused: the bot's kept exports use %s of its export quota of %s.",
			path, bot, humanBytes(used), humanBytes(quota))
	}
	b.WriteString(" Free space by deleting old exports with data_export_delete (a token with write scope)")
	if exps := m.ListExports(bot); len(exps) > 0 {
		b.WriteString(" (kept, oldest first:")
		for i, e := range exps {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, " %s %s %s", e.ID, humanBytes(e.Size), e.CreatedAt.Format(time.RFC3339))
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, ", export a smaller directory, or download it without keeping it from GET /bots/%s/data/export.", bot)
	return &quotaError{msg: b.String()}
}

// ListExports lists the bot's kept exports, oldest first. Their paths and
// contents are not recorded: size and time only.
func (m *Manager) ListExports(bot string) []Export {
	if ValidateBotID(bot) != nil {
		return nil
	}
	entries, err := os.ReadDir(m.exportDir(bot))
	if err != nil {
		return nil
	}
	var out []Export
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".tar.gz")
		if !ok || validExportID(id) != nil {
			continue
		}
		if info, err := e.Info(); err == nil {
			out = append(out, Export{ID: id, BotID: bot, Size: info.Size(), CreatedAt: info.ModTime().UTC()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// DeleteExport removes a kept export, freeing its share of the quota.
func (m *Manager) DeleteExport(bot, id string) error {
	if err := ValidateBotID(bot); err != nil {
		return err
	}
	if err := validExportID(id); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(m.exportDir(bot), id+".tar.gz"))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: no export %s for bot %s", errdefs.ErrNotFound, id, bot)
	}
	return err
}

func validExportID(id string) error {
	if len(id) != exportIDLen*2 || strings.Trim(id, "0123456789abcdef") != "" {
		return remedy.With(remedy.ListExports, fmt.Errorf("%w: %q is not an export id (%d hex digits)", errdefs.ErrInvalidArgument, id, exportIDLen*2))
	}
	return nil
}

// checkedWriter asks check before it writes past the limit check last
// gave, and at least every MiB (what else uses the quota changes).
type checkedWriter struct {
	w io.Writer
	// check refuses written bytes, or says how many may be written.
	check          func(written int64) (limit int64, err error)
	n, limit, next int64
}

func (c *checkedWriter) Write(b []byte) (int, error) {
	if end := c.n + int64(len(b)); end > c.next || end > c.limit {
		limit, err := c.check(end)
		if err != nil {
			return 0, err
		}
		c.limit, c.next = limit, end+1<<20
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// OpenExport opens an export made by SaveExport.
func (m *Manager) OpenExport(bot, id string) (*os.File, error) {
	if err := ValidateBotID(bot); err != nil {
		return nil, err
	}
	if err := validExportID(id); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(m.exportDir(bot), id+".tar.gz"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no export %s for bot %s (only the newest %d are kept)", errdefs.ErrNotFound, id, bot, maxExportsPerBot)
	}
	return f, err
}

// pruneExports keeps the newest exports of a bot.
func (m *Manager) pruneExports(bot string) {
	entries, err := os.ReadDir(m.exportDir(bot))
	if err != nil {
		return
	}
	type aged struct {
		path string
		mod  time.Time
	}
	var files []aged
	for _, e := range entries {
		if info, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".tar.gz") {
			files = append(files, aged{filepath.Join(m.exportDir(bot), e.Name()), info.ModTime()})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.After(files[j].mod) })
	for _, f := range files[min(len(files), maxExportsPerBot):] {
		os.Remove(f.path)
	}
}

// RestoreData brings the bot's preserved /data back into its running
// workspace. The backup is removed only once the import succeeded.
func (m *Manager) RestoreData(ctx context.Context, bot string) (wire.ImportResult, error) {
	if err := ValidateBotID(bot); err != nil {
		return wire.ImportResult{}, err
	}
	f, err := os.Open(m.preservedPath(bot))
	if errors.Is(err, os.ErrNotExist) {
		return wire.ImportResult{}, remedy.With(remedy.PreserveData, fmt.Errorf("%w: bot %s has no preserved data", errdefs.ErrNotFound, bot))
	}
	if err != nil {
		return wire.ImportResult{}, err
	}
	defer f.Close()
	// The backup is this workspace's own /data, written by berth: restored
	// as it was, symlinks that leave /data included (a venv's python).
	res, err := m.importFrom(ctx, bot, wire.ImportRequest{Path: wire.DefaultDataDir, Format: "tar.gz", Restore: true}, f)
	if err != nil {
		return res, fmt.Errorf("restore preserved data of %s (the backup is kept): %w", bot, err)
	}
	if err := os.Remove(m.preservedPath(bot)); err != nil {
		m.log.Warn("remove restored backup", "bot", bot, "err", err)
	}
	return res, nil
}

// DiscardPreservedData deletes the backup of the bot's /data that
// workspace_delete preserve_data kept. It reports whether there was one:
// discarding what is not there succeeds.
func (m *Manager) DiscardPreservedData(bot string) (bool, error) {
	if err := ValidateBotID(bot); err != nil {
		return false, err
	}
	unlock := m.locks.lock(bot)
	defer unlock()
	err := os.Remove(m.preservedPath(bot))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// progressReader reports bytes read through it.
type progressReader struct {
	r       io.Reader
	report  func(Progress)
	message string
	n       int64
	last    time.Time
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.report != nil && (time.Since(p.last) > 200*time.Millisecond || err != nil) {
		p.last = time.Now()
		p.report(Progress{Done: float64(p.n), Message: fmt.Sprintf("%s: %s", p.message, humanBytes(p.n))})
	}
	return n, err
}

func randomID() string {
	b := make([]byte, exportIDLen)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
