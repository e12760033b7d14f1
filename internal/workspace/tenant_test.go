package workspace

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/containerd/errdefs"
)

func TestDataPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "/data",
		"/data":              "/data",
		"/data/":             "/data",
		"/data/proj":         "/data/proj",
		"/data//proj/./src/": "/data/proj/src",
		"proj":               "/data/proj",
		"./proj/../other":    "/data/other",
		"/data/a/../b":       "/data/b",
	} {
		got, err := DataPath(in)
		if err != nil || got != want {
			t.Errorf("DataPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/", "/etc", "/data/../etc", "/data/..", "..", "../etc", "proj/../../etc", "/dataX", "/data-other", "/proc/1/root/data", "/data/\x00x", "//"} {
		_, err := DataPath(bad)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("DataPath(%q): %v, want a refusal", bad, err)
			continue
		}
		if bad != "/data/\x00x" && !strings.Contains(err.Error(), "outside /data") {
			t.Errorf("DataPath(%q): %q does not say why", bad, err)
		}
	}
}

func TestImageOwner(t *testing.T) {
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"docker.io/library/debian:bookworm", nil, ""},
		{"berth.local/snapshots/alpha:v3", nil, "alpha"},
		{"berth.local/snapshots/alpha:v3", map[string]string{LabelOwnerBot: "alpha"}, "alpha"},
		// The label decides: an operator may hand an export to another bot.
		{"berth.local/snapshots/alpha:v3", map[string]string{LabelOwnerBot: "bravo"}, "bravo"},
		{"example.com/team/img:1", map[string]string{LabelOwnerBot: "bravo"}, "bravo"},
		// A malformed name under the prefix is nobody's bot, never shared.
		{"berth.local/snapshots/Not_A..Bot:v1", nil, "berth.local/snapshots/Not_A..Bot:v1"},
		{"berth.local/snapshotsx/alpha:v1", nil, ""},
	} {
		if got := ImageOwner(runtime.Image{Name: c.name, Labels: c.labels}); got != c.want {
			t.Errorf("ImageOwner(%s, %v) = %q, want %q", c.name, c.labels, got, c.want)
		}
	}
}

// TestExportQuotaAccounting: usage counts kept and in-flight archives, the
// refusal names usage, quota and the exports to delete, and deleting one
// frees its share.
func TestExportQuotaAccounting(t *testing.T) {
	m := NewManager(nil, Options{StateDir: t.TempDir()})
	dir := m.exportDir("bot")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if used, err := m.exportUsage("bot", ""); err != nil || used != 0 {
		t.Fatalf("empty: %d %v", used, err)
	}
	a, b := strings.Repeat("a", 24), strings.Repeat("b", 24)
	os.WriteFile(filepath.Join(dir, a+".tar.gz"), make([]byte, 3000), 0o600)
	os.WriteFile(filepath.Join(dir, b+".tar.gz"), make([]byte, 2000), 0o600)
	tmp := filepath.Join(dir, ".export-123")
	os.WriteFile(tmp, make([]byte, 500), 0o600)
	if used, _ := m.exportUsage("bot", ""); used != 5500 {
		t.Fatalf("usage %d, want 5500 (kept and in flight)", used)
	}
	if used, _ := m.exportUsage("bot", tmp); used != 5000 {
		t.Fatalf("usage without the export's own file %d, want 5000", used)
	}
	err := m.quotaRefusal("bot", "/data", 4096, 5000, false)
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("refusal class: %v", err)
	}
	for _, want := range []string{"4.9 KiB", "4.0 KiB", "data_export_delete", a, b} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q lacks %q", err, want)
		}
	}
	if exps := m.ListExports("bot"); len(exps) != 2 {
		t.Fatalf("ListExports: %+v", exps)
	}
	if err := m.DeleteExport("bot", a); err != nil {
		t.Fatal(err)
	}
	if used, _ := m.exportUsage("bot", tmp); used != 2000 {
		t.Fatalf("after delete: %d", used)
	}
	if err := m.DeleteExport("bot", a); !errdefs.IsNotFound(err) {
		t.Fatalf("deleting again: %v", err)
	}
	for _, bad := range []string{"../x", "ABC", strings.Repeat("g", 24)} {
		if err := m.DeleteExport("bot", bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("DeleteExport(%q): %v", bad, err)
		}
	}
	if err := m.DeleteExport("../bot", b); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad bot: %v", err)
	}
}

func TestCheckedWriter(t *testing.T) {
	var sb strings.Builder
	var asked []int64
	room := int64(3<<20 + 100)
	w := &checkedWriter{w: &sb, check: func(n int64) (int64, error) {
		asked = append(asked, n)
		if n > room {
			return 0, errors.New("over")
		}
		return room, nil
	}}
	chunk := make([]byte, 256<<10)
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		_, err = w.Write(chunk)
	}
	// Refused at the first write past the room, not a MiB later.
	if err == nil || sb.Len() != 12*(256<<10) {
		t.Fatalf("wrote %d bytes with room for %d: %v", sb.Len(), room, err)
	}
	if len(asked) < 4 || asked[0] != 256<<10 {
		t.Fatalf("checks at %v: want the first write, about every MiB and past the room", asked)
	}
}
