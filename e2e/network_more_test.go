package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netState is network_get's answer, with the fields these tests compare.
type netState struct {
	Mode    string    `json:"mode"`
	IP      string    `json:"ip"`
	Gateway string    `json:"gateway"`
	Policy  netPolicy `json:"policy"`
}

type modeSetOut struct {
	Mode          string `json:"mode"`
	Previous      string `json:"previous"`
	RestartNeeded bool   `json:"restart_needed"`
}

const netModeToken = "net-mode-0123456789abcdef" // mode-*: read, exec, manage (no admin)

func netGetOf(t *testing.T, c mcpClient, bot string) netState {
	t.Helper()
	var s netState
	mustCall(t, c, "network_get", map[string]any{"bot_id": bot}).decode(t, &s)
	return s
}

func restart(t *testing.T, c mcpClient, bot string) {
	t.Helper()
	mustCall(t, c, "workspace_stop", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	mustCall(t, c, "workspace_start", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
}

// TestNetworkModes checks, over both MCP clients on HTTP, that a scoped
// token may not choose host mode (at create or with network_mode_set), that
// a mode change waits for the next start and then takes effect (none →
// bridge → none, the policy kept across), and, over both clients on stdio,
// that the policy is set and read there too.
func TestNetworkModes(t *testing.T) {
	n := newNetEnv(t)
	tokens := fmt.Sprintf("tokens:\n  - {name: modes, token: %s, bots: [mode-mcpgo, mode-gosdk, stdio-net], scopes: [read, exec, manage]}\n", netModeToken)
	path := filepath.Join(n.stateDir, "tokens.yaml")
	must(t, os.WriteFile(path, []byte(tokens), 0o600))
	n.extra = append(n.extra, "--tokens-file", path)
	b := n.serveHTTP()
	byAddr := "http://" + n.hostIP + ":8080/"

	for _, kind := range []string{"mcpgo", "gosdk"} {
		t.Run(kind, func(t *testing.T) {
			bot := "mode-" + kind
			scoped := n.netClient(kind, b.URL, netModeToken, nil)
			admin := n.netClient(kind, b.URL, b.Token, nil)

			// host is refused for a scoped token, and nothing is made.
			res := mustCall(t, scoped, "workspace_create", map[string]any{"bot_id": bot, "network": "host"})
			wantToolError(t, res, "admin scope")
			if res := mustCall(t, scoped, "workspace_get", map[string]any{"bot_id": bot}); !res.IsError {
				t.Fatalf("a refused host create made a workspace: %s", res.Text)
			}

			var cr createOut
			mustCall(t, scoped, "workspace_create", map[string]any{"bot_id": bot, "network": "none"}).decode(t, &cr)
			if s := netGetOf(t, scoped, bot); s.Mode != "none" || s.IP != "" {
				t.Fatalf("network_get of a none workspace: %+v", s)
			}
			wantToolError(t, mustCall(t, scoped, "network_mode_set", map[string]any{"bot_id": bot, "mode": "host"}), "admin scope")
			wantToolError(t, mustCall(t, scoped, "network_mode_set", map[string]any{"bot_id": bot, "mode": "sideways"}), "none, bridge, host")
			if s := netGetOf(t, scoped, bot); s.Mode != "none" {
				t.Fatalf("a refused mode change changed the mode: %+v", s)
			}

			// none → bridge: stored now, applied at the next start.
			var ms modeSetOut
			res = mustCall(t, scoped, "network_mode_set", map[string]any{"bot_id": bot, "mode": "bridge"})
			res.decode(t, fresh(&ms))
			if ms.Mode != "bridge" || ms.Previous != "none" || !ms.RestartNeeded || !strings.Contains(res.Text, "next start") {
				t.Fatalf("network_mode_set bridge: %+v %q", ms, res.Text)
			}
			if s := netGetOf(t, scoped, bot); s.IP != "" {
				t.Errorf("the running task got an address before its restart: %+v", s)
			}
			if out, ok := fetch(t, scoped, bot, byAddr); ok {
				t.Errorf("before the restart, a none workspace reached the test host: %q", out)
			}
			restart(t, scoped, bot)
			s := netGetOf(t, scoped, bot)
			if s.Mode != "bridge" || s.IP == "" || s.Policy.Default != "allow" {
				t.Fatalf("after the restart in bridge: %+v", s)
			}
			if out, ok := fetch(t, scoped, bot, byAddr); !ok || !strings.Contains(out, "hello from the test host") {
				t.Errorf("bridge after the mode change: %q ok=%v", out, ok)
			}

			// The policy set in bridge is kept through none and back.
			mustCall(t, scoped, "network_policy_set", map[string]any{"bot_id": bot, "default": "deny",
				"allow": []map[string]any{{"cidr": n.hostIP + "/32", "ports": []string{"8080"}}}}).decode(t, &struct{}{})
			mustCall(t, scoped, "network_mode_set", map[string]any{"bot_id": bot, "mode": "none"}).decode(t, fresh(&ms))
			if !ms.RestartNeeded || ms.Previous != "bridge" {
				t.Fatalf("network_mode_set none: %+v", ms)
			}
			if out, ok := fetch(t, scoped, bot, byAddr); !ok || !strings.Contains(out, "hello") {
				t.Errorf("until its restart the workspace keeps its bridge network: %q ok=%v", out, ok)
			}
			restart(t, scoped, bot)
			s = netGetOf(t, scoped, bot)
			if s.Mode != "none" || s.IP != "" || s.Policy.Default != "deny" || len(s.Policy.Allow) != 1 || s.Policy.Allow[0].CIDR != n.hostIP+"/32" {
				t.Fatalf("after the restart in none: %+v", s)
			}
			if out := execute(t, scoped, bot, map[string]any{"command": "printf 'GET /\\n' | nc -w 3 " + n.hostIP + " 8080 2>&1; route -n"}); strings.Contains(out.Stdout, "hello") || strings.Contains(out.Stdout, "0.0.0.0 ") {
				t.Errorf("network none after the mode change reached out or has a route: %q", out.Stdout)
			}

			// Setting the mode it has changes nothing and needs no restart;
			// an admin may choose host.
			mustCall(t, scoped, "network_mode_set", map[string]any{"bot_id": bot, "mode": "none"}).decode(t, fresh(&ms))
			if ms.RestartNeeded || ms.Previous != "none" {
				t.Errorf("setting the mode it has: %+v", ms)
			}
			mustCall(t, admin, "network_mode_set", map[string]any{"bot_id": bot, "mode": "host"}).decode(t, fresh(&ms))
			if ms.Mode != "host" || !ms.RestartNeeded {
				t.Errorf("admin network_mode_set host: %+v", ms)
			}
			if s := netGetOf(t, admin, bot); s.Mode != "host" {
				t.Errorf("network_get after an admin's host: %+v", s)
			}
			mustCall(t, admin, "workspace_delete", map[string]any{"bot_id": bot})
		})
	}
	mustCall(t, n.httpMcpgo(b), "workspace_create", map[string]any{"bot_id": "stdio-net"}).decode(t, &struct{}{})
	b.kill()

	// stdio: the same berth state, policy set and read over each client.
	for _, tc := range []struct {
		kind    string
		connect func() mcpClient
	}{{"mcpgo", n.stdioMcpgo}, {"gosdk", n.stdioSDK}} {
		t.Run("stdio-"+tc.kind, func(t *testing.T) {
			c := tc.connect()
			defer c.close()
			mustCall(t, c, "network_policy_set", map[string]any{"bot_id": "stdio-net", "default": "deny"}).decode(t, &struct{}{})
			if s := netGetOf(t, c, "stdio-net"); s.Mode != "bridge" || s.IP == "" || s.Policy.Default != "deny" {
				t.Fatalf("network_get over stdio: %+v", s)
			}
			if out, ok := fetch(t, c, "stdio-net", byAddr); ok {
				t.Errorf("default deny set over stdio: reached the test host: %q", out)
			}
			mustCall(t, c, "network_policy_set", map[string]any{"bot_id": "stdio-net", "default": "allow"}).decode(t, &struct{}{})
			if out, ok := fetch(t, c, "stdio-net", byAddr); !ok || !strings.Contains(out, "hello") {
				t.Errorf("default allow set over stdio: %q ok=%v", out, ok)
			}
		})
	}
}

// TestNetworkForkAndReboot checks that a fork gets its own address and a
// copy (not a share) of the policy, and that after a simulated host reboot
// (tasks dead, namespaces, veths, bridge and rules gone while berth is down)
// a berth restart brings the workspaces back with their policies.
func TestNetworkForkAndReboot(t *testing.T) {
	n := newNetEnv(t)
	b := n.serveHTTP()
	c := n.httpSDK(b)
	byName := "http://" + testHostName + ":8080/"
	byAddr := "http://" + n.hostIP + ":8080/"

	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "src"}).decode(t, &struct{}{})
	allowCIDR := []map[string]any{{"cidr": n.hostIP + "/32"}}
	mustCall(t, c, "network_policy_set", map[string]any{"bot_id": "src", "default": "deny", "allow": allowCIDR}).decode(t, &struct{}{})
	mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "src"}).decode(t, &struct{}{})
	mustCall(t, c, "workspace_fork", map[string]any{"bot_id": "src", "version": 1, "new_bot_id": "fork"}).decode(t, &struct{}{})

	src, fork := netGetOf(t, c, "src"), netGetOf(t, c, "fork")
	if fork.Mode != "bridge" || fork.IP == "" || fork.IP == src.IP {
		t.Fatalf("the fork's network: %+v (source %+v)", fork, src)
	}
	if fork.Policy.Default != "deny" || len(fork.Policy.Allow) != 1 || fork.Policy.Allow[0].CIDR != n.hostIP+"/32" {
		t.Fatalf("the fork's policy is not the source's: %+v", fork.Policy)
	}
	checkDeny := func(when, bot string) {
		t.Helper()
		if out, ok := fetch(t, c, bot, byAddr); !ok || !strings.Contains(out, "hello") {
			t.Errorf("%s: %s: allowed CIDR: %q ok=%v", when, bot, out, ok)
		}
		if out, ok := fetch(t, c, bot, byName); ok {
			t.Errorf("%s: %s: a name the policy does not allow: %q", when, bot, out)
		}
	}
	checkAllow := func(when, bot string) {
		t.Helper()
		if out, ok := fetch(t, c, bot, byName); !ok || !strings.Contains(out, "hello") {
			t.Errorf("%s: %s: default allow by name: %q ok=%v", when, bot, out, ok)
		}
	}
	checkDeny("fork", "fork")
	// A copy: the fork's policy changes alone.
	mustCall(t, c, "network_policy_set", map[string]any{"bot_id": "fork", "default": "allow"}).decode(t, &struct{}{})
	checkAllow("fork with its own policy", "fork")
	checkDeny("source after the fork's change", "src")
	if s := netGetOf(t, c, "src"); s.Policy.Default != "deny" {
		t.Errorf("the fork's change reached the source: %+v", s.Policy)
	}

	// The reboot, while berth is down: every task dies, the namespaces'
	// mounts go (and with them the veths), the bridge and the rules go.
	c.close()
	b.kill()
	cl := testenv.Client(t)
	ctx := namespaces.WithNamespace(context.Background(), n.namespace)
	for _, bot := range []string{"src", "fork"} {
		ctr, err := cl.LoadContainer(ctx, bot)
		must(t, err)
		task, err := ctr.Task(ctx, nil)
		must(t, err)
		exited, err := task.Wait(ctx)
		must(t, err)
		must(t, task.Kill(ctx, syscall.SIGKILL))
		<-exited
		ns := filepath.Join(n.stateDir, "network", "netns", bot)
		must(t, unix.Unmount(ns, unix.MNT_DETACH))
	}
	if l, err := netlink.LinkByName(n.bridge); err == nil {
		must(t, netlink.LinkDel(l))
	}
	for _, family := range []string{"inet", "bridge"} {
		exec.Command("nft", "delete", "table", family, "berth-"+n.bridge).Run()
	}
	if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), "berth-"+n.bridge) {
		t.Fatalf("the simulated reboot left berth's tables: %s", out)
	}

	b = n.serveHTTP()
	c = n.httpMcpgo(b)
	for _, bot := range []string{"src", "fork"} {
		deadline := time.Now().Add(60 * time.Second)
		for {
			var got workspaceOut
			mustCall(t, c, "workspace_get", map[string]any{"bot_id": bot}).decode(t, &got)
			if got.Status == "running" && got.Agent != nil && got.Agent.Status == "ready" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s was not started again after the reboot: %+v", bot, got)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	src2, fork2 := netGetOf(t, c, "src"), netGetOf(t, c, "fork")
	if src2.Mode != "bridge" || src2.IP == "" || src2.Policy.Default != "deny" || len(src2.Policy.Allow) != 1 {
		t.Errorf("source after the reboot: %+v", src2)
	}
	if fork2.Mode != "bridge" || fork2.IP == "" || fork2.IP == src2.IP || fork2.Policy.Default != "allow" {
		t.Errorf("fork after the reboot: %+v (source %+v)", fork2, src2)
	}
	if ports := bridgePorts(t, n.bridge); ports != 2 {
		t.Errorf("after the reboot: %d ports on the bridge, want 2", ports)
	}
	// The old allocations were released: one address per workspace.
	if ips := allocated(t, n.stateDir); len(ips) != 2 || !slices.Contains(ips, src2.IP) || !slices.Contains(ips, fork2.IP) {
		t.Errorf("after the reboot, IPAM holds %v, want %s and %s", ips, src2.IP, fork2.IP)
	}
	checkDeny("after the reboot", "src")
	checkAllow("after the reboot", "fork")
}
