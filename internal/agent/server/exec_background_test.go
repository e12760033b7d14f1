package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
)

// waitExited polls a background process until it is no longer running.
func waitExited(t *testing.T, c *client.Client, id string) wire.ProcessInfo {
	t.Helper()
	var info wire.ProcessInfo
	waitFor(t, "process "+id+" to exit", 10*time.Second, func() bool {
		var err error
		info, err = c.Process(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return !info.Running
	})
	return info
}

// readUntil reads a stream from offset until the data read contains want,
// and returns the next offset.
func readProcUntil(t *testing.T, c *client.Client, id, stream string, offset int64, want string) (string, int64) {
	t.Helper()
	var got []byte
	waitFor(t, fmt.Sprintf("%q on %s of %s", want, stream, id), 10*time.Second, func() bool {
		ch, err := c.ProcessOutput(context.Background(), id, stream, offset, 0)
		if err != nil {
			t.Fatal(err)
		}
		if ch.Offset != offset || ch.Dropped != 0 {
			t.Fatalf("read from %d: chunk at %d, %d dropped", offset, ch.Offset, ch.Dropped)
		}
		got = append(got, ch.Data...)
		offset = ch.NextOffset
		return strings.Contains(string(got), want)
	})
	return string(got), offset
}

func TestProcessOutputWhileRunning(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	dir := t.TempDir()
	// Each line waits for the test to have read the previous one.
	p, err := c.StartProcess(ctx, wire.ExecRequest{
		Command: `for i in 1 2 3; do echo "line$i"; echo "err$i" >&2; while [ ! -e "$DIR/$i" ]; do sleep 0.02; done; done; exit 4`,
		Env:     map[string]string{"DIR": dir},
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.ID == "" || p.PID <= 0 || !p.Running || p.Command == "" || p.StartedAt.IsZero() {
		t.Fatalf("started %+v", p)
	}
	var off, errOff int64
	for i := 1; i <= 3; i++ {
		var got string
		got, off = readProcUntil(t, c, p.ID, wire.StreamStdout, off, fmt.Sprintf("line%d\n", i))
		if got != fmt.Sprintf("line%d\n", i) {
			t.Errorf("read %q from stdout, want only line %d", got, i)
		}
		_, errOff = readProcUntil(t, c, p.ID, wire.StreamStderr, errOff, fmt.Sprintf("err%d\n", i))
		if info, err := c.Process(ctx, p.ID); err != nil || !info.Running {
			t.Fatalf("process ended early: %+v, %v", info, err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	info := waitExited(t, c, p.ID)
	if info.ExitCode == nil || *info.ExitCode != 4 || info.EndedAt == nil || info.Signal != "" {
		t.Errorf("ended %+v", info)
	}
	if info.StdoutTotal != 18 || info.StderrTotal != 15 {
		t.Errorf("totals %d %d", info.StdoutTotal, info.StderrTotal)
	}
	ch, err := c.ProcessOutput(ctx, p.ID, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(ch.Data) != "line1\nline2\nline3\n" || ch.Total != 18 || ch.NextOffset != 18 || ch.Process.Running {
		t.Errorf("whole output %q, chunk %+v", ch.Data, ch)
	}
	list, err := c.Processes(ctx)
	if err != nil || len(list) != 1 || list[0].ID != p.ID {
		t.Errorf("list %+v, %v", list, err)
	}
}

func TestProcessRingOverflow(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	const n = 3 << 20
	p, err := c.StartProcess(ctx, wire.ExecRequest{Command: fmt.Sprintf(`head -c %d /dev/zero | tr '\0' x; printf END`, n)})
	if err != nil {
		t.Fatal(err)
	}
	waitExited(t, c, p.ID)
	total := int64(n + 3)
	ch, err := c.ProcessOutput(ctx, p.ID, wire.StreamStdout, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Total != total || ch.Offset != total-ProcessOutputBuffer || ch.Dropped != ch.Offset || len(ch.Data) != 100 {
		t.Errorf("read from 0: total %d offset %d dropped %d, %d bytes", ch.Total, ch.Offset, ch.Dropped, len(ch.Data))
	}
	ch, err = c.ProcessOutput(ctx, p.ID, wire.StreamStdout, total-ProcessOutputBuffer+10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Dropped != 0 || ch.Offset != total-ProcessOutputBuffer+10 || len(ch.Data) != wire.DefaultOutputLimit {
		t.Errorf("read inside the window: offset %d dropped %d, %d bytes", ch.Offset, ch.Dropped, len(ch.Data))
	}
	ch, err = c.ProcessOutput(ctx, p.ID, wire.StreamStdout, -5, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(ch.Data) != "xxEND" || ch.Offset != total-5 || ch.NextOffset != total {
		t.Errorf("tail: %q at %d", ch.Data, ch.Offset)
	}
	ch, err = c.ProcessOutput(ctx, p.ID, wire.StreamStdout, 0, wire.MaxOutputLimit*4)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Data) != wire.MaxOutputLimit || !bytes.HasSuffix(ch.Data, []byte("END")) {
		t.Errorf("largest read: %d bytes", len(ch.Data))
	}
	_, err = c.ProcessOutput(ctx, p.ID, wire.StreamStdout, total+1, 0)
	if code := remoteErrCode(t, err); code != wire.CodeBadRequest {
		t.Errorf("offset beyond the end: code %q", code)
	}
}

func TestProcessSignalTimeoutForget(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	p, err := c.StartProcess(ctx, wire.ExecRequest{Command: `trap 'echo got-term; exit 7' TERM; echo ready; sleep 30 & echo $!; wait`})
	if err != nil {
		t.Fatal(err)
	}
	var got string
	waitFor(t, "the pid of the group's sleep", time.Minute, func() bool {
		ch, err := c.ProcessOutput(ctx, p.ID, wire.StreamStdout, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = string(ch.Data)
		return strings.Count(got, "\n") >= 2
	})
	pids := pidsFrom(t, []byte(strings.TrimPrefix(got, "ready\n")))
	if len(pids) != 1 {
		t.Fatalf("output %q", got)
	}
	err = c.ForgetProcess(ctx, p.ID)
	if code := remoteErrCode(t, err); code != wire.CodeConflict {
		t.Errorf("forgetting a running process: code %q", code)
	}
	for _, bad := range []string{"SIGNOPE", "0", "65", ""} {
		if code := remoteErrCode(t, c.SignalProcess(ctx, p.ID, bad)); code != wire.CodeBadRequest {
			t.Errorf("signal %q: code %q", bad, code)
		}
	}
	if err := c.SignalProcess(ctx, p.ID, "term"); err != nil {
		t.Fatal(err)
	}
	info := waitExited(t, c, p.ID)
	if info.ExitCode == nil || *info.ExitCode != 7 {
		t.Errorf("after SIGTERM: %+v", info)
	}
	// The signal went to the whole group, the background sleep included.
	waitFor(t, "the group's sleep to die", time.Minute, func() bool { return procGone(pids[0]) })
	if got, _ := readProcUntil(t, c, p.ID, wire.StreamStdout, 0, "got-term"); !strings.HasSuffix(got, "got-term\n") {
		t.Errorf("output %q", got)
	}
	if code := remoteErrCode(t, c.SignalProcess(ctx, p.ID, "KILL")); code != wire.CodeConflict {
		t.Errorf("signalling an exited process: code %q", code)
	}
	if err := c.ForgetProcess(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.ProcessOutput(ctx, p.ID, wire.StreamStdout, 0, 0)
	if code := remoteErrCode(t, err); code != wire.CodeNotFound {
		t.Errorf("output of a forgotten process: code %q", code)
	}
	if list, err := c.Processes(ctx); err != nil || len(list) != 0 {
		t.Errorf("list after forgetting: %+v, %v", list, err)
	}

	p, err = c.StartProcess(ctx, wire.ExecRequest{Argv: []string{"sleep", "30"}, TimeoutMillis: 100})
	if err != nil {
		t.Fatal(err)
	}
	info = waitExited(t, c, p.ID)
	if !info.TimedOut || info.Signal != "SIGTERM" || info.ExitCode == nil || *info.ExitCode != 143 {
		t.Errorf("timed out process: %+v", info)
	}
	if len(info.Argv) != 2 || info.Argv[0] != "sleep" || info.Command != "" {
		t.Errorf("argv %q command %q", info.Argv, info.Command)
	}
	if err := c.SignalProcess(ctx, p.ID, "9"); remoteErrCode(t, err) != wire.CodeConflict {
		t.Errorf("numeric signal to an exited process: %v", err)
	}

	// The agent also takes a JSON number.
	p, err = c.StartProcess(ctx, wire.ExecRequest{Argv: []string{"sleep", "30"}})
	if err != nil {
		t.Fatal(err)
	}
	var signalled wire.ProcessInfo
	if err := c.Call(ctx, http.MethodPost, wire.PathProcesses+"/"+p.ID+"/signal", map[string]any{"signal": 2}, &signalled); err != nil {
		t.Fatal(err)
	}
	if info = waitExited(t, c, p.ID); info.Signal != "SIGINT" || info.TimedOut {
		t.Errorf("after signal 2: %+v", info)
	}
}

func TestProcessBadRequests(t *testing.T) {
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	for _, req := range []wire.ExecRequest{
		{Argv: []string{"true"}, Command: "true"},
		{},
		{Argv: []string{"berth-no-such-command"}},
		{Argv: []string{"/nonexistent/berth"}},
		{Argv: []string{"true"}, Env: map[string]string{"BAD NAME": "x"}},
	} {
		if _, err := c.StartProcess(ctx, req); remoteErrCode(t, err) != wire.CodeBadRequest {
			t.Errorf("%+v: %v, want %s", req, err, wire.CodeBadRequest)
		}
	}
	for _, id := range []string{"p999", "t1", "nope"} {
		if _, err := c.Process(ctx, id); remoteErrCode(t, err) != wire.CodeNotFound {
			t.Errorf("process %q: %v", id, err)
		}
	}
	for _, id := range []string{"", "../exec", "p 1", strings.Repeat("p", 100)} {
		if _, err := c.Process(ctx, id); err == nil || strings.Contains(err.Error(), "HTTP") {
			t.Errorf("id %q: %v, want a client-side refusal", id, err)
		}
	}
	if _, err := c.ProcessOutput(ctx, "p1", "stdin", 0, 0); err == nil {
		t.Error("stream stdin accepted")
	}
}

// TestProcessLimits fills the table: running processes are capped, exited
// ones are forgotten, oldest first, to make room.
func TestProcessLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hundreds of processes")
	}
	_, c := startProcAgent(t, Options{})
	ctx := context.Background()
	for i := 0; i < wire.MaxProcesses; i++ {
		if _, err := c.StartProcess(ctx, wire.ExecRequest{Argv: []string{"sleep", "30"}}); err != nil {
			t.Fatalf("process %d: %v", i, err)
		}
	}
	_, err := c.StartProcess(ctx, wire.ExecRequest{Argv: []string{"true"}})
	if code := remoteErrCode(t, err); code != wire.CodeLimit {
		t.Fatalf("process %d: code %q, want %s", wire.MaxProcesses+1, code, wire.CodeLimit)
	}
	list, err := c.Processes(ctx)
	if err != nil || len(list) != wire.MaxProcesses {
		t.Fatalf("list of %d, %v", len(list), err)
	}
	// Kill the first ten; the next starts evict them, oldest end first.
	for _, p := range list[:10] {
		if err := c.SignalProcess(ctx, p.ID, "KILL"); err != nil {
			t.Fatal(err)
		}
		waitExited(t, c, p.ID)
	}
	for i := 0; i < 10; i++ {
		if _, err := c.StartProcess(ctx, wire.ExecRequest{Argv: []string{"true"}}); err != nil {
			t.Fatalf("start after freeing: %v", err)
		}
	}
	after, err := c.Processes(ctx)
	if err != nil || len(after) != wire.MaxProcesses {
		t.Fatalf("list of %d, %v", len(after), err)
	}
	if after[0].ID != list[10].ID {
		t.Errorf("oldest remembered is %s, want %s", after[0].ID, list[10].ID)
	}
}
