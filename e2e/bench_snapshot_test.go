package e2e

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// BenchmarkSnapshotCost is issue 13's table: snapshot_create of a running
// workspace holding 0, 200 MB or 1 GB of earlier writes (taken into a first
// version), for a change of 1 KB, 1 MB and 100 MB: how long the workspace
// was paused, the whole call, and the disk the new version takes. Each
// iteration rewrites one file with the change's bytes, so the workspace
// does not grow. Then snapshots of 1 KB changes continue until one is
// compacted (every 32nd version in a chain, see internal/runtime), and its
// time and disk are printed.
//
// BERTH_BENCH_IMAGE_ARCHIVE names an OCI archive to run it on (bench.sh
// passes the Debian image make run builds); busybox otherwise.
func BenchmarkSnapshotCost(b *testing.B) {
	e := newEnv(b)
	image := e.image
	if archive := os.Getenv("BERTH_BENCH_IMAGE_ARCHIVE"); archive != "" {
		image = testenv.ImportArchive(b, e.address, e.namespace, archive)
	}
	c := e.stdioMcpgo()
	type snap struct {
		PauseMs   int64 `json:"pause_ms"`
		DiskBytes int64 `json:"disk_bytes"`
		Compacted bool  `json:"compacted"`
	}
	shot := func(b *testing.B, bot string) (snap, time.Duration) {
		start := time.Now()
		var s snap
		mustCall(b, c, "snapshot_create", map[string]any{"bot_id": bot}).decode(b, &s)
		return s, time.Since(start)
	}
	run := func(b *testing.B, bot, script string) {
		if res := mustCall(b, c, "exec", map[string]any{"bot_id": bot, "command": script, "timeout_seconds": 600}); res.IsError {
			b.Fatal(res.Text)
		}
	}
	for _, earlierMB := range []int{0, 200, 1024} {
		earlier := fmt.Sprintf("%dMB", earlierMB)
		if earlierMB == 1024 {
			earlier = "1GB"
		}
		bot := fmt.Sprintf("cost-%d", earlierMB)
		mustCall(b, c, "workspace_create", map[string]any{"bot_id": bot, "image": image})
		run(b, bot, fmt.Sprintf("head -c %d /dev/urandom > /data/earlier", earlierMB<<20))
		shot(b, bot)
		for _, change := range []struct {
			name string
			size int
		}{{"1KB", 1 << 10}, {"1MB", 1 << 20}, {"100MB", 100 << 20}} {
			size := change.size
			b.Run("earlier-"+earlier+"/change-"+change.name, func(b *testing.B) {
				var pauses, totals []time.Duration
				var disk []int64
				for b.Loop() {
					b.StopTimer()
					run(b, bot, fmt.Sprintf("head -c %d /dev/urandom > /data/change", size))
					b.StartTimer()
					s, total := shot(b, bot)
					pauses = append(pauses, time.Duration(s.PauseMs)*time.Millisecond)
					totals = append(totals, total)
					disk = append(disk, s.DiskBytes)
				}
				slices.Sort(pauses)
				slices.Sort(totals)
				slices.Sort(disk)
				b.ReportMetric(ms(pauses[len(pauses)/2]), "pause-p50-ms")
				b.ReportMetric(ms(pauses[(len(pauses)*95+99)/100-1]), "pause-p95-ms")
				b.ReportMetric(ms(totals[len(totals)/2]), "total-p50-ms")
				b.ReportMetric(float64(disk[len(disk)/2]), "disk-bytes")
			})
		}
		// Outside b.Run: one compaction, whatever -benchtime says.
		compacted := false
		for i := 0; i < 33 && !compacted; i++ {
			run(b, bot, "head -c 1024 /dev/urandom > /data/change")
			s, total := shot(b, bot)
			if compacted = s.Compacted; compacted {
				// Printed, not logged: a benchmark with sub-benchmarks
				// shows no log of its own unless it fails.
				fmt.Printf("SnapshotCostCompaction %s earlier: paused %d ms, total %.0f ms, disk %d bytes\n", earlier, s.PauseMs, ms(total), s.DiskBytes)
			}
		}
		if !compacted {
			b.Fatal("no compacted version in 33 snapshots")
		}
		mustCall(b, c, "workspace_delete", map[string]any{"bot_id": bot, "grace_seconds": 1})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
