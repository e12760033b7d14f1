package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// The test binary doubles as a standalone agent so that tests can send it
// real signals and run it as PID 1 of a new PID namespace, which an agent
// inside the test process cannot be.
const (
	helperEnv       = "BERTH_AGENT_TEST_HELPER"
	helperSocketEnv = "BERTH_AGENT_TEST_SOCKET"
	helperProcEnv   = "BERTH_AGENT_TEST_MOUNT_PROC"
)

// workloadScript plays the container's workload: it records the signals it
// gets, leaves an orphan behind for the agent to reap, and runs until
// SIGTERM. MARK and READY name files in the test's temp dir.
const workloadScript = `
trap 'echo usr1 >> "$MARK"' USR1
trap 'echo term >> "$MARK"; exit 0' TERM
( sleep 0.05 & )
echo $$ > "$READY.tmp" && mv "$READY.tmp" "$READY"
while :; do sleep 0.05; done
`

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

func helperMain() int {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if os.Getenv(helperProcEnv) == "1" {
		// A new PID namespace still sees the host's /proc until it mounts
		// its own; the test made the mount namespace private.
		if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			fmt.Fprintln(os.Stderr, "helper: mount /proc:", err)
			return 2
		}
	}
	// In a container the agent is init from the first instant. Here the
	// workload starts before Run, so become a subreaper first, or its
	// orphan could escape to the test's ancestors.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "helper: subreaper:", err)
		return 2
	}
	// Started without the reaper on purpose: the agent must also collect
	// processes it did not start, as it does for a container's workload.
	cmd := exec.Command("/bin/sh", "-c", workloadScript)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "helper: start workload:", err)
		return 2
	}
	err := Run(context.Background(), Options{
		SocketPath:   os.Getenv(helperSocketEnv),
		BerthVersion: "helper",
		Logger:       logger,
		Subreaper:    true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: agent:", err)
		return 1
	}
	return 0
}

// syncBuffer collects a helper's stderr for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHelperAgentForwardsSignalsAndExits(t *testing.T) {
	runHelperScenario(t, false)
}

// TestHelperAgentAsPID1 runs the agent as init of a fresh PID namespace, the
// way it runs in a container: kill(-1) forwarding, orphans reparented to
// PID 1, children counted from the namespace's /proc.
func TestHelperAgentAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a PID namespace")
	}
	runHelperScenario(t, true)
}

func runHelperScenario(t *testing.T, asInit bool) {
	dir := t.TempDir()
	sock := filepath.Join(dir, wire.SocketName)
	mark := filepath.Join(dir, "mark")
	ready := filepath.Join(dir, "ready")

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		helperEnv+"=1", helperSocketEnv+"="+sock, "MARK="+mark, "READY="+ready)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	// The workload inherits the helper's stderr; if a failed test leaves it
	// running, Wait must not hang on the pipe.
	cmd.WaitDelay = 2 * time.Second
	// Its own process group, so cleanup can kill the workload with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if asInit {
		cmd.Env = append(cmd.Env, helperProcEnv+"=1")
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID
		cmd.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS
	}
	if err := cmd.Start(); err != nil {
		if asInit && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL)) {
			t.Skipf("cannot create namespaces here: %v", err)
		}
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nhelper stderr:\n%s", append(args, stderr.String())...)
	}

	ctx := context.Background()
	h, err := client.WaitReady(ctx, sock, 10*time.Second)
	if err != nil {
		fail("WaitReady: %v", err)
	}
	wantPID := cmd.Process.Pid
	if asInit {
		wantPID = 1
	}
	if h.PID != wantPID {
		fail("health pid = %d, want %d", h.PID, wantPID)
	}
	waitFor(t, "the workload to start", 5*time.Second, func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})
	b, err := os.ReadFile(ready)
	if err != nil {
		t.Fatal(err)
	}
	shellPID, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("ready file %q: %v", b, err)
	}

	// The workload's "( sleep & )" orphan is reparented to the agent, which
	// must reap it.
	c := client.New(sock)
	defer c.Close()
	waitFor(t, "the agent to reap the orphan", 5*time.Second, func() bool {
		h, err = c.Health(ctx)
		return err == nil && h.Reaped >= 1
	})
	if h.Children < 1 {
		fail("health children = %d, want the workload's shell at least", h.Children)
	}

	readMark := func() string {
		b, _ := os.ReadFile(mark)
		return string(b)
	}
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SIGUSR1 to reach the workload", 5*time.Second, func() bool {
		return strings.Contains(readMark(), "usr1")
	})
	if _, err := c.Health(ctx); err != nil {
		fail("agent stopped answering after SIGUSR1: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			fail("agent exited with %v after SIGTERM, want status 0", waitErr)
		}
	case <-time.After(10 * time.Second):
		fail("agent did not exit within 10s of SIGTERM")
	}
	if !strings.Contains(readMark(), "term") {
		fail("workload never saw SIGTERM; mark file: %q", readMark())
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		fail("socket still present after shutdown: %v", err)
	}
	if !asInit {
		// The agent waited for the workload before exiting, so the shell
		// must be gone, not left behind as a zombie or a live process.
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", shellPID)); !errors.Is(err, fs.ErrNotExist) {
			fail("workload shell %d still exists after the agent exited", shellPID)
		}
	}
}
