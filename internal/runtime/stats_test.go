package runtime

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The payloads under testdata are task metrics in the wire form containerd's
// runc shim sends (a serialized google.protobuf.Any holding cgroup v1 or v2
// stats). The test machines are cgroup v1 only, so the v2 payloads are made
// from the figures below rather than captured; the e2e tests cover v1 live.
// Run with BERTH_RECORD_STATS=1 to rewrite the files from these figures.
var recorded = map[string]proto.Message{
	"metrics-cgroup1.pb": &v1.Metrics{
		CPU:    &v1.CPUStat{Usage: &v1.CPUUsage{Total: 1_500_000_000, Kernel: 300_000_000, User: 1_200_000_000}},
		Memory: &v1.MemoryStat{TotalInactiveFile: 4 << 20, Usage: &v1.MemoryEntry{Usage: 36 << 20, Limit: 64 << 20}},
		Pids:   &v1.PidsStat{Current: 7, Limit: 100},
	},
	"metrics-cgroup1-unlimited.pb": &v1.Metrics{
		CPU:    &v1.CPUStat{Usage: &v1.CPUUsage{Total: 42}},
		Memory: &v1.MemoryStat{Usage: &v1.MemoryEntry{Usage: 1 << 20, Limit: 9223372036854771712}},
		Pids:   &v1.PidsStat{Current: 1},
	},
	"metrics-cgroup2.pb": &v2.Metrics{
		CPU:    &v2.CPUStat{UsageUsec: 2_500_000, UserUsec: 2_000_000, SystemUsec: 500_000},
		Memory: &v2.MemoryStat{Usage: 100 << 20, UsageLimit: 256 << 20, InactiveFile: 20 << 20},
		Pids:   &v2.PidsStat{Current: 12, Limit: 512},
	},
	"metrics-cgroup2-unlimited.pb": &v2.Metrics{
		CPU:    &v2.CPUStat{UsageUsec: 10},
		Memory: &v2.MemoryStat{Usage: 5 << 20, UsageLimit: 18446744073709551615},
		Pids:   &v2.PidsStat{Current: 2, Limit: 0},
	},
}

func loadPayload(t *testing.T, name string) typeurl.Any {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv("BERTH_RECORD_STATS") == "1" {
		anyMsg, err := anypb.New(recorded[name])
		if err != nil {
			t.Fatal(err)
		}
		data, err := proto.Marshal(anyMsg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err != nil {
		t.Fatal(err)
	}
	return &a
}

func TestDecodeStats(t *testing.T) {
	for name, want := range map[string]Stats{
		"metrics-cgroup1.pb":           {CPUUsageNanos: 1_500_000_000, MemoryUsage: 32 << 20, MemoryLimit: 64 << 20, Pids: 7, PidsLimit: 100},
		"metrics-cgroup1-unlimited.pb": {CPUUsageNanos: 42, MemoryUsage: 1 << 20, Pids: 1},
		"metrics-cgroup2.pb":           {CPUUsageNanos: 2_500_000_000, MemoryUsage: 80 << 20, MemoryLimit: 256 << 20, Pids: 12, PidsLimit: 512},
		"metrics-cgroup2-unlimited.pb": {CPUUsageNanos: 10_000, MemoryUsage: 5 << 20, Pids: 2},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeStats(loadPayload(t, name))
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestDecodeStatsRejectsOtherPayloads(t *testing.T) {
	if _, err := DecodeStats(nil); err == nil {
		t.Fatal("nil payload accepted")
	}
	other, _ := anypb.New(&anypb.Any{TypeUrl: "x"})
	if _, err := DecodeStats(other); err == nil {
		t.Fatal("a payload of another type was accepted")
	}
}

func TestCPUPercent(t *testing.T) {
	t0 := time.Unix(1000, 0)
	prev := Stats{At: t0, CPUUsageNanos: 1_000_000_000}
	cur := Stats{At: t0.Add(2 * time.Second), CPUUsageNanos: 2_000_000_000}
	if got := CPUPercent(prev, cur); got != 50 {
		t.Fatalf("one second of CPU in two: %v%%, want 50", got)
	}
	cur.CPUUsageNanos = 5_000_000_000 // two cores busy
	if got := CPUPercent(prev, cur); got != 200 {
		t.Fatalf("got %v%%, want 200", got)
	}
	if got := CPUPercent(cur, prev); got != 0 {
		t.Fatalf("backwards samples: %v", got)
	}
}
