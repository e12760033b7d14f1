package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestCDIDevice injects a device from a CDI spec of the test's own: the
// host's /dev/null under another name.
func TestCDIDevice(t *testing.T) {
	e := newEnv(t)
	spec := `cdiVersion: "0.6.0"
kind: "berth.test/device"
devices:
  - name: "null0"
    containerEdits:
      deviceNodes:
        - path: "/dev/berth-null"
          hostPath: "/dev/null"
      env:
        - "BERTH_TEST_DEVICE=null0"
`
	if err := os.WriteFile(filepath.Join(e.cdiDir, "berth-test.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	c := e.stdioMcpgo()
	var out createOut
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "gpu", "devices": []string{"berth.test/device=null0"}}).decode(t, &out)
	if got := e.execIn(t, "gpu", "sh", "-c", "test -c /dev/berth-null && echo char:$BERTH_TEST_DEVICE"); strings.TrimSpace(got) != "char:null0" {
		t.Fatalf("device not injected: %q", got)
	}
	var ws struct {
		Devices []string `json:"devices"`
	}
	mustCall(t, c, "workspace_get", map[string]any{"bot_id": "gpu"}).decode(t, &ws)
	if len(ws.Devices) != 1 || ws.Devices[0] != "berth.test/device=null0" {
		t.Fatalf("devices not reported: %+v", ws)
	}
	res := mustCall(t, c, "workspace_create", map[string]any{"bot_id": "gpu2", "devices": []string{"berth.test/device=null9"}})
	if !res.IsError || !strings.Contains(res.Text, "unknown CDI device") || !strings.Contains(res.Text, "berth.test/device=null0") {
		t.Fatalf("unknown device: want an error listing known devices, got %+v", res)
	}
}

// TestImageImportAndList imports an archive from a host path through the
// tool, over stdio and over HTTP with the admin token, and lists it.
func TestImageImportAndList(t *testing.T) {
	archive := testenv.BusyboxArchive(t)
	for _, cl := range []struct {
		name    string
		connect func(e *env) mcpClient
	}{clients[0], clients[3]} {
		t.Run(cl.name, func(t *testing.T) {
			e := newEnv(t)
			c := cl.connect(e)
			var imported struct {
				Images []struct {
					Name   string `json:"name"`
					Digest string `json:"digest"`
					Size   int64  `json:"size_bytes"`
				} `json:"images"`
			}
			mustCall(t, c, "image_import", map[string]any{"path": archive}).decode(t, &imported)
			if len(imported.Images) != 1 || imported.Images[0].Name != testenv.BusyboxRef || imported.Images[0].Size == 0 {
				t.Fatalf("import: %+v", imported)
			}
			var list struct {
				Images []struct {
					Name string `json:"name"`
				} `json:"images"`
				NextCursor string `json:"next_cursor"`
			}
			mustCall(t, c, "image_list", map[string]any{"limit": 1}).decode(t, &list)
			if len(list.Images) != 1 {
				t.Fatalf("list: %+v", list)
			}
			var out createOut
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": "imported", "image": testenv.BusyboxRef, "pull_policy": "never"}).decode(t, &out)
			if out.Workspace.Status != "running" {
				t.Fatalf("workspace from imported image: %+v", out)
			}
		})
	}
}
