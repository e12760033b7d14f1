package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
)

// Bounds of reading the audit log.
const (
	defaultAuditLines = 100
	maxAuditLines     = 500
	// maxAuditScan bounds how far back from the end one request reads: a
	// bot whose records are further back than that gets what was found and
	// truncated.
	maxAuditScan  = 8 << 20
	auditChunk    = 64 << 10
	maxAuditLine  = 64 << 10 // longer than any record berth writes
	activityRead  = 4 << 20  // the most one refresh of last activity reads
	activityBots  = 10000
	activityEvery = time.Second
)

// audit answers the last audit records of a bot.
func (c *Console) audit(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	bot := q.Get("bot")
	limit := defaultAuditLines
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAuditLines {
			jsonError(w, http.StatusBadRequest, "limit must be 1-"+strconv.Itoa(maxAuditLines))
			return
		}
		limit = n
	}
	p := s.principal
	if bot == "" {
		if !isAdmin(p) {
			jsonError(w, http.StatusBadRequest, "name the bot: ?bot=ID (only the admin token reads every bot's records)")
			return
		}
	} else {
		if err := workspace.ValidateBotID(bot); err != nil {
			jsonError(w, http.StatusBadRequest, err.Error())
			return
		}
		if err := p.Allow(auth.ScopeRead, bot); err != nil {
			jsonError(w, http.StatusForbidden, err.Error())
			return
		}
	}
	if c.o.AuditFile == "" {
		writeJSON(w, http.StatusOK, map[string]any{"lines": []any{}, "note": "no --audit-log"})
		return
	}
	lines, truncated, err := tailAudit(c.o.AuditFile, bot, limit)
	if err != nil {
		c.o.Logger.Warn("console: read the audit log", "err", err)
		jsonError(w, http.StatusInternalServerError, "cannot read the audit log")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"lines": lines, "truncated": truncated})
}

// tailAudit returns the last limit records of bot ("" for every bot) in
// path, oldest first, reading backwards at most maxAuditScan bytes.
// truncated says older records may exist that were not returned.
func tailAudit(path, bot string, limit int) ([]json.RawMessage, bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return []json.RawMessage{}, false, nil
	} else if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	var needle []byte
	if bot != "" {
		// Bot ids need no JSON escaping, so a record of the bot holds this.
		needle = []byte(`"bot":"` + bot + `"`)
	}
	var found []json.RawMessage
	end := fi.Size()
	var carry []byte // the start of a line whose beginning is further back
	for end > 0 && len(found) < limit && fi.Size()-end < maxAuditScan {
		start := max(end-auditChunk, 0)
		buf := make([]byte, end-start, int(end-start)+len(carry))
		if _, err := f.ReadAt(buf, start); err != nil && err != io.EOF {
			return nil, false, err
		}
		buf = append(buf, carry...)
		end = start
		// Every line but the first is whole; the first is whole only at
		// the file's start.
		first := 0
		if start > 0 {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				if len(buf) > maxAuditLine {
					buf = nil // no record is that long: skip it
				}
				carry = buf
				continue
			}
			first = i + 1
		}
		carry = bytes.Clone(buf[:first])
		lines := bytes.Split(bytes.TrimRight(buf[first:], "\n"), []byte("\n"))
		for i := len(lines) - 1; i >= 0 && len(found) < limit; i-- {
			line := lines[i]
			if len(line) == 0 || (needle != nil && !bytes.Contains(line, needle)) {
				continue
			}
			var rec audit.Record
			if json.Unmarshal(line, &rec) != nil || (bot != "" && rec.Bot != bot) {
				continue
			}
			found = append(found, json.RawMessage(bytes.Clone(line)))
		}
	}
	slices.Reverse(found)
	if found == nil {
		found = []json.RawMessage{}
	}
	return found, end > 0 || len(found) == limit, nil
}

// activity follows the audit log to know each bot's last allowed call.
type activity struct {
	path string
	mu   sync.Mutex
	at   time.Time // of the last refresh
	off  int64
	last map[string]time.Time
}

func newActivity(path string) *activity {
	return &activity{path: path, off: -1, last: map[string]time.Time{}}
}

// refresh reads what the log gained since the previous call (at most once
// a second, however many streams ask) and returns a copy of the last
// activity by bot. The first read starts near the end of the log.
func (a *activity) refresh() map[string]time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.path != "" && time.Since(a.at) >= activityEvery {
		a.at = time.Now()
		a.read()
	}
	return maps.Clone(a.last)
}

func (a *activity) read() {
	f, err := os.Open(a.path)
	if err != nil {
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return
	}
	size := fi.Size()
	if a.off < 0 || size < a.off || size-a.off > activityRead {
		// First read, a rotated log, or more than one read may take:
		// start near the end, at a line's start.
		a.off = max(size-activityRead, 0)
		if a.off > 0 {
			a.off--
			buf := make([]byte, min(maxAuditLine, size-a.off))
			n, _ := f.ReadAt(buf, a.off)
			i := bytes.IndexByte(buf[:n], '\n')
			if i < 0 {
				a.off = size
				return
			}
			a.off += int64(i) + 1
		}
	}
	buf := make([]byte, size-a.off)
	n, _ := f.ReadAt(buf, a.off)
	buf = buf[:n]
	// Only whole lines; a line being written is read next time.
	whole := bytes.LastIndexByte(buf, '\n') + 1
	a.off += int64(whole)
	for line := range bytes.SplitSeq(buf[:whole], []byte("\n")) {
		var rec audit.Record
		if len(line) == 0 || json.Unmarshal(line, &rec) != nil || rec.Bot == "" || rec.Outcome != audit.Allowed {
			continue
		}
		if len(a.last) >= activityBots {
			clear(a.last) // deleted bots' entries accumulate; start afresh
		}
		if rec.Time.After(a.last[rec.Bot]) {
			a.last[rec.Bot] = rec.Time
		}
	}
}
