package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// wsOut is the part of workspace_get these tests read.
type wsOut struct {
	Status string `json:"status"`
	PID    int    `json:"host_pid"`
	Limits struct {
		CPUs        float64 `json:"cpus"`
		MemoryBytes int64   `json:"memory_bytes"`
		Pids        int64   `json:"pids"`
	} `json:"limits"`
	Agent *struct {
		Status string `json:"status"`
	} `json:"agent"`
}

func runIn(t *testing.T, c mcpClient, bot, command string, timeout float64) execOut {
	t.Helper()
	var out execOut
	mustCall(t, c, "exec", map[string]any{"bot_id": bot, "command": command, "timeout_seconds": timeout}).decode(t, &out)
	return out
}

func getWS(t *testing.T, c mcpClient, bot string) wsOut {
	t.Helper()
	var ws wsOut
	mustCall(t, c, "workspace_get", map[string]any{"bot_id": bot}).decode(t, &ws)
	return ws
}

// hostCanary is a process and a file on the host that nothing a workspace
// does may touch.
type hostCanary struct {
	cmd  *exec.Cmd
	file string
	data []byte
}

func newHostCanary(t *testing.T) *hostCanary {
	t.Helper()
	c := &hostCanary{cmd: exec.Command("sleep", "3600"), file: filepath.Join(t.TempDir(), "canary"), data: make([]byte, 64)}
	rand.Read(c.data)
	if err := os.WriteFile(c.file, c.data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.cmd.Process.Kill(); c.cmd.Wait() })
	return c
}

func (c *hostCanary) check(t *testing.T) {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("host canary process is gone: %v", err)
	}
	if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) == 0 || f[0] == "Z" || f[0] == "X" {
		t.Fatalf("host canary process died: %s", stat)
	}
	got, err := os.ReadFile(c.file)
	if err != nil || !bytes.Equal(got, c.data) {
		t.Fatalf("host canary file changed: %v", err)
	}
}

// hostCgroupFile reads a file of the cgroup of hierarchy ctrl (cgroup v1)
// that the host process pid is in.
func hostCgroupFile(t *testing.T, pid int, ctrl, name string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && strings.Contains(","+parts[1]+",", ","+ctrl+",") {
			v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", parts[1], parts[2], name))
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(string(v))
		}
	}
	t.Fatalf("process %d is in no %s cgroup: %s", pid, ctrl, data)
	return ""
}

// cgroupCount reads "key N" from a flat-keyed cgroup file.
func cgroupCount(text, key string) int64 {
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && k == key {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return -1
}

// TestHardeningSeccomp: a workspace runs under containerd's default seccomp
// profile, so user namespaces, mounts, keyctl and bpf are refused while the
// agent (PTYs, setsid, the image's user) works as before.
func TestHardeningSeccomp(t *testing.T) {
	e := newEnv(t)
	e.image = testenv.ImportArchive(t, e.address, e.namespace, testenv.SyscallsArchive(t))
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "sec"}).decode(t, &createOut{})

	probe := runIn(t, c, "sec", testenv.SyscallsPath+" probe", 60)
	if probe.ExitCode != 0 {
		t.Fatalf("probe failed: %+v", probe)
	}
	results := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(probe.Stdout), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			results[k] = v
		}
	}
	want := map[string]string{"seccomp": "2", "getpid": "ok", "unshare_mount": "EPERM", "keyctl": "EPERM", "bpf": "EPERM",
		// The image runs as root here: root in the workspace still cannot
		// trace the agent or open its descriptors.
		"ptrace_init": "EPERM", "init_fds": "EACCES", "init_root": "EACCES"}
	for k, v := range want {
		if results[k] != v {
			t.Errorf("%s: got %q, want %q (probe output %q)", k, results[k], v, probe.Stdout)
		}
	}
	// The reproduction: a user namespace in which root may mount.
	un := runIn(t, c, "sec", "unshare -m -r sh -c 'mount -t tmpfs x /mnt && echo mounted'", 60)
	if un.ExitCode == 0 || strings.Contains(un.Stdout, "mounted") {
		t.Fatalf("unshare -m -r and mount succeeded in the workspace: %+v", un)
	}
	// The agent still does what it needs the refused-to-others calls for.
	if out := runIn(t, c, "sec", "echo agent-ok", 60); strings.TrimSpace(out.Stdout) != "agent-ok" {
		t.Fatalf("exec after probes: %+v", out)
	}
	var term struct {
		ID string `json:"id"`
	}
	mustCall(t, c, "terminal_open", map[string]any{"bot_id": "sec"}).decode(t, &term)
	send(t, c, "sec", term.ID, "echo tty-$((6*7))\n", "tty-42")
}

// TestHardeningForkBombAndMemoryHog: the default pids limit stops a fork
// bomb and the memory limit OOM-kills a hog, each inside its workspace: the
// workspace and its agent survive, berth stays up, the host is untouched.
func TestHardeningForkBombAndMemoryHog(t *testing.T) {
	e := newEnv(t)
	e.image = testenv.ImportArchive(t, e.address, e.namespace, testenv.SyscallsArchive(t))
	canary := newHostCanary(t)
	b := e.serveHTTP("--default-pids", "64", "--default-memory", "64M")
	c := e.httpSDK(b)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "bomb"}).decode(t, &createOut{})
	ws := getWS(t, c, "bomb")
	if ws.Limits.Pids != 64 || ws.Limits.MemoryBytes != 64<<20 || ws.Limits.CPUs <= 0 {
		t.Fatalf("workspace_get does not show the default limits: %+v", ws.Limits)
	}
	if got := hostCgroupFile(t, ws.PID, "pids", "pids.max"); got != "64" {
		t.Fatalf("pids.max of the workspace is %s", got)
	}
	// The agent made its threads while the limit had room: a Go program
	// that needs one more thread when it has none is ended by its runtime.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", ws.PID))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Threads:\s*(1[6-9]|[2-9][0-9])$`).Match(status) {
		t.Fatalf("the agent holds fewer than 16 threads before the fork bomb:\n%s", status)
	}

	// A fork bomb in the background of a shell that then blocks without
	// forking (read on a FIFO it holds open), so the shell outlives the
	// bomb's fork failures and the exec's timeout ends the whole group.
	bomb := make(chan execOut, 1)
	go func() {
		var out execOut
		res, err := c.call(context.Background(), "exec", map[string]any{
			"bot_id": "bomb", "command": "mkfifo /tmp/hold && { b(){ b | b & }; b & read x <>/tmp/hold; }", "timeout_seconds": 20,
		}, nil)
		if err == nil && !res.IsError {
			_ = json.Unmarshal(res.Structured, &out)
		} else {
			out.Stderr = fmt.Sprintf("call failed: %v %+v", err, res)
		}
		bomb <- out
	}()
	for cgroupCount(hostCgroupFile(t, ws.PID, "pids", "pids.events"), "max") <= 0 {
		select {
		case out := <-bomb:
			t.Fatalf("the fork bomb ended before the pids limit refused a fork: %+v", out)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if n, _ := strconv.Atoi(hostCgroupFile(t, ws.PID, "pids", "pids.current")); n > 64 {
		t.Fatalf("pids.current %d is over the limit", n)
	}
	canary.check(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if _, err := c.toolNames(ctx); err != nil {
		t.Fatalf("berth does not answer during the fork bomb: %v", err)
	}
	cancel()
	if out := <-bomb; !out.TimedOut {
		t.Fatalf("the fork bomb should have run until its timeout: %+v", out)
	}
	waitExecOK(t, c, "bomb")
	if now := getWS(t, c, "bomb"); now.PID != ws.PID || now.Agent == nil || now.Agent.Status != "ready" {
		t.Fatalf("the workspace did not survive the fork bomb: %+v (before %+v)", now, ws)
	}

	// A hog four times the memory limit.
	hog := runIn(t, c, "bomb", testenv.SyscallsPath+" hog 256", 120)
	if hog.ExitCode == 0 || strings.Contains(hog.Stdout, "allocated") {
		t.Fatalf("the memory hog was not stopped: %+v", hog)
	}
	if n := cgroupCount(hostCgroupFile(t, ws.PID, "memory", "memory.oom_control"), "oom_kill"); n < 1 {
		t.Fatalf("no OOM kill in the workspace's memory cgroup (oom_kill %d); hog: %+v", n, hog)
	}
	waitExecOK(t, c, "bomb")
	if now := getWS(t, c, "bomb"); now.PID != ws.PID || now.Agent == nil || now.Agent.Status != "ready" {
		t.Fatalf("the agent did not survive the memory hog: %+v (before %+v)", now, ws)
	}
	canary.check(t)
	select {
	case <-b.done:
		t.Fatal("berth exited")
	default:
	}
}

// waitExecOK waits until a command runs again in bot: the processes a
// killed fork bomb leaves take a moment to be reaped.
func waitExecOK(t *testing.T, c mcpClient, bot string) {
	t.Helper()
	var last *toolResult
	for range 300 {
		last = mustCall(t, c, "exec", map[string]any{"bot_id": bot, "command": "echo alive", "timeout_seconds": 10})
		var out execOut
		if !last.IsError {
			_ = json.Unmarshal(last.Structured, &out)
			if strings.TrimSpace(out.Stdout) == "alive" {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the workspace does not run commands any more: %+v", last)
}

// TestHardeningLimitsAndDevicesRefused: requests past the operator's
// maximums are refused naming the maximum, omitted limits get the
// defaults, and a token without the admin scope gets only allowed devices.
func TestHardeningLimitsAndDevicesRefused(t *testing.T) {
	e := newEnv(t)
	spec := `cdiVersion: "0.6.0"
kind: "berth.test/device"
devices:
  - name: "null0"
    containerEdits:
      deviceNodes:
        - path: "/dev/berth-null0"
          hostPath: "/dev/null"
  - name: "null1"
    containerEdits:
      deviceNodes:
        - path: "/dev/berth-null1"
          hostPath: "/dev/null"
`
	if err := os.WriteFile(filepath.Join(e.cdiDir, "berth-test.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	scoped := "scoped-token-0123456789abcdef"
	if err := os.WriteFile(tokens, []byte("tokens:\n  - name: tenant\n    token: "+scoped+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := e.serveHTTP("--max-cpus", "1", "--max-memory", "256M", "--max-pids", "100",
		"--allowed-devices", "berth.test/device=null0", "--tokens-file", tokens)
	admin := e.httpSDK(b)
	tenant := e.httpSDK(&berthHTTP{URL: b.URL, Token: scoped})

	for _, tc := range []struct {
		args map[string]any
		want string
	}{
		{map[string]any{"cpus": 1e300}, "maximum of 1 that berth allows (--max-cpus)"},
		{map[string]any{"cpus": 2}, "--max-cpus"},
		{map[string]any{"memory": "1G"}, "maximum of 256.0 MiB that berth allows (--max-memory)"},
		{map[string]any{"pids": 101}, "maximum of 100 that berth allows (--max-pids)"},
		{map[string]any{"pids": -1}, "negative"},
	} {
		tc.args["bot_id"] = "over"
		res := mustCall(t, tenant, "workspace_create", tc.args)
		if !res.IsError || !strings.Contains(res.Text, tc.want) {
			t.Errorf("create %v: want an error naming %q, got %+v", tc.args, tc.want, res)
		}
	}

	mustCall(t, tenant, "workspace_create", map[string]any{"bot_id": "dflt", "devices": []string{"berth.test/device=null0"}}).decode(t, &createOut{})
	ws := getWS(t, tenant, "dflt")
	if ws.Limits.CPUs != 1 || ws.Limits.MemoryBytes != 256<<20 || ws.Limits.Pids != 100 {
		t.Fatalf("defaults capped at the maximums: got %+v", ws.Limits)
	}
	res := mustCall(t, tenant, "workspace_create", map[string]any{"bot_id": "dev1", "devices": []string{"berth.test/device=null1"}})
	if !res.IsError || !strings.Contains(res.Text, "berth.test/device=null1") || !strings.Contains(res.Text, "--allowed-devices") {
		t.Fatalf("a non-admin token got a device outside --allowed-devices: %+v", res)
	}
	mustCall(t, admin, "workspace_create", map[string]any{"bot_id": "dev1", "devices": []string{"berth.test/device=null1"}}).decode(t, &createOut{})
	if out := runIn(t, admin, "dev1", "test -c /dev/berth-null1 && echo yes", 30); strings.TrimSpace(out.Stdout) != "yes" {
		t.Fatalf("the admin's device is missing: %+v", out)
	}
}

// TestHardeningContainerdFrozen stops (SIGSTOP) a private containerd under
// berth: calls answer "containerd is not responding" instead of hanging,
// and work again once containerd continues.
func TestHardeningContainerdFrozen(t *testing.T) {
	e := newEnv(t)
	dir, err := os.MkdirTemp("/tmp", "bfrz")
	if err != nil {
		t.Fatal(err)
	}
	script, _ := filepath.Abs("../scripts/containerd.sh")
	if out, err := exec.Command(script, "up", dir).CombinedOutput(); err != nil {
		t.Fatalf("containerd.sh up: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(script, "down", dir).Run() })
	pidText, err := os.ReadFile(filepath.Join(dir, "containerd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		t.Fatal(err)
	}
	// Registered after down's cleanup, so it runs first: a stopped daemon
	// would not stop.
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	e.address = filepath.Join(dir, "containerd.sock")
	e.image = testenv.ImportArchive(t, e.address, e.namespace, testenv.BusyboxArchive(t))

	b := e.serveHTTP("--containerd-timeout", "2s")
	c := e.httpSDK(b)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "frz"}).decode(t, &createOut{})
	if res := mustCall(t, c, "fs_write", map[string]any{"bot_id": "frz", "path": "note.txt", "content": "kept"}); res.IsError {
		t.Fatalf("fs_write: %s", res.Text)
	}

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, pid)
	for _, call := range []struct {
		tool string
		args map[string]any
	}{
		{"workspace_get", map[string]any{"bot_id": "frz"}},
		{"workspace_list", map[string]any{}},
		{"snapshot_list", map[string]any{"bot_id": "frz"}},
		{"fs_read", map[string]any{"bot_id": "frz", "path": "note.txt"}},
		{"workspace_stop", map[string]any{"bot_id": "frz"}},
	} {
		// Far longer than the 2s deadline: a call that hangs fails here.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := c.call(ctx, call.tool, call.args, nil)
		cancel()
		if err != nil {
			t.Fatalf("%s with containerd frozen: no answer: %v", call.tool, err)
		}
		// fs_read may be served by the agent connection berth already
		// holds, without containerd: an answer is what counts, not a hang.
		if call.tool == "fs_read" && !res.IsError && strings.Contains(res.Text, "kept") {
			continue
		}
		if !res.IsError || !strings.Contains(res.Text, "containerd is not responding") {
			t.Fatalf("%s with containerd frozen: want a clear error, got %+v", call.tool, res)
		}
		t.Logf("%s with containerd frozen: %s", call.tool, res.Text)
	}

	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var last *toolResult
	for range 300 {
		if last = mustCall(t, c, "workspace_get", map[string]any{"bot_id": "frz"}); !last.IsError {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if last.IsError {
		t.Fatalf("berth did not recover after containerd continued: %s", last.Text)
	}
	// The frozen workspace_stop did nothing (its first call timed out), so
	// the workspace runs on; start it only if it does not.
	var ws wsOut
	last.decode(t, &ws)
	if ws.Status != "running" {
		mustCall(t, c, "workspace_start", map[string]any{"bot_id": "frz"}).decode(t, &ws)
	}
	res := mustCall(t, c, "fs_read", map[string]any{"bot_id": "frz", "path": "note.txt"})
	if res.IsError || !strings.Contains(res.Text+string(res.Structured), "kept") {
		t.Fatalf("fs_read after recovery: %+v", res)
	}
}

// waitStopped waits until every thread of pid has stopped: kill returns
// before a running thread takes the signal.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	for range 1000 {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := len(tasks) > 0
		for _, f := range tasks {
			stat, err := os.ReadFile(f)
			if err != nil {
				continue // an exited thread
			}
			if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) == 0 || (f[0] != "T" && f[0] != "t") {
				stopped = false
			}
		}
		if stopped {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("containerd (pid %d) did not stop", pid)
}
