package runtime

import (
	"context"
	"fmt"
	"math"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/typeurl/v2"
)

// Stats samples the task's cgroup counters.
func (r *Containerd) Stats(ctx context.Context, id string) (Stats, error) {
	_, ctr, ctx, err := r.load(ctx, id)
	if err != nil {
		return Stats{}, err
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return Stats{}, r.wrap(err)
	}
	m, err := task.Metrics(ctx)
	if err != nil {
		return Stats{}, r.wrap(err)
	}
	st, err := DecodeStats(m.Data)
	if err != nil {
		return Stats{}, err
	}
	st.At = time.Now()
	if m.Timestamp != nil {
		st.At = m.Timestamp.AsTime()
	}
	return st, nil
}

// unlimited is how cgroup v1 reports "no memory limit": a page-aligned
// value near MaxInt64. Anything this large is no limit at all.
const unlimited = math.MaxInt64 / 2

// DecodeStats turns a task metrics payload (cgroup v1 or v2 stats, as
// containerd's shim sends them) into Stats.
func DecodeStats(data typeurl.Any) (Stats, error) {
	if data == nil {
		return Stats{}, fmt.Errorf("the runtime returned no metrics")
	}
	v, err := typeurl.UnmarshalAny(data)
	if err != nil {
		return Stats{}, fmt.Errorf("decode metrics of type %s: %w", data.GetTypeUrl(), err)
	}
	var st Stats
	switch m := v.(type) {
	case *v1.Metrics:
		st.CPUUsageNanos = m.GetCPU().GetUsage().GetTotal()
		mem := m.GetMemory()
		// Like docker stats: page cache that can be dropped is not "used".
		st.MemoryUsage = mem.GetUsage().GetUsage() - min(mem.GetTotalInactiveFile(), mem.GetUsage().GetUsage())
		st.MemoryLimit = limitOrZero(mem.GetUsage().GetLimit())
		st.Pids = m.GetPids().GetCurrent()
		st.PidsLimit = limitOrZero(m.GetPids().GetLimit())
	case *v2.Metrics:
		st.CPUUsageNanos = m.GetCPU().GetUsageUsec() * 1000
		mem := m.GetMemory()
		st.MemoryUsage = mem.GetUsage() - min(mem.GetInactiveFile(), mem.GetUsage())
		st.MemoryLimit = limitOrZero(mem.GetUsageLimit())
		st.Pids = m.GetPids().GetCurrent()
		st.PidsLimit = limitOrZero(m.GetPids().GetLimit())
	default:
		return Stats{}, fmt.Errorf("unsupported metrics type %T", v)
	}
	return st, nil
}

func limitOrZero(v uint64) uint64 {
	if v >= unlimited {
		return 0
	}
	return v
}

// CPUPercent is the CPU used between two samples, in percent of one core.
func CPUPercent(prev, cur Stats) float64 {
	wall := cur.At.Sub(prev.At)
	if wall <= 0 || cur.CPUUsageNanos < prev.CPUUsageNanos {
		return 0
	}
	return float64(cur.CPUUsageNanos-prev.CPUUsageNanos) / float64(wall.Nanoseconds()) * 100
}
