package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLogWritesOneJSONLinePerRecord(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Log(Record{Token: "token:a", Bot: "b", Kind: KindTool, Tool: "exec", Outcome: Outcome([]string{"allowed", "denied"}[i%2])})
		}()
	}
	wg.Wait()
	sc := bufio.NewScanner(&buf)
	n := 0
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %d is not a record: %q: %v", n+1, sc.Text(), err)
		}
		if r.Time.IsZero() || r.Tool != "exec" || r.Token != "token:a" {
			t.Fatalf("line %d: %+v", n+1, r)
		}
		n++
	}
	if n != 50 {
		t.Fatalf("%d lines, want 50", n)
	}
}

func TestOpen(t *testing.T) {
	var stderr bytes.Buffer
	off, err := Open("off", &stderr, nil)
	if err != nil || off != nil {
		t.Fatalf("off: %v %v", off, err)
	}
	off.Log(Record{Kind: KindTool}) // a nil logger is a no-op
	if err := off.Close(); err != nil {
		t.Fatal(err)
	}

	l, err := Open("stderr", &stderr, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Record{Kind: KindHTTP, Endpoint: "GET /x", Outcome: Denied})
	if !strings.Contains(stderr.String(), `"outcome":"denied"`) {
		t.Fatalf("stderr: %q", stderr.String())
	}

	path := filepath.Join(t.TempDir(), "audit.log")
	f, err := Open(path, &stderr, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Log(Record{Kind: KindTool, Tool: "fs_read", Outcome: Allowed})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"tool":"fs_read"`) {
		t.Errorf("file: %q", data)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "no", "such", "dir"), &stderr, nil); err == nil {
		t.Error("a path in a missing directory was accepted")
	}
}

// TestLogClipsCallerText: a caller controls the bot id and the route's
// path it sends; a record costs a bounded line whatever they send.
func TestLogClipsCallerText(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	huge := strings.Repeat("é", 500_000)
	l.Log(Record{Bot: huge, Endpoint: "GET /bots/" + huge, Tool: huge, Kind: KindHTTP, Outcome: Denied})
	if buf.Len() > 2000 {
		t.Fatalf("a record with 1 MB fields wrote %d bytes", buf.Len())
	}
	var r Record
	if err := json.Unmarshal(buf.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(r.Bot, "…") || !strings.HasPrefix(r.Bot, "éé") || !strings.HasPrefix(r.Endpoint, "GET /bots/é") {
		t.Fatalf("clipped fields: bot %q, endpoint %q", r.Bot[:20], r.Endpoint[:20])
	}
}
