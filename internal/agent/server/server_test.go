package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// startServer runs an agent inside the test process, made a child subreaper
// so that orphans of the processes a test starts come back to it. Cleanup
// stops it and checks that it shut down cleanly.
func startServer(t *testing.T) (*server, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), wire.SocketName)
	s, err := newServer(Options{
		SocketPath:   sock,
		BerthVersion: "test-1.2.3",
		Subreaper:    true,
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancel")
		}
	})
	if _, err := client.WaitReady(context.Background(), sock, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return s, sock
}

func isSubreaper(t *testing.T) bool {
	t.Helper()
	v := new(int32)
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(v)), 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	return *v != 0
}

func TestHealth(t *testing.T) {
	before := time.Now()
	_, sock := startServer(t)
	c := client.New(sock)
	defer c.Close()
	h, err := c.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h.ProtocolVersion != wire.ProtocolVersion || h.BerthVersion != "test-1.2.3" || h.PID != os.Getpid() {
		t.Errorf("health = %+v", h)
	}
	if h.StartedAt.Before(before.Add(-time.Second)) || h.StartedAt.After(time.Now()) {
		t.Errorf("started_at %v not within the test", h.StartedAt)
	}
	// Other tests' processes may still be ending, so only the range is
	// checked here; the counting itself is tested with real children.
	if h.Children < 0 {
		t.Errorf("children = %d: /proc was not readable", h.Children)
	}

	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want socket 0600", fi.Mode())
	}
	if !isSubreaper(t) {
		t.Error("test process is not a child subreaper while the agent runs")
	}
}

func TestErrorsAreJSON(t *testing.T) {
	_, sock := startServer(t)
	c := client.New(sock)
	defer c.Close()
	ctx := context.Background()

	var out struct{}
	err := c.Call(ctx, http.MethodGet, "/v1/nope", nil, &out)
	var re *client.RemoteError
	if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound || re.Code != wire.CodeNotFound {
		t.Errorf("unknown path: err = %v, want RemoteError 404 %s", err, wire.CodeNotFound)
	}
	err = c.Call(ctx, http.MethodPost, wire.PathHealth, nil, &out)
	if !errors.As(err, &re) || re.StatusCode != http.StatusMethodNotAllowed || re.Code != wire.CodeMethodNotAllowed {
		t.Errorf("POST health: err = %v, want RemoteError 405 %s", err, wire.CodeMethodNotAllowed)
	}

	// The header must be on every response; check one raw.
	req, _ := http.NewRequest(http.MethodDelete, "http://berth-agent"+wire.PathHealth, nil)
	raw := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := raw.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get(wire.ProtocolHeader); got != strconv.Itoa(wire.ProtocolVersion) {
		t.Errorf("%s = %q on an error response", wire.ProtocolHeader, got)
	}
	if got := resp.Header.Get("Allow"); !strings.Contains(got, http.MethodGet) {
		t.Errorf("Allow = %q", got)
	}
}

func TestRunStopsOnContextAndCleansUp(t *testing.T) {
	sock := filepath.Join(t.TempDir(), wire.SocketName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{SocketPath: sock, Subreaper: true, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	}()
	if _, err := client.WaitReady(context.Background(), sock, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if isSubreaper(t) {
		t.Error("Run left the test process a child subreaper")
	}
}

func TestReapsOrphans(t *testing.T) {
	s, sock := startServer(t)
	ctx := context.Background()

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The shell exits at once and leaves its background sleep to be
	// reparented to us, the subreaper.
	cmd := exec.Command("/bin/sh", "-c", "sleep 0.5 & echo $!; exit 3")
	cmd.Stdout = w
	ch, err := s.reaper.startCmd(cmd)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}

	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := ch.Wait(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Exited() || st.ExitStatus() != 3 {
		t.Fatalf("shell status = %s, want exited 3", describeStatus(st))
	}

	if p, ok := procStat(orphan); ok && p.live() && p.ppid != os.Getpid() {
		t.Fatalf("orphan %d has parent %d, want the subreaper %d", orphan, p.ppid, os.Getpid())
	}
	waitFor(t, "the orphan to be reaped", 5*time.Second, func() bool {
		_, ok := procStat(orphan)
		return !ok
	})
	procs, err := readProcs("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.ppid == os.Getpid() && !p.live() {
			t.Errorf("zombie child %d left behind", p.pid)
		}
	}
	h, err := client.New(sock).Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Reaped < 2 {
		t.Errorf("reaped = %d, want at least 2 (the shell and its orphan)", h.Reaped)
	}
}

func procStat(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	p, err := parseStat(b)
	return p, err == nil
}

// TestReaperDeliversStatus starts children that exit at once, so the reaper
// often collects them before start returns: registration must still win.
func TestReaperDeliversStatus(t *testing.T) {
	s, _ := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 30 {
		ch, err := s.reaper.startCmd(exec.Command("/bin/sh", "-c", "exit "+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		st, err := ch.Wait(ctx)
		if err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		if !st.Exited() || st.ExitStatus() != i {
			t.Fatalf("child %d: status %s, want exited %d", i, describeStatus(st), i)
		}
	}

	ch, err := s.reaper.startCmd(exec.Command("sleep", "10"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st, err := ch.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Signaled() || st.Signal() != unix.SIGKILL {
		t.Fatalf("status %s, want killed by SIGKILL", describeStatus(st))
	}
	if err := ch.Signal(unix.SIGKILL); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after exit = %v, want os.ErrProcessDone", err)
	}

	// An exec failure is reported by Start; the Go runtime waits for that
	// child itself, which must not deadlock or confuse the reaper.
	if _, err := s.reaper.startCmd(exec.Command("/nonexistent/berth-test")); err == nil {
		t.Error("starting a missing binary succeeded")
	}
}

func TestReaperRefusesCmdsItCannotFinish(t *testing.T) {
	r := newReaper(slog.New(slog.DiscardHandler))
	cmd := exec.Command("true")
	cmd.Stdout = &bytes.Buffer{}
	if _, err := r.startCmd(cmd); err == nil {
		t.Error("accepted a non-file Stdout")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := r.startCmd(exec.CommandContext(ctx, "true")); err == nil {
		t.Error("accepted a CommandContext command")
	}
}

func TestStaleSocket(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.DiscardHandler)

	// A socket left by a dead agent is replaced.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{SocketPath: stale, Logger: quiet}) }()
	if _, err := client.WaitReady(context.Background(), stale, 5*time.Second); err != nil {
		t.Fatalf("agent did not take over a stale socket: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A live listener is not stolen.
	live := filepath.Join(dir, "live.sock")
	ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: live, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Run(context.Background(), Options{SocketPath: live, Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Errorf("Run on a live socket = %v, want an 'already listening' error", err)
	}

	// Nor is a file that is not a socket.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), Options{SocketPath: file, Logger: quiet}); err == nil {
		t.Error("Run replaced a regular file")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("regular file was changed")
	}

	long := filepath.Join(dir, strings.Repeat("x", 120), wire.SocketName)
	if err := Run(context.Background(), Options{SocketPath: long, Logger: quiet}); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("Run with a %d-byte path = %v, want a length error", len(long), err)
	}
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want procInfo
		ok   bool
	}{
		{"42 (sh) S 1 42 42 0 -1", procInfo{42, 1, 'S'}, true},
		{"7 (a) (b) Z) Z 3 7", procInfo{7, 3, 'Z'}, true},
		{"9 (with space) R 8", procInfo{9, 8, 'R'}, true},
		{"9 (x)", procInfo{}, false},
		{"(x) S 1", procInfo{}, false},
		{"", procInfo{}, false},
	} {
		got, err := parseStat([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestLiveDescendants(t *testing.T) {
	procs := []procInfo{
		{1, 0, 'S'}, {10, 1, 'S'}, {11, 10, 'S'}, {12, 11, 'Z'}, {13, 11, 'R'},
		{20, 1, 'S'}, {30, 31, 'S'}, {31, 30, 'S'}, // a cycle from pid reuse
	}
	got := liveDescendants(procs, 10)
	want := []int{11, 13}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("liveDescendants = %v, want %v", got, want)
	}
	if got := liveDescendants(procs, 30); len(got) != 1 || got[0] != 31 {
		t.Errorf("liveDescendants in a cycle = %v, want [31]", got)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("42 (sh) S 1 42 42 0 -1"))
	f.Add([]byte("7 (a) (b) Z) Z 3 7"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseStat(b)
		if err == nil && p.state == 0 {
			t.Errorf("parsed %q without a state", b)
		}
	})
}

// TestSIGTERMWithNoChildren covers an idle workspace being stopped: the
// agent forwards to nobody, finds nothing to wait for and returns at once.
func TestSIGTERMWithNoChildren(t *testing.T) {
	sock := filepath.Join(t.TempDir(), wire.SocketName)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{SocketPath: sock, Subreaper: true, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	}()
	// Once the agent answers it is watching SIGTERM, so this signal goes
	// to it rather than killing the test binary.
	if _, err := client.WaitReady(context.Background(), sock, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(os.Getpid(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after SIGTERM")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}
