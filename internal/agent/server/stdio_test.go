package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

func startStdio(t *testing.T, c *client.Client, stderr io.Writer, argv ...string) *client.StdioProcess {
	t.Helper()
	p, err := c.StartStdio(context.Background(), wire.StdioRequest{Argv: argv}, stderr)
	if err != nil {
		t.Fatalf("StartStdio(%q): %v", argv, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// awaitDone waits for p to end and returns its exit.
func awaitDone(t *testing.T, p *client.StdioProcess) (wire.StdioExit, error) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("stdio process did not end within 10s")
	}
	return p.Exit()
}

func TestStdioRoundTrip(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	p := startStdio(t, c, nil, "cat")
	if p.PID() <= 0 {
		t.Fatalf("pid %d", p.PID())
	}
	if _, err := p.Exit(); err == nil {
		t.Error("Exit of a running process returned no error")
	}
	br := bufio.NewReader(p)
	for i := range 3 {
		line := fmt.Sprintf("line %d\n", i)
		if _, err := io.WriteString(p, line); err != nil {
			t.Fatal(err)
		}
		got, err := br.ReadString('\n')
		if err != nil || got != line {
			t.Fatalf("read %q, %v; want %q", got, err, line)
		}
	}
	if err := p.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	if err := p.CloseStdin(); err != nil {
		t.Errorf("second CloseStdin: %v", err)
	}
	if _, err := p.Write([]byte("late")); err == nil || !strings.Contains(err.Error(), "stdin is closed") {
		t.Errorf("Write after CloseStdin: %v", err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("rest of stdout %q, %v; want end of file", rest, err)
	}
	ex, err := awaitDone(t, p)
	if err != nil || ex != (wire.StdioExit{}) {
		t.Errorf("exit %+v, %v; want code 0", ex, err)
	}
	waitFor(t, "cat to be reaped", 5*time.Second, func() bool { return procGone(p.PID()) })
}

func TestStdioStderrAndExitStatus(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	var stderr syncBuffer
	p := startStdio(t, c, &stderr, "sh", "-c", "echo out; echo err >&2; exit 7")
	out, err := io.ReadAll(p)
	if err != nil || string(out) != "out\n" {
		t.Errorf("stdout %q, %v", out, err)
	}
	ex, err := awaitDone(t, p)
	if err != nil || ex.ExitCode != 7 || ex.Signal != "" {
		t.Errorf("exit %+v, %v; want code 7", ex, err)
	}
	if got := stderr.String(); got != "err\n" {
		t.Errorf("stderr %q", got)
	}

	p = startStdio(t, c, nil, "sh", "-c", "kill -TERM $$")
	ex, err = awaitDone(t, p)
	if err != nil || ex.ExitCode != 128+15 || ex.Signal != "SIGTERM" {
		t.Errorf("killed: exit %+v, %v", ex, err)
	}
	if _, err := p.Write([]byte("x")); err == nil {
		t.Error("Write after the end succeeded")
	}
}

func TestStdioStartErrors(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	notExec := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"berth-no-such-program", "x"}, "program berth-no-such-program not found in PATH"},
		{[]string{"/nonexistent/prog"}, "/nonexistent/prog"},
		{[]string{notExec}, "permission denied"},
		{[]string{"cat", "a\x00b"}, "NUL"},
		{[]string{""}, "empty program name"},
	} {
		_, err := c.StartStdio(ctx, wire.StdioRequest{Argv: tc.argv}, nil)
		if remoteErrCode(t, err) != wire.CodeBadRequest || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want a bad request mentioning %q", tc.argv, err, tc.want)
		}
	}
	if _, err := c.StartStdio(ctx, wire.StdioRequest{}, nil); err == nil {
		t.Error("empty argv accepted")
	}
	// Without the upgrade the endpoint refuses, with an ordinary answer.
	var out struct{}
	err := c.Call(ctx, http.MethodPost, wire.PathStdio, wire.StdioRequest{Argv: []string{"cat"}}, &out)
	var re *client.RemoteError
	if !errors.As(err, &re) || re.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("without upgrade: %v", err)
	}
}

func TestStdioCloseKillsGroup(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	p := startStdio(t, c, nil, "sleep", "1000")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Exit(); err == nil {
		t.Error("Exit after Close returned no error")
	}
	if _, err := p.Read(make([]byte, 1)); err == nil {
		t.Error("Read after Close returned no error")
	}
	waitFor(t, "sleep to be killed", 5*time.Second, func() bool { return procGone(p.PID()) })

	// A group that ignores SIGTERM gets SIGKILL after the grace, members
	// included.
	p = startStdio(t, c, nil, "sh", "-c", `trap "" TERM; sleep 1000 & echo $!; wait`)
	line, err := bufio.NewReader(p).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	member := pidsFrom(t, []byte(line))[0]
	start := time.Now()
	_ = p.Close()
	for _, pid := range []int{p.PID(), member} {
		waitFor(t, "the process group to be killed", StdioKillGrace+5*time.Second, func() bool { return procGone(pid) })
	}
	if d := time.Since(start); d < StdioKillGrace/2 {
		t.Errorf("group that ignores SIGTERM gone after %s, before the grace", d)
	}
}

func TestStdioLargeTransfer(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	p := startStdio(t, c, nil, "cat")
	data := make([]byte, 1<<20+12345)
	_, _ = rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		// Odd sizes, some larger than a frame.
		rest := data
		for i := 0; len(rest) > 0; i++ {
			n := min(len(rest), []int{1, 1000, wire.StdioMaxFrame + 7, 200000}[i%4])
			if _, err := p.Write(rest[:n]); err != nil {
				werr <- err
				return
			}
			rest = rest[n:]
		}
		werr <- p.CloseStdin()
	}()
	got, err := io.ReadAll(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes back, want the %d written", len(got), len(data))
	}
	if ex, err := awaitDone(t, p); err != nil || ex.ExitCode != 0 {
		t.Errorf("exit %+v, %v", ex, err)
	}
}

// TestStdioBackpressure checks that a host that does not read stdout stops
// the process instead of making the agent buffer, and that the host's
// writes block while the process does not read its stdin.
func TestStdioBackpressure(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	const total = 8 << 20
	p := startStdio(t, c, nil, "cat")
	written := make(chan error, 1)
	go func() {
		_, err := p.Write(make([]byte, total))
		if err == nil {
			err = p.CloseStdin()
		}
		written <- err
	}()
	select {
	case err := <-written:
		t.Fatalf("writing %d bytes that nobody reads returned (%v); want it to block", total, err)
	case <-time.After(300 * time.Millisecond):
	}
	n, err := io.Copy(io.Discard, p)
	if err != nil || n != total {
		t.Fatalf("read %d bytes, %v; want %d", n, err, total)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}

	// Closing while a write is stuck on a process that never reads: the
	// agent notices the hangup anyway and kills it.
	p = startStdio(t, c, nil, "sleep", "1000")
	go func() {
		_, err := p.Write(make([]byte, total))
		written <- err
	}()
	time.Sleep(200 * time.Millisecond)
	_ = p.Close()
	if err := <-written; err == nil {
		t.Error("write to a closed stdio process succeeded")
	}
	waitFor(t, "sleep to be killed", 5*time.Second, func() bool { return procGone(p.PID()) })
}

func TestStdioMalformedFrames(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"unknown type", []byte{'z', 0, 0, 0, 1, 'a'}},
		{"oversized", binary.BigEndian.AppendUint32([]byte{wire.StdioFrameStdin}, wire.StdioMaxFrame+1)},
		{"close with payload", []byte{wire.StdioFrameCloseStdin, 0, 0, 0, 1, 'a'}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(`{"argv":["sleep","1000"]}`)
			var pid int
			conn, br := rawUpgrade(t, c.SocketPath(), http.MethodPost, wire.PathStdio, body, wire.StdioUpgrade)
			defer conn.Close()
			typ, payload, err := wire.ReadStdioFrame(br, make([]byte, wire.StdioMaxFrame))
			if err != nil || typ != wire.StdioFrameStarted {
				t.Fatalf("first frame %q: %v", typ, err)
			}
			if _, err := fmt.Sscanf(string(payload), `{"pid":%d}`, &pid); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			// The agent closes the connection without an exit frame.
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Errorf("after a bad frame: read %q, %v; want the connection closed", rest, err)
			}
			waitFor(t, "sleep to be killed", 5*time.Second, func() bool { return procGone(pid) })
		})
	}
}

func TestStdioLimit(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	procs := make([]*client.StdioProcess, 0, MaxStdioProcesses)
	for range MaxStdioProcesses {
		procs = append(procs, startStdio(t, c, nil, "sleep", "1000"))
	}
	_, err := c.StartStdio(ctx, wire.StdioRequest{Argv: []string{"sleep", "1000"}}, nil)
	if remoteErrCode(t, err) != wire.CodeLimit {
		t.Fatalf("stdio process %d: %v", MaxStdioProcesses+1, err)
	}
	_ = procs[0].Close()
	// The slot is free once the agent has seen the process die.
	waitFor(t, "a free slot", 10*time.Second, func() bool {
		p, err := c.StartStdio(ctx, wire.StdioRequest{Argv: []string{"sleep", "1000"}}, nil)
		if err != nil {
			return false
		}
		_ = p.Close()
		return true
	})
	for _, p := range procs {
		_ = p.Close()
	}
	for _, p := range procs {
		waitFor(t, "the stdio processes to be killed", 10*time.Second, func() bool { return procGone(p.PID()) })
	}
}

// TestStdioAgentSIGTERM stops an agent with a stdio process running: the
// process gets the forwarded SIGTERM, the host its exit, and the agent
// exits once it is gone.
func TestStdioAgentSIGTERM(t *testing.T) {
	dir, err := os.MkdirTemp("", "bt")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, wire.SocketName)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{
			SocketPath: sock, Subreaper: true, DataDir: filepath.Join(dir, "data"),
			Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
	}()
	if _, err := client.WaitReady(context.Background(), sock, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c := client.New(sock)
	defer c.Close()
	p := startStdio(t, c, nil, "sleep", "1000")
	if err := unix.Kill(os.Getpid(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		_ = unix.Kill(p.PID(), unix.SIGKILL)
		t.Fatal("agent did not stop within 10s of SIGTERM with a stdio process running")
	}
	if !procGone(p.PID()) {
		t.Errorf("stdio process %d still exists", p.PID())
	}
	ex, err := awaitDone(t, p)
	t.Logf("exit %+v, %v", ex, err)
	if err == nil && (ex.ExitCode != 128+15 || ex.Signal != "SIGTERM") {
		t.Errorf("exit %+v; want SIGTERM", ex)
	}
}

// rawUpgrade sends an upgrade request by hand, to send the agent what the
// client never would, and returns the connection after the 101 answer with
// the reader that may already hold what the agent sent next.
func rawUpgrade(t *testing.T, sock, method, path string, body []byte, protocol string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req, err := http.NewRequest(method, "http://berth-agent"+path, bytes.NewReader(body))
	if err != nil {
		_ = conn.Close()
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", protocol)
	br := bufio.NewReader(conn)
	if err := req.Write(conn); err != nil {
		_ = conn.Close()
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		_ = conn.Close()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = conn.Close()
		t.Fatalf("upgrade answered %s", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br
}
