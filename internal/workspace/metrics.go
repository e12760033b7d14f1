package workspace

import (
	"context"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/remedy"
	"github.com/berth-dev/berth/internal/runtime"
)

// Metrics is a point-in-time view of a running workspace's resource use.
type Metrics struct {
	BotID             string    `json:"bot_id"`
	At                time.Time `json:"at"`
	CPUPercent        float64   `json:"cpu_percent" jsonschema:"description=CPU used since the previous call (or over a short sample)\\, in percent of one core"`
	CPULimitCores     float64   `json:"cpu_limit_cores,omitempty"`
	MemoryUsage       uint64    `json:"memory_usage_bytes"`
	MemoryLimit       uint64    `json:"memory_limit_bytes,omitempty" jsonschema:"description=0 when unlimited"`
	Pids              uint64    `json:"pids"`
	PidsLimit         uint64    `json:"pids_limit,omitempty"`
	StorageUsed       int64     `json:"storage_used_bytes" jsonschema:"description=size of the workspace's own writable layer (refreshed at most every few seconds)"`
	StorageMeasuredAt time.Time `json:"storage_measured_at"`
}

// Storage usage walks the writable layer, so it is measured at most this often.
const storageRefresh = 5 * time.Second

// cpuSampleGap is the wait between two samples when no earlier one exists.
const cpuSampleGap = 200 * time.Millisecond

// Metrics samples the workspace. CPU percent compares with the previous
// call's sample so frequent polling costs one cgroup read per call.
func (m *Manager) Metrics(ctx context.Context, bot string) (Metrics, error) {
	ws, err := m.Get(ctx, bot)
	if err != nil {
		return Metrics{}, err
	}
	if ws.Status != StatusRunning {
		return Metrics{}, remedy.With(remedy.Start, fmt.Errorf("workspace %s is %s; metrics need a running workspace", bot, ws.Status))
	}
	cur, err := m.rt.Stats(ctx, bot)
	if err != nil {
		return Metrics{}, err
	}
	m.statsMu.Lock()
	cache, seen := m.stats[bot]
	m.statsMu.Unlock()
	prev := cache.last
	if !seen || cur.At.Sub(prev.At) > time.Minute || !cur.At.After(prev.At) {
		prev = cur
		select {
		case <-time.After(cpuSampleGap):
		case <-ctx.Done():
			return Metrics{}, ctx.Err()
		}
		if cur, err = m.rt.Stats(ctx, bot); err != nil {
			return Metrics{}, err
		}
	}
	cache.last = cur
	if time.Since(cache.storageAt) > storageRefresh {
		size, err := m.rt.StorageUsage(ctx, bot)
		if err != nil {
			return Metrics{}, fmt.Errorf("measure storage: %w", err)
		}
		cache.storage, cache.storageAt = size, time.Now()
	}
	m.statsMu.Lock()
	m.stats[bot] = cache
	m.statsMu.Unlock()

	return Metrics{
		BotID:             bot,
		At:                cur.At,
		CPUPercent:        runtime.CPUPercent(prev, cur),
		CPULimitCores:     ws.Limits.CPUs,
		MemoryUsage:       cur.MemoryUsage,
		MemoryLimit:       cur.MemoryLimit,
		Pids:              cur.Pids,
		PidsLimit:         cur.PidsLimit,
		StorageUsed:       cache.storage,
		StorageMeasuredAt: cache.storageAt,
	}, nil
}

func (m *Manager) forgetStats(bot string) {
	m.statsMu.Lock()
	delete(m.stats, bot)
	m.statsMu.Unlock()
}
