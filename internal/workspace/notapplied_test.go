package workspace

import (
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/runtime"
)

// TestNotAppliedReadable checks that each setting an existing workspace
// kept is named on its own, in the words of workspace_create's arguments,
// never as a Go struct dump.
func TestNotAppliedReadable(t *testing.T) {
	ctr := runtime.Container{
		Image:       "docker.io/library/busybox:latest",
		Snapshotter: "overlayfs",
		Labels: map[string]string{
			labelLimits:   `{"cpus":2,"memory_bytes":536870912}`,
			labelDevices:  "",
			labelEnvNames: "A,B",
		},
	}
	req := CreateRequest{
		Snapshotter: "overlayfs",
		Limits:      runtime.Limits{MemoryBytes: 256 << 20, Pids: 64},
		Devices:     []string{"vendor.com/dev=1"},
		Env:         map[string]string{"Z": "1", "Y": "2"},
	}
	got := notApplied(req, "docker.io/library/busybox:latest", ctr)
	want := []string{
		"memory 256M (the workspace has 512M)",
		"pids 64 (the workspace has no pids limit)",
		"devices vendor.com/dev=1 (the workspace has none)",
		"env Y, Z (env is fixed at create; the workspace has A, B)",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("not applied:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, e := range got {
		if strings.ContainsAny(e, "{}") || strings.Contains(e, "MemoryBytes") {
			t.Errorf("Go value dump in %q", e)
		}
	}
	if got := notApplied(CreateRequest{Snapshotter: "overlayfs", Limits: runtime.Limits{CPUs: 1.5}}, ctr.Image, ctr); !slices.Equal(got, []string{"cpus 1.5 cores (the workspace has 2 cores)"}) {
		t.Fatalf("cpus: %q", got)
	}
}

func TestMemoryText(t *testing.T) {
	for v, want := range map[int64]string{0: "no memory limit", 2 << 30: "2G", 1536 << 20: "1536M", 4096: "4K", 1000: "1000 bytes"} {
		if got := memoryText(v); got != want {
			t.Errorf("memoryText(%d) = %q, want %q", v, got, want)
		}
	}
}
