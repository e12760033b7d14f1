package console

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/berth-dev/berth/internal/audit"
)

// TestTailAudit: records found across many read chunks, in order, the
// bot's only, bounded; a partial last line (being written) and a foreign
// line are skipped.
func TestTailAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := audit.Open(path, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000 // about 600 KB: many chunks
	for i := range n {
		bot := "alpha"
		if i%3 != 0 {
			bot = "alpha-2" // a bot whose id starts like alpha's
		}
		a.Log(audit.Record{Token: "admin token", Bot: bot, Kind: audit.KindTool, Tool: "t" + strconv.Itoa(i), Outcome: audit.Allowed})
	}
	a.Close()
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"bot":"alpha","tool":"half-writt`)
	f.Close()

	lines, truncated, err := tailAudit(path, "alpha", maxAuditLines)
	if err != nil || len(lines) != maxAuditLines || !truncated {
		t.Fatalf("%d lines, truncated %v, %v", len(lines), truncated, err)
	}
	for i, l := range lines {
		var r audit.Record
		if err := json.Unmarshal(l, &r); err != nil || r.Bot != "alpha" {
			t.Fatalf("line %d: %s", i, l)
		}
		// The last 500 of alpha's records (every third), oldest first.
		if want := "t" + strconv.Itoa(n-3*(maxAuditLines-i)); r.Tool != want {
			t.Fatalf("line %d is %s, want %s", i, r.Tool, want)
		}
	}
	all, truncated, err := tailAudit(path, "", 10)
	if err != nil || len(all) != 10 || !truncated {
		t.Fatalf("every bot: %d %v %v", len(all), truncated, err)
	}
	none, truncated, err := tailAudit(path, "gamma", 10)
	if err != nil || len(none) != 0 || truncated { // the whole file was read
		t.Fatalf("a bot without records: %d %v %v", len(none), truncated, err)
	}
}
