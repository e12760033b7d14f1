package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentSocketTakeoverRefused plays a hostile tenant with root in its
// workspace: it replaces its agent socket with a symlink to another
// workspace's socket (the host path is in /proc/self/mountinfo). berth must
// then refuse every call on the attacker's bot with a clear error, never
// reach the other workspace, report the agent as replaced, and get the
// agent back when the workspace restarts.
func TestAgentSocketTakeoverRefused(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	c := e.httpMcpgo(b)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "alpha"})
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "bravo"})
	mustCall(t, c, "fs_write", map[string]any{"bot_id": "bravo", "path": "/data/secret", "content": "bravo-secret"})

	bravoSock := filepath.Join(e.stateDir, "run", "bravo", "agent.sock")
	if o := execute(t, c, "alpha", map[string]any{"command": "grep -q " + e.stateDir + "/run/alpha /proc/self/mountinfo && rm /run/berth/agent.sock && ln -s " + bravoSock + " /run/berth/agent.sock && echo swapped"}); o.Stdout != "swapped\n" {
		t.Fatalf("the attack could not be set up: %+v", o)
	}
	// A new berth has no connection to the real agent left in its pool,
	// so every call on alpha dials the replaced socket.
	c.close()
	b.kill()
	b2 := e.serveHTTP()
	for _, cl := range []mcpClient{e.httpMcpgo(b2), e.httpSDK(b2)} {
		calls := []struct {
			tool string
			args map[string]any
		}{
			{"exec", map[string]any{"command": "hostname; cat /data/secret"}},
			{"fs_read", map[string]any{"path": "/data/secret"}},
			{"fs_write", map[string]any{"path": "/data/planted", "content": "from alpha"}},
			{"fs_list", map[string]any{"path": "/data"}},
		}
		for _, call := range calls {
			call.args["bot_id"] = "alpha"
			res := mustCall(t, cl, call.tool, call.args)
			if !res.IsError || !strings.Contains(res.Text, "not served by its agent") {
				t.Fatalf("%s on alpha after the takeover: error=%v %q; want a clear refusal", call.tool, res.IsError, res.Text)
			}
			if strings.Contains(res.Text, "bravo-secret") {
				t.Fatalf("%s on alpha read bravo's secret: %q", call.tool, res.Text)
			}
		}
		var ws workspaceOut
		mustCall(t, cl, "workspace_get", map[string]any{"bot_id": "alpha"}).decode(t, &ws)
		if ws.Agent == nil || ws.Agent.Status != "replaced" {
			t.Fatalf("workspace_get alpha must report the agent replaced: %+v", ws.Agent)
		}
		cl.close()
	}

	c2 := e.httpMcpgo(b2)
	// bravo is untouched: nothing was written into it, its agent still answers.
	if o := execute(t, c2, "bravo", map[string]any{"command": "hostname; cat /data/secret; echo; ls /data"}); o.Stdout != "bravo\nbravo-secret\nsecret\n" {
		t.Fatalf("bravo was touched: %+v", o)
	}
	// Starting a running workspace leaves its agent where it is.
	mustCall(t, c2, "workspace_start", map[string]any{"bot_id": "bravo"})
	if o := execute(t, c2, "bravo", map[string]any{"command": "hostname"}); o.Stdout != "bravo\n" {
		t.Fatalf("bravo after workspace_start while running: %+v", o)
	}
	// Restarting alpha gives it its agent back, in a clean agent directory.
	mustCall(t, c2, "workspace_stop", map[string]any{"bot_id": "alpha"})
	mustCall(t, c2, "workspace_start", map[string]any{"bot_id": "alpha"})
	if o := execute(t, c2, "alpha", map[string]any{"command": "hostname"}); o.Stdout != "alpha\n" {
		t.Fatalf("alpha after a restart: %+v", o)
	}
	entries, err := os.ReadDir(filepath.Join(e.stateDir, "run", "alpha"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "agent.sock" || entries[0].Type()&os.ModeSocket == 0 {
		t.Fatalf("alpha's agent directory after the restart: %v; want only the socket", entries)
	}
}
