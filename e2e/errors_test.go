package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadInput sends bad requests over each transport: every one gets a
// clear tool error, nothing changes, and the server keeps serving.
func TestBadInput(t *testing.T) {
	for _, cl := range []struct {
		name    string
		connect func(e *env) mcpClient
	}{clients[1], clients[2]} {
		t.Run(cl.name, func(t *testing.T) {
			e := newEnv(t)
			c := cl.connect(e)
			cases := []struct {
				tool string
				args map[string]any
				want string
			}{
				{"workspace_get", map[string]any{"bot_id": "ghost"}, "has no workspace"},
				{"workspace_start", map[string]any{"bot_id": "ghost"}, "has no workspace"},
				{"workspace_stop", map[string]any{"bot_id": "ghost"}, "has no workspace"},
				// workspace_delete of a missing workspace succeeds (it is
				// idempotent): TestDeleteIsIdempotent.
				{"workspace_metrics", map[string]any{"bot_id": "ghost"}, "has no workspace"},
				{"workspace_get", map[string]any{"bot_id": "Bad ID!"}, "bot_id \"Bad ID!\" is invalid"},
				{"workspace_get", map[string]any{"bot_id": "../etc"}, "is invalid"},
				{"workspace_get", map[string]any{}, "bot_id is required"},
				{"workspace_create", map[string]any{"bot_id": "x", "image": "Not A Valid::Ref"}, "image reference"},
				{"workspace_create", map[string]any{"bot_id": "x", "image": "berth-test/absent:1", "pull_policy": "never"}, "not present and the pull policy is never; import it with image_import"},
				{"workspace_create", map[string]any{"bot_id": "x", "pull_policy": "sometimes"}, "pull policy"},
				{"workspace_create", map[string]any{"bot_id": "x", "memory": "lots"}, "size \"lots\""},
				{"workspace_create", map[string]any{"bot_id": "x", "cpus": -1}, "must not be negative"},
				{"workspace_create", map[string]any{"bot_id": "x", "env": map[string]string{"1BAD": "v"}}, "env name"},
				{"workspace_create", map[string]any{"bot_id": "x", "devices": []string{"berth.test/device=nope"}}, "unknown CDI device"},
				{"workspace_create", map[string]any{"bot_id": "x", "colour": "blue"}, "unknown field \"colour\""},
				{"workspace_list", map[string]any{"limit": 5000}, "limit must be between"},
				{"image_import", map[string]any{"path": "relative.tar"}, "absolute host path"},
				{"image_import", map[string]any{"path": "/nonexistent/archive.tar"}, "open archive"},
			}
			for _, tc := range cases {
				res := mustCall(t, c, tc.tool, tc.args)
				if !res.IsError || !strings.Contains(res.Text, tc.want) {
					t.Errorf("%s %v: want an error containing %q, got isError=%v %q", tc.tool, tc.args, tc.want, res.IsError, res.Text)
				}
			}
			var list struct {
				Workspaces []workspaceOut `json:"workspaces"`
			}
			mustCall(t, c, "workspace_list", map[string]any{}).decode(t, &list)
			if len(list.Workspaces) != 0 {
				t.Fatalf("bad input created workspaces: %+v", list.Workspaces)
			}
		})
	}
}

// TestContainerdDown stops berth's containerd under it: tools say what is
// wrong and how to fix it, the server stays up, and heals when containerd
// is back.
func TestContainerdDown(t *testing.T) {
	e := newEnv(t)
	dir, err := os.MkdirTemp("/tmp", "bctd")
	if err != nil {
		t.Fatal(err)
	}
	script, _ := filepath.Abs("../scripts/containerd.sh")
	ctd := func(action string) {
		t.Helper()
		if out, err := exec.Command(script, action, dir).CombinedOutput(); err != nil {
			t.Fatalf("containerd.sh %s: %v\n%s", action, err, out)
		}
	}
	ctd("up")
	t.Cleanup(func() { exec.Command(script, "down", dir).Run() })
	e.address = filepath.Join(dir, "containerd.sock")

	b := e.serveHTTP()
	c := e.httpSDK(b)
	if res := mustCall(t, c, "workspace_list", map[string]any{}); res.IsError {
		t.Fatalf("list with containerd up: %s", res.Text)
	}
	ctd("down")
	for _, tool := range []string{"workspace_list", "image_list"} {
		res := mustCall(t, c, tool, map[string]any{})
		if !res.IsError || !strings.Contains(res.Text, "containerd is not reachable") || !strings.Contains(res.Text, "start containerd") {
			t.Fatalf("%s with containerd down: want a clear error, got %+v", tool, res)
		}
	}
	res := mustCall(t, c, "workspace_create", map[string]any{"bot_id": "later"})
	if !res.IsError || !strings.Contains(res.Text, "containerd is not reachable") {
		t.Fatalf("create with containerd down: %+v", res)
	}
	resp := httpGet(t, strings.TrimSuffix(b.URL, "/mcp")+"/readyz")
	if resp != 503 {
		t.Fatalf("/readyz with containerd down: %d", resp)
	}
	ctd("up")
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := mustCall(t, c, "workspace_list", map[string]any{})
		if !res.IsError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("berth did not heal after containerd came back: %s", res.Text)
		}
		time.Sleep(500 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.toolNames(ctx); err != nil {
		t.Fatalf("server is not serving: %v", err)
	}
}
