package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

type execOut struct {
	ExitCode        int    `json:"exit_code"`
	Signal          string `json:"signal"`
	TimedOut        bool   `json:"timed_out"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutBytes     int64  `json:"stdout_bytes"`
	StderrBytes     int64  `json:"stderr_bytes"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	ProcessID       string `json:"process_id"`
	PID             int    `json:"pid"`
}

func execute(t *testing.T, c mcpClient, bot string, args map[string]any) execOut {
	t.Helper()
	args["bot_id"] = bot
	var out execOut
	mustCall(t, c, "exec", args).decode(t, &out)
	return out
}

// TestExec covers exit codes, signals, stream separation, caps, env, stdin
// and cwd, over both transports.
func TestExec(t *testing.T) {
	for _, cl := range []struct {
		name    string
		connect func(e *env) mcpClient
	}{clients[0], clients[3]} {
		t.Run(cl.name, func(t *testing.T) {
			e := newEnv(t)
			c := cl.connect(e)
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": "ex"})

			if o := execute(t, c, "ex", map[string]any{"command": "echo out; echo err >&2; exit 3"}); o.ExitCode != 3 || o.Stdout != "out\n" || o.Stderr != "err\n" {
				t.Fatalf("exit code and streams: %+v", o)
			}
			if o := execute(t, c, "ex", map[string]any{"command": "kill -9 $$"}); o.ExitCode != 137 || o.Signal != "SIGKILL" {
				t.Fatalf("killed by signal: %+v", o)
			}
			if o := execute(t, c, "ex", map[string]any{"argv": []string{"sh", "-c", "echo $0 $1", "a b", "c"}}); o.Stdout != "a b c\n" {
				t.Fatalf("argv without a shell: %+v", o)
			}
			o := execute(t, c, "ex", map[string]any{"command": "head -c 100000 /dev/zero | tr '\\0' x; echo tail >&2", "max_output_bytes": 1000})
			if len(o.Stdout) != 1000 || o.StdoutBytes != 100000 || !o.StdoutTruncated || o.Stderr != "tail\n" {
				t.Fatalf("caps: stdout %d bytes (total %d, truncated %v), stderr %q", len(o.Stdout), o.StdoutBytes, o.StdoutTruncated, o.Stderr)
			}
			res := mustCall(t, c, "exec", map[string]any{"bot_id": "ex", "command": "head -c 100000 /dev/zero", "max_output_bytes": 10})
			if !strings.Contains(res.Text, "truncated") {
				t.Fatalf("the text must say the output was truncated: %q", res.Text)
			}
			if o := execute(t, c, "ex", map[string]any{"command": "pwd; echo $GREET; cat", "env": map[string]string{"GREET": "hi"}, "stdin": "from stdin"}); o.Stdout != "/data\nhi\nfrom stdin" {
				t.Fatalf("cwd, env, stdin: %q", o.Stdout)
			}
			if o := execute(t, c, "ex", map[string]any{"command": "pwd", "cwd": "projects/new"}); o.Stdout != "/data/projects/new\n" {
				t.Fatalf("relative cwd created under /data: %+v", o)
			}
			for args, want := range map[string]map[string]any{
				"give exactly one of command": {"bot_id": "ex"},
				"has no workspace":            {"bot_id": "ghost", "command": "true"},
				"timeout_seconds":             {"bot_id": "ex", "command": "true", "timeout_seconds": -1},
			} {
				if res := mustCall(t, c, "exec", want); !res.IsError || !strings.Contains(res.Text, args) {
					t.Errorf("exec %v: want error %q, got %+v", want, args, res)
				}
			}
		})
	}
}

// TestExecTimeoutAndCancelKillGroup checks from inside the workspace that
// a timeout and a cancelled call kill the command's whole process group.
func TestExecTimeoutAndCancelKillGroup(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "kill"})

	o := execute(t, c, "kill", map[string]any{"command": "sleep 300 & echo $! > /tmp/child; sleep 300", "timeout_seconds": 1})
	if !o.TimedOut {
		t.Fatalf("want a timeout: %+v", o)
	}
	e.waitGone(t, "kill", "/tmp/child")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.call(ctx, "exec", map[string]any{"bot_id": "kill", "command": "sleep 300 & echo $! > /tmp/child2; sleep 300"}, nil)
		done <- err
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := e.tryExec(t, "kill", "test", "-s", "/tmp/child2"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command never started")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	<-done
	e.waitGone(t, "kill", "/tmp/child2")
}

// waitGone waits until the process whose pid is in pidFile has ended (and
// was reaped).
func (e *env) waitGone(t *testing.T, bot, pidFile string) {
	t.Helper()
	pid := strings.TrimSpace(e.execIn(t, bot, "cat", pidFile))
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := e.tryExec(t, bot, "test", "-e", "/proc/"+pid); err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %s from %s still exists", pid, pidFile)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestExecStreamsProgress: a long command's output arrives as progress
// notifications before the call returns. The command waits, after its first
// line, until the client has seen that line (a file the test creates once it
// has), so the check holds however slow the machine: without streaming the
// command gives up waiting and the call fails.
func TestExecStreamsProgress(t *testing.T) {
	e := newEnv(t)
	c := e.stdioSDK()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "stream"})
	requireFirstLineStreamed(t, c, c, "stream")
}

// requireFirstLineStreamed runs, through c, a command that prints a line and
// then waits until /tmp/seen exists; release creates that file once c has
// seen the line as a progress notification. The call ends well only if the
// line was streamed before the command ended.
func requireFirstLineStreamed(t *testing.T, c, release mcpClient, bot string) {
	t.Helper()
	var progress progressLog
	var sawFirst sync.Once
	released := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := c.call(ctx, "exec", map[string]any{"bot_id": bot,
		"command": "echo first; i=0; while [ ! -e /tmp/seen ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; " +
			"[ -e /tmp/seen ] && echo second"}, func(ev progressEvent) {
		progress.add(ev)
		if strings.Contains(ev.Message, "first") {
			sawFirst.Do(func() {
				// Not on the notification's goroutine: the call
				// needs the connection.
				go func() {
					_, err := release.call(ctx, "exec", map[string]any{"bot_id": bot, "command": "touch /tmp/seen"}, nil)
					released <- err
				}()
			})
		}
	})
	if err != nil || res.IsError {
		t.Fatalf("%v %+v; progress %+v", err, res, progress.all())
	}
	var out execOut
	res.decode(t, &out)
	if out.ExitCode != 0 || !strings.Contains(out.Stdout, "second") {
		t.Fatalf("the first line was not streamed before the command ended: %+v; progress %+v", out, progress.all())
	}
	select {
	case err := <-released:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the call that released the command never returned")
	}
}

// TestBackgroundProcessOutlivesSession starts a background command from one
// berth process, and reads it from another after the first is gone.
func TestBackgroundProcessOutlivesSession(t *testing.T) {
	e := newEnv(t)
	c1 := e.stdioMcpgo()
	mustCall(t, c1, "workspace_create", map[string]any{"bot_id": "bg"})
	o := execute(t, c1, "bg", map[string]any{"command": "for i in 1 2 3 4 5; do echo tick $i; sleep 0.3; done", "background": true})
	if o.ProcessID == "" {
		t.Fatalf("no process id: %+v", o)
	}
	c1.close()

	c2 := e.stdioSDK()
	var list struct {
		Processes []struct {
			ID string `json:"id"`
		} `json:"processes"`
	}
	mustCall(t, c2, "process_list", map[string]any{"bot_id": "bg"}).decode(t, &list)
	if len(list.Processes) != 1 || list.Processes[0].ID != o.ProcessID {
		t.Fatalf("process list from another session: %+v", list)
	}
	var got strings.Builder
	offset := int64(0)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var chunk struct {
			Output     string `json:"output"`
			NextOffset int64  `json:"next_offset"`
			Running    bool   `json:"running"`
			ExitCode   *int   `json:"exit_code"`
		}
		mustCall(t, c2, "process_output", map[string]any{"bot_id": "bg", "process_id": o.ProcessID, "offset": offset}).decode(t, &chunk)
		got.WriteString(chunk.Output)
		offset = chunk.NextOffset
		if !chunk.Running {
			if chunk.ExitCode == nil || *chunk.ExitCode != 0 {
				t.Fatalf("exit: %+v", chunk)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("background process never finished")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got.String() != "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n" {
		t.Fatalf("incremental output: %q", got.String())
	}

	o = execute(t, c2, "bg", map[string]any{"command": "sleep 300", "background": true})
	mustCall(t, c2, "process_kill", map[string]any{"bot_id": "bg", "process_id": o.ProcessID})
	deadline = time.Now().Add(time.Minute)
	for {
		var chunk struct {
			Running  bool `json:"running"`
			ExitCode *int `json:"exit_code"`
		}
		mustCall(t, c2, "process_output", map[string]any{"bot_id": "bg", "process_id": o.ProcessID}).decode(t, &chunk)
		if !chunk.Running {
			if chunk.ExitCode == nil || *chunk.ExitCode != 137 {
				t.Fatalf("killed process exit: %+v", chunk)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("process_kill did not kill")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res := mustCall(t, c2, "process_output", map[string]any{"bot_id": "bg", "process_id": "nope"}); !res.IsError {
		t.Fatalf("unknown process: %+v", res)
	}
}
