package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
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

// openSh opens a terminal running sh with a fixed prompt, which is easier
// to match than bash's.
func openSh(t *testing.T, c *client.Client, req wire.TerminalRequest) wire.TerminalInfo {
	t.Helper()
	if req.Shell == "" {
		req.Shell = "/bin/sh"
	}
	if req.Env == nil {
		req.Env = map[string]string{"PS1": "$ "}
	}
	info, err := c.OpenTerminal(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func sendTerm(t *testing.T, c *client.Client, id string, in wire.TerminalInput) wire.OutputChunk {
	t.Helper()
	ch, err := c.SendTerminal(context.Background(), id, in)
	if err != nil {
		t.Fatalf("SendTerminal(%q): %v", in.Data, err)
	}
	return ch
}

func TestTerminalInputAndWaits(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	term := openSh(t, c, wire.TerminalRequest{})
	if !term.Running || term.Rows != DefaultTerminalRows || term.Cols != DefaultTerminalCols || term.Shell != "/bin/sh" || term.PID <= 0 {
		t.Fatalf("opened %+v", term)
	}

	// The input is echoed, and the pattern matches the answer, which the
	// echo of the input does not contain. (The echo comes first: the
	// terminal echoes before the shell has even printed its prompt.)
	ch := sendTerm(t, c, term.ID, wire.TerminalInput{Data: []byte("echo $((6*7))\n"), WaitPattern: `\b42\r\n`})
	if !ch.Matched || ch.TimedOut || ch.Settled {
		t.Errorf("flags matched %v timed out %v settled %v; output %q", ch.Matched, ch.TimedOut, ch.Settled, ch.Data)
	}
	if out := string(ch.Data); !strings.Contains(out, "echo $((6*7))") || !strings.Contains(out, "42") {
		t.Errorf("output %q lacks the echo or the answer", out)
	}
	if ch.Terminal == nil || !ch.Terminal.Running || ch.Terminal.OutputTotal < ch.NextOffset {
		t.Errorf("terminal in chunk: %+v", ch.Terminal)
	}
	firstEnd := ch.NextOffset

	ch = sendTerm(t, c, term.ID, wire.TerminalInput{Data: []byte("printf 'a\\nb\\n'; sleep 0.1; echo c\n"), WaitSettleMillis: 400})
	if !ch.Settled || !strings.Contains(string(ch.Data), "a\r\nb\r\n") || !strings.Contains(string(ch.Data), "c\r\n") {
		t.Errorf("settle: settled %v, output %q", ch.Settled, ch.Data)
	}
	if ch.Offset < firstEnd {
		t.Errorf("output of the second input starts at %d, before the end of the first (%d)", ch.Offset, firstEnd)
	}

	ch = sendTerm(t, c, term.ID, wire.TerminalInput{Data: []byte("true\n"), WaitPattern: "never-printed", WaitTimeoutMillis: 300})
	if !ch.TimedOut || ch.Matched {
		t.Errorf("unmatched pattern: timed out %v matched %v", ch.TimedOut, ch.Matched)
	}

	// No wait: returns at once with whatever is there.
	if _, err := c.SendTerminal(ctx, term.ID, wire.TerminalInput{Data: []byte("\n")}); err != nil {
		t.Fatal(err)
	}

	// Resizing reaches the terminal's programs.
	if err := c.ResizeTerminal(ctx, term.ID, 40, 100); err != nil {
		t.Fatal(err)
	}
	ch = sendTerm(t, c, term.ID, wire.TerminalInput{Data: []byte("stty size\n"), WaitPattern: `\d+ \d+\r\n`})
	if !ch.Matched || !strings.Contains(string(ch.Data), "40 100") {
		t.Errorf("stty size after resize: %q", ch.Data)
	}
	if info, err := c.Terminal(ctx, term.ID); err != nil || info.Rows != 40 || info.Cols != 100 {
		t.Errorf("info after resize: %+v, %v", info, err)
	}

	// Reading from offsets: everything, then a piece, then nothing new.
	// The shell's prompt comes after stty's answer: let it arrive first.
	sendTerm(t, c, term.ID, wire.TerminalInput{WaitSettleMillis: 300})
	all, err := c.ReadTerminal(ctx, term.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if all.Offset != 0 || all.NextOffset != all.Total || !strings.Contains(string(all.Data), "42") || !strings.Contains(string(all.Data), "40 100") {
		t.Errorf("whole output: %+v", all)
	}
	part, err := c.ReadTerminal(ctx, term.ID, 5, 7)
	if err != nil {
		t.Fatal(err)
	}
	if part.Offset != 5 || part.NextOffset != 12 || string(part.Data) != string(all.Data[5:12]) {
		t.Errorf("piece: %+v", part)
	}
	rest, err := c.ReadTerminal(ctx, term.ID, all.NextOffset, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest.Data) != 0 || rest.Offset != all.NextOffset {
		t.Errorf("read at the end: %+v", rest)
	}

	for _, tc := range []struct {
		name string
		in   wire.TerminalInput
	}{
		{"bad pattern", wire.TerminalInput{WaitPattern: "("}},
		{"negative settle", wire.TerminalInput{WaitSettleMillis: -1}},
		{"negative max output", wire.TerminalInput{MaxOutput: -1}},
	} {
		if _, err := c.SendTerminal(ctx, term.ID, tc.in); remoteErrCode(t, err) != wire.CodeBadRequest {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if err := c.ResizeTerminal(ctx, term.ID, 0, 80); remoteErrCode(t, err) != wire.CodeBadRequest {
		t.Errorf("zero rows: %v", err)
	}
}

func TestTerminalExitAndClose(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()

	// The shell exits: the terminal reports it and refuses input.
	term := openSh(t, c, wire.TerminalRequest{})
	sendTerm(t, c, term.ID, wire.TerminalInput{Data: []byte("exit 3\n")})
	var info wire.TerminalInfo
	waitFor(t, "the shell to exit", 10*time.Second, func() bool {
		var err error
		info, err = c.Terminal(ctx, term.ID)
		if err != nil {
			t.Fatal(err)
		}
		return !info.Running
	})
	if info.ExitCode == nil || *info.ExitCode != 3 || info.EndedAt == nil {
		t.Errorf("ended %+v", info)
	}
	if _, err := c.SendTerminal(ctx, term.ID, wire.TerminalInput{Data: []byte("x")}); remoteErrCode(t, err) != wire.CodeConflict {
		t.Errorf("input after exit: %v", err)
	}
	if err := c.CloseTerminal(ctx, term.ID); err != nil {
		t.Fatal(err)
	}

	// Closing hangs up the shell and the jobs it started, even one that
	// ignores SIGHUP, and forgets the terminal.
	term = openSh(t, c, wire.TerminalRequest{})
	ch := sendTerm(t, c, term.ID, wire.TerminalInput{
		Data:        []byte("(trap '' HUP; exec sleep 30) & echo job=$!\n"),
		WaitPattern: `job=\d+`,
	})
	m := strings.SplitN(string(ch.Data), "job=", 3)
	if len(m) < 3 {
		t.Fatalf("output %q", ch.Data)
	}
	job := pidsFrom(t, []byte(strings.Fields(m[2])[0]))[0]
	if err := c.CloseTerminal(ctx, term.ID); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{term.PID, job} {
		waitFor(t, "the terminal's processes to be gone", 5*time.Second, func() bool { return procGone(pid) })
	}
	if _, err := c.Terminal(ctx, term.ID); remoteErrCode(t, err) != wire.CodeNotFound {
		t.Errorf("closed terminal: %v", err)
	}
	if err := c.CloseTerminal(ctx, term.ID); remoteErrCode(t, err) != wire.CodeNotFound {
		t.Errorf("closing twice: %v", err)
	}
	if list, err := c.Terminals(ctx); err != nil || len(list) != 0 {
		t.Errorf("list %+v, %v", list, err)
	}
}

func TestTerminalIdleTimeout(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	term := openSh(t, c, wire.TerminalRequest{IdleTimeoutMillis: 300})
	var info wire.TerminalInfo
	// Looking at a terminal's description is not activity.
	waitFor(t, "the idle terminal to be hung up", 10*time.Second, func() bool {
		var err error
		info, err = c.Terminal(context.Background(), term.ID)
		if err != nil {
			t.Fatal(err)
		}
		return !info.Running
	})
	if !info.IdleClosed || info.IdleTimeoutMillis != 300 {
		t.Errorf("ended %+v", info)
	}
}

// TestTerminalAttachFrom: attaching from a read's next_offset first carries
// what the terminal wrote after that read, so a page that shows the history
// and then attaches misses nothing; from 0 it carries the kept history.
func TestTerminalAttachFrom(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	term := openSh(t, c, wire.TerminalRequest{})
	sendTerm(t, c, term.ID, wire.TerminalInput{Data: []byte("echo before-$((2+3))\n"), WaitPattern: "before-5"})
	history, err := c.ReadTerminal(ctx, term.ID, 0, 0)
	if err != nil || !strings.Contains(string(history.Data), "before-5") {
		t.Fatalf("history %q, %v", history.Data, err)
	}
	// Written between the read and the attach: the gap a reattaching page had.
	sendTerm(t, c, term.ID, wire.TerminalInput{Data: []byte("echo gap-$((3+4))\n"), WaitPattern: "gap-7"})

	readUntil := func(conn io.Reader, want string) string {
		t.Helper()
		var got []byte
		buf := make([]byte, 4096)
		for !strings.Contains(string(got), want) {
			n, err := conn.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				t.Fatalf("read %q, then %v", got, err)
			}
		}
		return string(got)
	}
	for _, tc := range []struct {
		from      int64
		want, not string
	}{
		{history.NextOffset, "gap-7\r\n", "before-5"},
		{0, "gap-7\r\n", ""},
	} {
		conn, err := c.AttachTerminalFrom(ctx, term.ID, tc.from)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(10 * time.Second))
		got := readUntil(conn, tc.want)
		if tc.from == 0 && !strings.Contains(got, "before-5") {
			t.Errorf("from 0: %q lacks the history", got)
		}
		if tc.not != "" && strings.Contains(got, tc.not) {
			t.Errorf("from %d: %q repeats what the read already had", tc.from, got)
		}
		conn.Close()
	}

	end, err := c.ReadTerminal(ctx, term.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachTerminalFrom(ctx, term.ID, end.Total+100); remoteErrCode(t, err) != wire.CodeBadRequest {
		t.Errorf("attach past the end: %v", err)
	}
	if _, err := c.AttachTerminalFrom(ctx, term.ID, -1); err == nil {
		t.Error("a negative offset was accepted")
	}
	// A raw negative offset reaches the agent only from a caller of its own.
	var out struct{}
	err = c.Call(ctx, http.MethodGet, wire.PathTerminals+"/"+term.ID+"/attach?offset=-5", nil, &out)
	if remoteErrCode(t, err) != wire.CodeBadRequest {
		t.Errorf("raw negative offset: %v", err)
	}
}

func TestTerminalAttach(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	term := openSh(t, c, wire.TerminalRequest{})
	conn, err := c.AttachTerminal(ctx, term.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "echo attached-$((1+1))\n"); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 4096)
	for !strings.Contains(string(got), "attached-2\r\n") {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read %q, then %v", got, err)
		}
	}
	if info, err := c.Terminal(ctx, term.ID); err != nil || info.Attached != 1 {
		t.Errorf("while attached: %+v, %v", info, err)
	}
	// What the attached connection typed is in the terminal's history too.
	if ch, err := c.ReadTerminal(ctx, term.ID, 0, 0); err != nil || !strings.Contains(string(ch.Data), "attached-2") {
		t.Errorf("history %q, %v", ch.Data, err)
	}
	conn.Close()
	waitFor(t, "the agent to see the detach", 5*time.Second, func() bool {
		info, err := c.Terminal(ctx, term.ID)
		return err == nil && info.Attached == 0 && info.Running
	})

	// The shell's end ends the attached connection.
	conn, err = c.AttachTerminal(ctx, term.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "exit\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(conn); err != nil {
		t.Errorf("reading until the terminal ended: %v", err)
	}

	if _, err := c.AttachTerminal(ctx, "t999"); remoteErrCode(t, err) != wire.CodeNotFound {
		t.Errorf("attach to unknown terminal: %v", err)
	}
	// A plain GET without the upgrade is refused.
	var out struct{}
	if err := c.Call(ctx, http.MethodGet, wire.PathTerminals+"/"+term.ID+"/attach", nil, &out); err == nil {
		t.Error("attach without Upgrade accepted")
	}
}

func TestTerminalBadRequests(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	for _, req := range []wire.TerminalRequest{
		{Shell: "/nonexistent/shell"},
		{Shell: "berth-no-such-shell"},
		{Rows: wire.MaxTerminalSize + 1},
		{IdleTimeoutMillis: -1},
		{Shell: "/bin/sh", Args: []string{"a\x00"}},
		{Shell: "/bin/sh", Env: map[string]string{"X=Y": "1"}},
	} {
		if _, err := c.OpenTerminal(ctx, req); remoteErrCode(t, err) != wire.CodeBadRequest {
			t.Errorf("%+v: %v", req, err)
		}
	}
	for _, call := range []func() error{
		func() error { _, err := c.SendTerminal(ctx, "t42", wire.TerminalInput{}); return err },
		func() error { _, err := c.ReadTerminal(ctx, "t42", 0, 0); return err },
		func() error { return c.ResizeTerminal(ctx, "t42", 10, 10) },
		func() error { return c.CloseTerminal(ctx, "t42") },
	} {
		if err := call(); remoteErrCode(t, err) != wire.CodeNotFound {
			t.Errorf("unknown terminal: %v", err)
		}
	}
	// The default shell and the TERM default. (--norc: the test machine's
	// .bashrc may be slow.)
	req := wire.TerminalRequest{Cwd: "work"}
	if defaultShell() == "/bin/bash" {
		req.Args = []string{"--norc"}
	}
	term, err := c.OpenTerminal(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if want := defaultShell(); term.Shell != want || !strings.HasSuffix(term.Cwd, "/work") {
		t.Errorf("shell %q cwd %q, want %s in .../work", term.Shell, term.Cwd, want)
	}
	ch := sendTerm(t, c, term.ID, wire.TerminalInput{Data: []byte("echo \"term=$TERM\"\n"), WaitPattern: `term=[a-z]\S*\r\n`})
	if !strings.Contains(string(ch.Data), "term="+DefaultTerminalTerm) {
		t.Errorf("output %q", ch.Data)
	}
}

// TestSIGTERMHangsUpTerminals stops an agent that has an interactive bash
// open. Such a shell ignores the SIGTERM the agent forwards, so unless the
// agent hangs the terminal up, it would wait for the shell forever.
func TestSIGTERMHangsUpTerminals(t *testing.T) {
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("needs bash")
	}
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
	term, err := c.OpenTerminal(context.Background(), wire.TerminalRequest{Shell: "/bin/bash", Args: []string{"--norc", "-i"}})
	if err != nil {
		t.Fatal(err)
	}
	ch := sendTerm(t, c, term.ID, wire.TerminalInput{Data: []byte("echo ready-$((2+3))\n"), WaitPattern: "ready-5"})
	if !ch.Matched {
		t.Fatalf("bash did not answer: %q", ch.Data)
	}
	if err := unix.Kill(os.Getpid(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		_ = unix.Kill(term.PID, unix.SIGKILL)
		t.Fatal("agent did not stop within 10s of SIGTERM with a terminal open")
	}
	if !procGone(term.PID) {
		t.Errorf("bash %d still exists", term.PID)
	}
	if _, err := c.Health(context.Background()); err == nil || errors.Is(err, client.ErrBadResponse) {
		t.Errorf("agent still answers after stopping: %v", err)
	}
}
