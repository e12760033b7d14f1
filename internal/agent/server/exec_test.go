package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
)

// startProcAgent runs an agent in the test process with opts (socket, subreaper
// and, unless set, a fresh missing data directory filled in) and returns it
// with a client. Cleanup kills what the test left running, then stops the
// agent.
func startProcAgent(t *testing.T, opts Options) (*server, *client.Client) {
	t.Helper()
	// Short, so the socket path fits in sun_path whatever the test's name.
	dir, err := os.MkdirTemp("", "bt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	opts.SocketPath = filepath.Join(dir, wire.SocketName)
	opts.Subreaper = true
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(t.TempDir(), "data")
	}
	s, err := newServer(opts)
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
				t.Errorf("Run returned %v after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancel")
		}
	})
	if _, err := client.WaitReady(context.Background(), opts.SocketPath, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c := client.New(opts.SocketPath)
	t.Cleanup(func() {
		defer c.Close()
		ctx := context.Background()
		if ps, err := c.Processes(ctx); err == nil {
			for _, p := range ps {
				if p.Running {
					_ = c.SignalProcess(ctx, p.ID, "KILL")
				}
			}
		}
		if ts, err := c.Terminals(ctx); err == nil {
			for _, term := range ts {
				_ = c.CloseTerminal(ctx, term.ID)
			}
		}
	})
	return s, c
}

// runExec runs a command in the foreground and fails the test on errors.
func runExec(t *testing.T, c *client.Client, req wire.ExecRequest) wire.ExecResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.Exec(ctx, req, nil)
	if err != nil {
		t.Fatalf("Exec(%+v): %v", req, err)
	}
	return res
}

func shellReq(command string) wire.ExecRequest { return wire.ExecRequest{Command: command} }

// remoteErrCode returns the code of a *RemoteError, failing if err is another
// kind of error.
func remoteErrCode(t *testing.T, err error) string {
	t.Helper()
	var re *client.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v (%T), want a *RemoteError", err, err)
	}
	return re.Code
}

// procGone reports whether pid no longer exists (reaped, not a zombie).
// procGone reports whether pid has ended: its /proc entry is gone, or it is
// a zombie waiting for whichever subreaper of the test process adopts it.
func procGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	p, perr := parseStat(b)
	return err == nil && perr == nil && !p.live()
}

func pidsFrom(t *testing.T, out []byte) []int {
	t.Helper()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
		pids = append(pids, pid)
	}
	return pids
}

func TestExecExitCodes(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	notExec := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		req    wire.ExecRequest
		code   int
		signal string
		stderr string
	}{
		{"zero", wire.ExecRequest{Argv: []string{"true"}}, 0, "", ""},
		{"exit status", shellReq("exit 3"), 3, "", ""},
		{"killed", shellReq("kill -KILL $$"), 128 + 9, "SIGKILL", ""},
		{"terminated", shellReq("kill -TERM $$"), 128 + 15, "SIGTERM", ""},
		{"not in PATH", wire.ExecRequest{Argv: []string{"berth-no-such-command"}}, 127, "", "command not found"},
		{"missing path", wire.ExecRequest{Argv: []string{"/nonexistent/berth"}}, 127, "", "no such file"},
		{"not executable", wire.ExecRequest{Argv: []string{notExec}}, 126, "", "permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runExec(t, c, tc.req)
			if res.ExitCode != tc.code || res.Signal != tc.signal {
				t.Errorf("exit %d signal %q, want %d %q (stderr %q)", res.ExitCode, res.Signal, tc.code, tc.signal, res.Stderr)
			}
			if !strings.Contains(string(res.Stderr), tc.stderr) {
				t.Errorf("stderr %q lacks %q", res.Stderr, tc.stderr)
			}
			if res.TimedOut {
				t.Error("timed out")
			}
		})
	}
}

func TestExecStreamsAndCaps(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	res := runExec(t, c, shellReq("echo out; echo err >&2; echo more"))
	if string(res.Stdout) != "out\nmore\n" || string(res.Stderr) != "err\n" {
		t.Errorf("stdout %q stderr %q", res.Stdout, res.Stderr)
	}
	if res.StdoutTotal != 9 || res.StderrTotal != 4 || res.StdoutTruncated || res.StderrTruncated {
		t.Errorf("totals %d %d truncated %v %v", res.StdoutTotal, res.StderrTotal, res.StdoutTruncated, res.StderrTruncated)
	}
	if res.PID <= 0 {
		t.Errorf("pid %d", res.PID)
	}

	req := shellReq("head -c 300000 /dev/zero | tr '\\0' a; head -c 5000 /dev/zero | tr '\\0' b >&2")
	req.MaxOutput = 1000
	res = runExec(t, c, req)
	if !bytes.Equal(res.Stdout, bytes.Repeat([]byte("a"), 1000)) || !bytes.Equal(res.Stderr, bytes.Repeat([]byte("b"), 1000)) {
		t.Errorf("capped output: %d bytes of stdout, %d of stderr", len(res.Stdout), len(res.Stderr))
	}
	if res.StdoutTotal != 300000 || res.StderrTotal != 5000 || !res.StdoutTruncated || !res.StderrTruncated {
		t.Errorf("totals %d %d truncated %v %v", res.StdoutTotal, res.StderrTotal, res.StdoutTruncated, res.StderrTruncated)
	}
}

// TestExecStreamsBeforeEnd makes the command wait for a file that the test
// creates only once it has seen the command's first output: if output were
// not streamed while the command runs, the command would run into its
// timeout.
func TestExecStreamsBeforeEnd(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	flag := filepath.Join(t.TempDir(), "go-on")
	req := shellReq(`echo first; echo warn >&2; while [ ! -e "$FLAG" ]; do sleep 0.02; done; echo second`)
	req.Env = map[string]string{"FLAG": flag}
	req.TimeoutMillis = 10000
	var mu sync.Mutex
	var events []string
	res, err := c.Exec(context.Background(), req, func(stream string, data []byte) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, stream+":"+string(data))
		if strings.Contains(string(data), "first") {
			if err := os.WriteFile(flag, nil, 0o600); err != nil {
				t.Error(err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.TimedOut || res.ExitCode != 0 {
		t.Fatalf("result %+v: the first output was not streamed before the end", res)
	}
	if string(res.Stdout) != "first\nsecond\n" {
		t.Errorf("stdout %q", res.Stdout)
	}
	mu.Lock()
	defer mu.Unlock()
	joined := strings.Join(events, "|")
	for _, want := range []string{"stdout:first\n", "stderr:warn\n", "stdout:second\n"} {
		if !strings.Contains(joined, want) {
			t.Errorf("events %q lack %q", joined, want)
		}
	}
}

func TestExecTimeoutKillsGroup(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	for _, tc := range []struct {
		name, command, signal string
	}{
		// The shell ignores SIGTERM, so the group gets SIGKILL while the
		// shell still leads it.
		{"leader ignores TERM", `trap "" TERM; sleep 30 & echo $!; wait`, "SIGKILL"},
		// The shell dies of SIGTERM, but its child ignores it and must be
		// killed after the leader is gone.
		{"grandchild ignores TERM", `(trap "" TERM; exec sleep 30) & echo $!; wait`, "SIGTERM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := shellReq(tc.command)
			req.TimeoutMillis = 300
			res := runExec(t, c, req)
			if !res.TimedOut || res.Signal != tc.signal || res.ExitCode != 128+map[string]int{"SIGKILL": 9, "SIGTERM": 15}[tc.signal] {
				t.Errorf("result: timed out %v, exit %d, signal %q; want a timeout with %s", res.TimedOut, res.ExitCode, res.Signal, tc.signal)
			}
			pids := pidsFrom(t, res.Stdout)
			if len(pids) != 1 {
				t.Fatalf("stdout %q", res.Stdout)
			}
			waitFor(t, "the grandchild to be killed and reaped", 5*time.Second, func() bool { return procGone(pids[0]) })
		})
	}
}

func TestExecCancelKillsGroup(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var out []byte
	_, err := c.Exec(ctx, shellReq(`echo $$; sleep 30 & echo $!; wait`), func(stream string, data []byte) {
		mu.Lock()
		defer mu.Unlock()
		out = append(out, data...)
		if bytes.Count(out, []byte("\n")) >= 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	mu.Lock()
	pids := pidsFrom(t, out)
	mu.Unlock()
	if len(pids) != 2 {
		t.Fatalf("output %q", out)
	}
	for _, pid := range pids {
		waitFor(t, fmt.Sprintf("pid %d to be killed and reaped", pid), 5*time.Second, func() bool { return procGone(pid) })
	}
}

// TestExecLeavesBackgroundJobs checks that a command that starts a job in
// the background and exits is not waited for until the job ends, and that
// the job survives.
func TestExecLeavesBackgroundJobs(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	res := runExec(t, c, shellReq("sleep 30 & echo $!"))
	pids := pidsFrom(t, res.Stdout)
	if res.ExitCode != 0 || len(pids) != 1 {
		t.Fatalf("result %+v", res)
	}
	defer syscall.Kill(pids[0], syscall.SIGKILL)
	if procGone(pids[0]) {
		t.Error("the background job was killed with its command")
	}
}

func TestExecCwdEnvStdin(t *testing.T) {
	s, c := startProcAgent(t, Options{})
	data := s.opts.DataDir
	if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("data dir exists before the first command: %v", err)
	}
	if res := runExec(t, c, wire.ExecRequest{Argv: []string{"pwd"}}); string(res.Stdout) != data+"\n" {
		t.Errorf("default cwd %q, want %s", res.Stdout, data)
	}
	if res := runExec(t, c, wire.ExecRequest{Argv: []string{"pwd"}, Cwd: "a/b"}); string(res.Stdout) != data+"/a/b\n" {
		t.Errorf("relative cwd %q", res.Stdout)
	}
	abs := t.TempDir()
	if res := runExec(t, c, wire.ExecRequest{Argv: []string{"pwd"}, Cwd: abs}); string(res.Stdout) != abs+"\n" {
		t.Errorf("absolute cwd %q", res.Stdout)
	}

	file := filepath.Join(abs, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, cwd := range []string{file, "/proc/berth-cannot-create"} {
		_, err := c.Exec(ctx, wire.ExecRequest{Argv: []string{"pwd"}, Cwd: cwd}, nil)
		if code := remoteErrCode(t, err); code != wire.CodeBadRequest {
			t.Errorf("cwd %s: code %q, want %s", cwd, code, wire.CodeBadRequest)
		}
	}

	res := runExec(t, c, wire.ExecRequest{
		Command: `printf '%s|%s|%s' "$GREETING" "$HOME" "$PATH"`,
		Env:     map[string]string{"GREETING": "hello world", "PATH": "/usr/bin:/bin"},
	})
	if got := string(res.Stdout); got != "hello world|/root|/usr/bin:/bin" {
		t.Errorf("env: %q", got)
	}
	res = runExec(t, c, wire.ExecRequest{Argv: []string{"tr", "a-z", "A-Z"}, Stdin: []byte("shout\n")})
	if string(res.Stdout) != "SHOUT\n" {
		t.Errorf("stdin: %q", res.Stdout)
	}
	// A command that never reads a large stdin must still finish.
	res = runExec(t, c, wire.ExecRequest{Argv: []string{"true"}, Stdin: bytes.Repeat([]byte("x"), 1<<20)})
	if res.ExitCode != 0 {
		t.Errorf("unread stdin: %+v", res)
	}
}

func TestExecBadRequests(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  wire.ExecRequest
		code string
	}{
		{"argv and command", wire.ExecRequest{Argv: []string{"true"}, Command: "true"}, wire.CodeBadRequest},
		{"neither", wire.ExecRequest{}, wire.CodeBadRequest},
		{"empty program", wire.ExecRequest{Argv: []string{""}}, wire.CodeBadRequest},
		{"NUL in argv", wire.ExecRequest{Argv: []string{"echo", "a\x00b"}}, wire.CodeBadRequest},
		{"NUL in command", wire.ExecRequest{Command: "echo a\x00b"}, wire.CodeBadRequest},
		{"NUL in env", wire.ExecRequest{Argv: []string{"true"}, Env: map[string]string{"A": "x\x00"}}, wire.CodeBadRequest},
		{"bad env name", wire.ExecRequest{Argv: []string{"true"}, Env: map[string]string{"A=B": "x"}}, wire.CodeBadRequest},
		{"empty env name", wire.ExecRequest{Argv: []string{"true"}, Env: map[string]string{"": "x"}}, wire.CodeBadRequest},
		{"NUL in cwd", wire.ExecRequest{Argv: []string{"true"}, Cwd: "a\x00b"}, wire.CodeBadRequest},
		{"negative timeout", wire.ExecRequest{Argv: []string{"true"}, TimeoutMillis: -1}, wire.CodeBadRequest},
		{"negative max output", wire.ExecRequest{Argv: []string{"true"}, MaxOutput: -1}, wire.CodeBadRequest},
		{"stdin too large", wire.ExecRequest{Argv: []string{"true"}, Stdin: make([]byte, MaxExecStdin+1)}, wire.CodeTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Exec(ctx, tc.req, nil)
			if code := remoteErrCode(t, err); code != tc.code {
				t.Errorf("code %q, want %q (%v)", code, tc.code, err)
			}
		})
	}
	// Fields this agent does not know are refused, not ignored.
	var out struct{}
	err := c.Call(ctx, http.MethodPost, wire.PathExec, map[string]any{"argv": []string{"true"}, "sudo": true}, &out)
	if code := remoteErrCode(t, err); code != wire.CodeBadRequest {
		t.Errorf("unknown field: code %q", code)
	}
}

// TestExecAsUser runs commands and a terminal as nobody.
func TestExecAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	// t.TempDir is private to root; nobody must be able to reach the data
	// directory.
	parent, err := os.MkdirTemp("", "btu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(parent, "data")
	_, c := startProcAgent(t, Options{DataDir: data, User: &Credential{UID: 65534, GID: 65534}})
	res := runExec(t, c, shellReq(`id -u; id -g; id -G; echo "$HOME"`))
	lines := strings.Split(strings.TrimSpace(string(res.Stdout)), "\n")
	if len(lines) != 4 || lines[0] != "65534" || lines[1] != "65534" || lines[2] != "65534" {
		t.Errorf("ids %q (stderr %q), want 65534 without root's groups", res.Stdout, res.Stderr)
	}
	if len(lines) == 4 && (lines[3] == "/root" || lines[3] == "") {
		t.Errorf("HOME %q for nobody", lines[3])
	}
	// The data directory and the directories a cwd needs are created for
	// the user; what existed before keeps its owner.
	for _, cwd := range []string{"sub", filepath.Join(parent, "other", "deeper")} {
		if res := runExec(t, c, wire.ExecRequest{Argv: []string{"pwd"}, Cwd: cwd}); res.ExitCode != 0 {
			t.Fatalf("pwd as nobody in %s: %+v", cwd, res)
		}
	}
	for _, dir := range []string{data, filepath.Join(data, "sub"), filepath.Join(parent, "other"), filepath.Join(parent, "other", "deeper")} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s owned by %d:%d, want 65534:65534", dir, st.Uid, st.Gid)
		}
	}
	if fi, err := os.Stat(parent); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the existing parent changed owner: %v", err)
	}

	term, err := c.OpenTerminal(context.Background(), wire.TerminalRequest{Shell: "/bin/sh"})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.SendTerminal(context.Background(), term.ID, wire.TerminalInput{Data: []byte("echo uid=$(id -u)\n"), WaitPattern: `uid=\d+`})
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Matched || !strings.Contains(string(ch.Data), "uid=65534") {
		t.Errorf("terminal output %q", ch.Data)
	}
}
