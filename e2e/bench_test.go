package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// BenchmarkCreateReady measures a new workspace from a local image until
// berth's agent answers, through an MCP client over stdio, against the
// baseline of the same containerd doing `ctr run -d` plus one
// `ctr task exec` (a container that has proven it can run a command).
// scripts/bench.sh prints the ratio.
func BenchmarkCreateReady(b *testing.B) {
	b.Run("berth", func(b *testing.B) {
		e := newEnv(b)
		c := e.stdioMcpgo()
		var lat []time.Duration
		for i := 0; b.Loop(); i++ {
			bot := fmt.Sprintf("bench-%d", i)
			start := time.Now()
			res := mustCall(b, c, "workspace_create", map[string]any{"bot_id": bot})
			lat = append(lat, time.Since(start))
			if res.IsError {
				b.Fatal(res.Text)
			}
			b.StopTimer()
			mustCall(b, c, "workspace_delete", map[string]any{"bot_id": bot, "grace_seconds": 1})
			b.StartTimer()
		}
		reportPercentiles(b, lat)
	})
	b.Run("ctr", func(b *testing.B) {
		e := newEnv(b)
		ctr := func(args ...string) {
			b.Helper()
			full := append([]string{"--address", e.address, "--namespace", e.namespace}, args...)
			if out, err := exec.Command("ctr", full...).CombinedOutput(); err != nil {
				b.Fatalf("ctr %v: %v\n%s", args, err, out)
			}
		}
		var lat []time.Duration
		for i := 0; b.Loop(); i++ {
			id := fmt.Sprintf("ctr-%d", i)
			start := time.Now()
			ctr("run", "-d", e.image, id, "sleep", "3600")
			ctr("task", "exec", "--exec-id", "probe", id, "true")
			lat = append(lat, time.Since(start))
			b.StopTimer()
			ctr("task", "kill", "-s", "SIGKILL", id)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			for exec.CommandContext(ctx, "ctr", "--address", e.address, "--namespace", e.namespace, "task", "rm", id).Run() != nil && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
			}
			cancel()
			ctr("container", "rm", id)
			b.StartTimer()
		}
		reportPercentiles(b, lat)
	})
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
}
