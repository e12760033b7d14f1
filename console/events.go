package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
)

// The event stream's pace and bounds.
const (
	workspacesEvery = 2 * time.Second
	pingEvery       = 15 * time.Second
	// maxStreamWorkspaces bounds one summary; a page that needs more
	// lists them with workspace_list, which pages.
	maxStreamWorkspaces = 500
	// metricsParallel bounds the concurrent metrics reads of one summary
	// (a workspace's first read waits for a second CPU sample).
	metricsParallel = 8
	summaryTimeout  = 10 * time.Second
)

// summary is one workspace in the `workspaces` event.
type summary struct {
	BotID       string     `json:"bot_id"`
	Status      string     `json:"status"`
	Image       string     `json:"image"`
	Limits      limits     `json:"limits"`
	NetworkMode string     `json:"network_mode"`
	CPUPercent  float64    `json:"cpu_percent"`
	MemoryBytes uint64     `json:"memory_bytes"`
	DiskBytes   int64      `json:"disk_bytes"`
	MCPServers  []mcpState `json:"mcp_servers"`
	LastActive  *time.Time `json:"last_activity,omitempty"`
	Pending     int        `json:"pending_requests"`
}

// limits are a workspace's limits, each field present (0 is unlimited).
type limits struct {
	CPUs        float64 `json:"cpus"`
	MemoryBytes int64   `json:"memory_bytes"`
	Pids        int64   `json:"pids"`
}

type mcpState struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

// events streams the session's view of the workspaces until the page goes
// away, the session ends or berth shuts down.
func (c *Console) events(w http.ResponseWriter, r *http.Request, s *session) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		jsonError(w, http.StatusInternalServerError, "this connection cannot stream")
		return
	}
	if !c.sessions.openStream(s) {
		jsonError(w, http.StatusTooManyRequests, fmt.Sprintf("this session has %d event streams open, the most it may; close another page of the console", maxStreamsPerSession))
		return
	}
	defer c.sessions.closeStream(s)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	send := func(name string, v any) bool {
		data, err := json.Marshal(v)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	ctx := r.Context()
	tick, ping := time.NewTicker(workspacesEvery), time.NewTicker(pingEvery)
	defer tick.Stop()
	defer ping.Stop()
	sendWorkspaces := func() bool {
		list, truncated := c.views.get(ctx, s.principal, c.summaries)
		return ctx.Err() == nil && send("workspaces", map[string]any{"workspaces": list, "truncated": truncated})
	}
	if !sendWorkspaces() {
		return
	}
	for {
		var ok bool
		select {
		case <-ctx.Done():
			return
		case <-c.done:
			return
		case <-ping.C:
			ok = send("ping", map[string]any{"time": time.Now().UTC()})
		case <-tick.C:
			// A stream ends with its session (logout, expiry).
			ok = c.sessions.alive(s) && sendWorkspaces()
		}
		if !ok {
			return
		}
	}
}

// views share the summaries among the streams of one credential (the
// pages of its sessions see the same bots): a summary at most a second old
// serves them all, so more tabs do not cost more listings and metrics.
type views struct {
	mu sync.Mutex
	m  map[string]*view // by principal ID
}

type view struct {
	mu        sync.Mutex // held while computing: the other streams wait for it
	at        time.Time
	list      []summary
	truncated bool
}

const viewFresh = workspacesEvery / 2

func (vs *views) get(ctx context.Context, p *auth.Principal, compute func(context.Context, *auth.Principal) ([]summary, bool)) ([]summary, bool) {
	vs.mu.Lock()
	if vs.m == nil {
		vs.m = map[string]*view{}
	}
	v := vs.m[p.ID]
	if v == nil {
		// Forget the views no stream asked for lately.
		for id, o := range vs.m {
			if o.mu.TryLock() {
				if time.Since(o.at) > time.Minute {
					delete(vs.m, id)
				}
				o.mu.Unlock()
			}
		}
		v = &view{}
		vs.m[p.ID] = v
	}
	vs.mu.Unlock()
	v.mu.Lock()
	defer v.mu.Unlock()
	if time.Since(v.at) >= viewFresh {
		list, truncated := compute(ctx, p)
		if ctx.Err() != nil {
			return list, truncated // cut short: not for the others
		}
		v.list, v.truncated, v.at = list, truncated, time.Now()
	}
	return v.list, v.truncated
}

// summaries describes the workspaces p may read.
func (c *Console) summaries(ctx context.Context, p *auth.Principal) ([]summary, bool) {
	out := []summary{}
	if c.o.Workspaces == nil {
		return out, false
	}
	ctx, cancel := context.WithTimeout(ctx, summaryTimeout)
	defer cancel()
	wss, more, err := c.o.Workspaces.ListVisible(ctx, "", maxStreamWorkspaces, func(bot string) bool {
		return p.Allow(auth.ScopeRead, bot) == nil
	})
	if err != nil {
		c.o.Logger.Debug("console: list workspaces", "err", err)
		return out, false
	}
	active := c.activity.refresh()
	out = make([]summary, len(wss))
	var wg sync.WaitGroup
	sem := make(chan struct{}, metricsParallel)
	for i, ws := range wss {
		out[i] = c.summarise(ws, active)
		if ws.Status != workspace.StatusRunning {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			m, err := c.o.Workspaces.Metrics(ctx, ws.BotID)
			if err != nil {
				return // stopped meanwhile: the next summary says so
			}
			out[i].CPUPercent, out[i].MemoryBytes, out[i].DiskBytes = m.CPUPercent, m.MemoryUsage, m.StorageUsed
		}()
	}
	wg.Wait()
	return out, more
}

// summarise is the part of a summary that needs no metrics.
func (c *Console) summarise(ws workspace.Workspace, active map[string]time.Time) summary {
	s := summary{
		BotID: ws.BotID, Status: ws.Status, Image: ws.Image, NetworkMode: ws.Network,
		Limits:     limits{CPUs: ws.Limits.CPUs, MemoryBytes: ws.Limits.MemoryBytes, Pids: ws.Limits.Pids},
		MCPServers: []mcpState{},
	}
	if t, ok := active[ws.BotID]; ok {
		s.LastActive = &t
	}
	if c.o.MCPServers != nil {
		if infos, err := c.o.MCPServers.List(ws.BotID); err == nil {
			for _, in := range infos {
				s.MCPServers = append(s.MCPServers, mcpState{Name: in.Name, State: string(in.State)})
			}
		}
	}
	if reqs, err := c.o.Workspaces.NetworkRequests(ws.BotID); err == nil {
		for _, rq := range reqs {
			if rq.Status == workspace.NetworkRequestPending {
				s.Pending++
			}
		}
	}
	return s
}
