package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/imagebuild"
	"github.com/berth-dev/berth/internal/testenv"
)

// raceImageRef is the image of TestFileToolsRaceNonRoot: busybox with the
// swapper, run as nobody.
const raceImageRef = "docker.io/berth-test/race:latest"

// raceImage builds and imports an image whose user is nobody (65534) and
// that holds the swapper helper (internal/testenv/swapper, built static) at
// /usr/local/bin/swapper.
func raceImage(t *testing.T, e *env) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "swapper")
	build := exec.Command("go", "build", "-o", bin, "../internal/testenv/swapper")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the swapper: %v\n%s", err, out)
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := imagebuild.BusyboxRootfs(rootfs, testenv.BusyboxPath()); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(rootfs, "usr", "local", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "usr", "local", "bin", "swapper"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "race.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	err = imagebuild.WriteArchive(context.Background(), f, rootfs, raceImageRef, imagebuild.Config{
		Env:  []string{imagebuild.DefaultPathEnv},
		User: "65534:65534",
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return testenv.ImportArchive(t, e.address, e.namespace, archive)
}

// TestFileToolsRaceNonRoot is the non-root takeover of issue 10 as a test:
// inside a workspace whose user is nobody, the swapper keeps exchanging the
// directory /tmp/d with /tmp/l, a symlink to /run/berth, while every
// mutating file tool is aimed at /tmp/d thousands of times in all. berth's
// run directory for the bot must end holding only the agent's socket, and
// the workspace must still answer.
func TestFileToolsRaceNonRoot(t *testing.T) {
	e := newEnv(t)
	e.image = raceImage(t, e)
	c := e.stdioMcpgo()
	const bot = "racer"
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": bot})
	// call is used from several goroutines: a protocol failure is
	// reported, not fatal there; a tool error is the expected refusal.
	call := func(tool string, args map[string]any) *toolResult {
		t.Helper()
		args["bot_id"] = bot
		res, err := c.call(context.Background(), tool, args, nil)
		if err != nil {
			t.Errorf("%s: %v", tool, err)
			return &toolResult{IsError: true, Text: err.Error()}
		}
		return res
	}

	var out struct {
		ExitCode  int    `json:"exit_code"`
		Stdout    string `json:"stdout"`
		Stderr    string `json:"stderr"`
		ProcessID string `json:"process_id"`
	}
	mustCall(t, c, "exec", map[string]any{"bot_id": bot, "cwd": "/tmp",
		"command": "id -u && stat -c %u /data && touch /data/mine && mkdir /tmp/d && ln -s /run/berth /tmp/l && echo x > /tmp/c"}).decode(t, &out)
	if out.ExitCode != 0 || strings.TrimSpace(strings.Split(out.Stdout, "\n")[0]) != "65534" {
		t.Fatalf("setup as nobody: %+v", out)
	}
	// The workspace's user owns its data directory and can write there.
	if owner := strings.Split(out.Stdout, "\n")[1]; owner != "65534" {
		t.Fatalf("/data belongs to uid %s, not to the workspace's user: %+v", owner, out)
	}
	mustCall(t, c, "exec", map[string]any{"bot_id": bot, "cwd": "/tmp", "background": true,
		"argv": []string{"/usr/local/bin/swapper", "/tmp/d", "/tmp/l"}}).decode(t, &out)
	swapper := out.ProcessID
	if swapper == "" {
		t.Fatalf("no process id for the swapper: %+v", out)
	}
	// The swapper reports every 100000 swaps: once it has, it is running.
	deadline := time.Now().Add(60 * time.Second)
	for {
		res := mustCall(t, c, "process_output", map[string]any{"bot_id": bot, "process_id": swapper})
		if strings.Contains(res.Text, "swaps") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the swapper did not start swapping: %s", res.Text)
		}
		time.Sleep(50 * time.Millisecond)
	}

	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, name := range []string{"agent.sock", "imported"} {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
		_, _ = tw.Write([]byte("i"))
	}
	_ = tw.Close()
	archive := base64.StdEncoding.EncodeToString(tarBuf.Bytes())

	const rounds = 400
	ops := []struct {
		name string
		run  func(i int) *toolResult
	}{
		{"fs_write", func(i int) *toolResult {
			if i%2 == 0 {
				return call("fs_write", map[string]any{"path": fmt.Sprintf("/tmp/d/new%d", i), "content": "w"})
			}
			return call("fs_write", map[string]any{"path": "/tmp/d/agent.sock", "content": "w"})
		}},
		{"fs_move", func(i int) *toolResult {
			src := fmt.Sprintf("/tmp/e%d", i)
			call("fs_write", map[string]any{"path": src, "content": "m"})
			if i%3 == 0 {
				return call("fs_move", map[string]any{"source": "/tmp/d/agent.sock", "destination": fmt.Sprintf("/tmp/stolen%d", i)})
			}
			return call("fs_move", map[string]any{"source": src, "destination": "/tmp/d/agent.sock", "overwrite": true})
		}},
		{"fs_copy", func(i int) *toolResult {
			return call("fs_copy", map[string]any{"source": "/tmp/c", "destination": "/tmp/d/agent.sock", "overwrite": true})
		}},
		{"fs_delete", func(i int) *toolResult {
			return call("fs_delete", map[string]any{"path": "/tmp/d/agent.sock", "recursive": i%2 == 0})
		}},
		{"fs_mkdir", func(i int) *toolResult {
			return call("fs_mkdir", map[string]any{"path": fmt.Sprintf("/tmp/d/m%d/sub", i)})
		}},
		{"data_import", func(i int) *toolResult {
			return call("data_import", map[string]any{"path": "/tmp/d", "archive_base64": archive})
		}},
	}
	var wg sync.WaitGroup
	landed := make([]atomic.Int64, len(ops))
	for k, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				if res := op.run(i); !res.IsError {
					landed[k].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for k, op := range ops {
		t.Logf("%s: %d of %d calls succeeded", op.name, landed[k].Load(), rounds)
	}
	if landed[0].Load() == 0 || landed[1].Load() == 0 {
		t.Errorf("fs_write or fs_move never succeeded: the race was not exercised")
	}

	if res := mustCall(t, c, "process_output", map[string]any{"bot_id": bot, "process_id": swapper}); !strings.Contains(res.Text, "swaps") {
		t.Errorf("swapper output: %s", res.Text)
	}
	mustCall(t, c, "process_kill", map[string]any{"bot_id": bot, "process_id": swapper})

	// On the host: the bot's run directory holds the agent's socket and
	// nothing else, and the socket is still one.
	runDir := filepath.Join(e.stateDir, "run", bot)
	entries, err := os.ReadDir(runDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	if len(names) != 1 || names[0] != "agent.sock" {
		t.Errorf("%s holds %v; want only agent.sock", runDir, names)
	}
	if fi, err := os.Lstat(filepath.Join(runDir, "agent.sock")); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("agent.sock is no longer a socket: %v, %v", fi, err)
	}
	// And the workspace still answers, as its own user.
	mustCall(t, c, "exec", map[string]any{"bot_id": bot, "command": "id -u"}).decode(t, &out)
	if out.ExitCode != 0 || strings.TrimSpace(out.Stdout) != "65534" {
		t.Errorf("exec after the race: %+v", out)
	}
	if res := call("fs_read", map[string]any{"path": "/tmp/c"}); res.IsError {
		t.Errorf("fs_read after the race: %s", res.Text)
	}
}
