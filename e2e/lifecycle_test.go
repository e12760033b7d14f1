package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// workspaceOut mirrors workspace.Workspace, as a client sees it.
type workspaceOut struct {
	BotID    string   `json:"bot_id"`
	Status   string   `json:"status"`
	Image    string   `json:"image"`
	EnvNames []string `json:"env_names"`
	HostPID  uint32   `json:"host_pid"`
	Limits   struct {
		CPUs        float64 `json:"cpus"`
		MemoryBytes int64   `json:"memory_bytes"`
		Pids        int64   `json:"pids"`
	} `json:"limits"`
	Agent *struct {
		Status          string `json:"status"`
		ProtocolVersion int    `json:"protocol_version"`
	} `json:"agent"`
}

type createOut struct {
	Workspace  workspaceOut `json:"workspace"`
	Created    bool         `json:"created"`
	Pulled     bool         `json:"pulled"`
	NotApplied []string     `json:"not_applied"`
}

type metricsOut struct {
	CPUPercent  float64 `json:"cpu_percent"`
	MemoryUsage uint64  `json:"memory_usage_bytes"`
	MemoryLimit uint64  `json:"memory_limit_bytes"`
	Pids        uint64  `json:"pids"`
	PidsLimit   uint64  `json:"pids_limit"`
	StorageUsed int64   `json:"storage_used_bytes"`
}

// progressLog collects the progress notifications of one call.
type progressLog struct {
	mu     sync.Mutex
	events []progressEvent
}

func (p *progressLog) add(ev progressEvent) {
	p.mu.Lock()
	p.events = append(p.events, ev)
	p.mu.Unlock()
}
func (p *progressLog) all() []progressEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]progressEvent(nil), p.events...)
}

// TestLifecycle walks a workspace through its whole life with each client
// over each transport.
func TestLifecycle(t *testing.T) {
	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			e := newEnv(t)
			c := cl.connect(e)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()

			names, err := c.toolNames(ctx)
			if err != nil || !slices.Contains(names, "workspace_create") || !slices.Contains(names, "image_import") {
				t.Fatalf("tools/list: %v %v", names, err)
			}

			var progress progressLog
			res, err := c.call(ctx, "workspace_create", map[string]any{
				"bot_id": "life", "env": map[string]string{"GREETING": "hello"},
				"cpus": 0.5, "memory": "64M", "pids": 100,
			}, progress.add)
			if err != nil {
				t.Fatal(err)
			}
			var created createOut
			res.decode(t, &created)
			if !created.Created || created.Workspace.Status != "running" {
				t.Fatalf("create: want a new running workspace, got %+v", created)
			}
			if created.Workspace.Agent == nil || created.Workspace.Agent.Status != "ready" {
				t.Fatalf("create: agent not ready: %+v", created.Workspace.Agent)
			}
			if len(progress.all()) == 0 {
				t.Fatal("create sent no progress notifications")
			}
			if created.Workspace.Limits.MemoryBytes != 64<<20 || created.Workspace.Limits.Pids != 100 || created.Workspace.Limits.CPUs != 0.5 {
				t.Fatalf("limits not recorded: %+v", created.Workspace.Limits)
			}
			if strings.Join(created.Workspace.EnvNames, ",") != "GREETING" {
				t.Fatalf("env names: %v", created.Workspace.EnvNames)
			}
			if out := e.execIn(t, "life", "sh", "-c", "echo $GREETING"); strings.TrimSpace(out) != "hello" {
				t.Fatalf("env not applied in the workspace: %q", out)
			}

			var got workspaceOut
			mustCall(t, c, "workspace_get", map[string]any{"bot_id": "life"}).decode(t, &got)
			if got.Status != "running" || got.Agent == nil || got.Agent.Status != "ready" || got.Agent.ProtocolVersion != 1 {
				t.Fatalf("get: %+v", got)
			}

			text, err := c.readResource(ctx, "berth://bots/life/workspace")
			if err != nil {
				t.Fatalf("read resource: %v", err)
			}
			var fromResource workspaceOut
			if err := json.Unmarshal([]byte(text), &fromResource); err != nil || fromResource.BotID != "life" || fromResource.Status != "running" {
				t.Fatalf("resource: %v %s", err, text)
			}

			var list struct {
				Workspaces []workspaceOut `json:"workspaces"`
			}
			mustCall(t, c, "workspace_list", map[string]any{}).decode(t, &list)
			if len(list.Workspaces) != 1 || list.Workspaces[0].BotID != "life" {
				t.Fatalf("list: %+v", list)
			}

			var m metricsOut
			mustCall(t, c, "workspace_metrics", map[string]any{"bot_id": "life"}).decode(t, &m)
			if m.MemoryUsage == 0 || m.MemoryLimit != 64<<20 || m.Pids < 1 || m.PidsLimit != 100 {
				t.Fatalf("metrics: %+v", m)
			}

			var stopped workspaceOut
			mustCall(t, c, "workspace_stop", map[string]any{"bot_id": "life"}).decode(t, &stopped)
			if stopped.Status != "stopped" {
				t.Fatalf("stop: %+v", stopped)
			}
			if res := mustCall(t, c, "workspace_metrics", map[string]any{"bot_id": "life"}); !res.IsError || !strings.Contains(res.Text, "stopped") {
				t.Fatalf("metrics of a stopped workspace should fail clearly: %+v", res)
			}

			var started workspaceOut
			mustCall(t, c, "workspace_start", map[string]any{"bot_id": "life"}).decode(t, &started)
			if started.Status != "running" || started.Agent == nil || started.Agent.Status != "ready" {
				t.Fatalf("start: %+v", started)
			}

			var deleted struct {
				Deleted bool `json:"deleted"`
			}
			mustCall(t, c, "workspace_delete", map[string]any{"bot_id": "life"}).decode(t, &deleted)
			if !deleted.Deleted {
				t.Fatal("delete did not say deleted")
			}
			if res := mustCall(t, c, "workspace_get", map[string]any{"bot_id": "life"}); !res.IsError || !strings.Contains(res.Text, "no workspace") {
				t.Fatalf("get after delete: %+v", res)
			}
		})
	}
}
