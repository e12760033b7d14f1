package workspace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/agent"
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

// HasPreservedData says whether a backup of the bot's /data waits to be restored.
func (m *Manager) HasPreservedData(bot string) bool {
	_, err := os.Stat(m.preservedPath(bot))
	return err == nil
}

// exportTo streams the archive of path in the bot's running workspace into
// dst atomically (a temp file renamed into place once complete).
func (m *Manager) exportTo(ctx context.Context, bot, path, dst string, progress func(Progress)) (agent.ExportStats, error) {
	client, err := m.Agent(ctx, bot)
	if err != nil {
		return agent.ExportStats{}, err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return agent.ExportStats{}, err
	}
	body, err := client.Export(ctx, path)
	if err != nil {
		return agent.ExportStats{}, m.AgentError(ctx, bot, err)
	}
	defer body.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".export-*")
	if err != nil {
		return agent.ExportStats{}, err
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, &progressReader{r: body, report: progress, message: "exporting " + path + " of " + bot})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return agent.ExportStats{}, fmt.Errorf("export %s of %s: %w", path, bot, m.AgentError(ctx, bot, err))
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return agent.ExportStats{}, err
	}
	return body.Stats(), nil
}

// importFrom extracts the archive at src into path of the bot's running
// workspace; the agent makes it all or nothing.
func (m *Manager) importFrom(ctx context.Context, bot, path string, src io.Reader, format string) (agent.ImportResult, error) {
	client, err := m.Agent(ctx, bot)
	if err != nil {
		return agent.ImportResult{}, err
	}
	res, err := client.Import(ctx, agent.ImportRequest{Path: path, Format: format}, src)
	if err != nil {
		return res, m.AgentError(ctx, bot, err)
	}
	return res, nil
}

// ImportData extracts an archive into the bot's workspace under path
// (default /data). A refused or failed import changes nothing.
func (m *Manager) ImportData(ctx context.Context, bot, path, format string, archive io.Reader) (agent.ImportResult, error) {
	return m.importFrom(ctx, bot, path, archive, format)
}

// ExportData streams a tar.gz of path (default /data) of the running
// workspace. The caller closes the reader.
func (m *Manager) ExportData(ctx context.Context, bot, path string) (*agent.ExportStream, error) {
	client, err := m.Agent(ctx, bot)
	if err != nil {
		return nil, err
	}
	body, err := client.Export(ctx, path)
	if err != nil {
		return nil, m.AgentError(ctx, bot, err)
	}
	return body, nil
}

// Export is an archive data_export left under the state directory.
type Export struct {
	ID        string            `json:"export_id"`
	BotID     string            `json:"bot_id"`
	Path      string            `json:"path"`
	Size      int64             `json:"size_bytes"`
	Stats     agent.ExportStats `json:"contents"`
	CreatedAt time.Time         `json:"created_at"`
	file      string
}

// SaveExport archives path of the bot's workspace into a new export kept
// under the state directory (the newest few per bot are kept).
func (m *Manager) SaveExport(ctx context.Context, bot, path string, progress func(Progress)) (Export, error) {
	if path == "" {
		path = agent.DefaultDataDir
	}
	id := randomID()
	dst := filepath.Join(m.exportDir(bot), id+".tar.gz")
	stats, err := m.exportTo(ctx, bot, path, dst, progress)
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

// OpenExport opens an export made by SaveExport.
func (m *Manager) OpenExport(bot, id string) (*os.File, error) {
	if err := ValidateBotID(bot); err != nil {
		return nil, err
	}
	if len(id) != exportIDLen*2 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("%w: export id %q is not one data_export returned", errdefs.ErrInvalidArgument, id)
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
func (m *Manager) RestoreData(ctx context.Context, bot string) (agent.ImportResult, error) {
	if err := ValidateBotID(bot); err != nil {
		return agent.ImportResult{}, err
	}
	f, err := os.Open(m.preservedPath(bot))
	if errors.Is(err, os.ErrNotExist) {
		return agent.ImportResult{}, fmt.Errorf("%w: bot %s has no preserved data (workspace_delete with preserve_data keeps it)", errdefs.ErrNotFound, bot)
	}
	if err != nil {
		return agent.ImportResult{}, err
	}
	defer f.Close()
	res, err := m.importFrom(ctx, bot, agent.DefaultDataDir, f, "tar.gz")
	if err != nil {
		return res, fmt.Errorf("restore preserved data of %s (the backup is kept): %w", bot, err)
	}
	if err := os.Remove(m.preservedPath(bot)); err != nil {
		m.log.Warn("remove restored backup", "bot", bot, "err", err)
	}
	return res, nil
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
