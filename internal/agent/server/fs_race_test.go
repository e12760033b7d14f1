package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// TestFSRaceSwapIntoProtected replays the attack that found the
// check-then-act race: while a goroutine keeps exchanging a directory with
// a symlink to berth's socket directory (renameat2 RENAME_EXCHANGE, as the
// workspace's own user can do in /tmp), every mutating file operation is
// aimed through that path thousands of times. Each lands in the real
// directory or is refused; none may add, replace or remove anything in the
// protected directories, and none may leave a temporary file there.
func TestFSRaceSwapIntoProtected(t *testing.T) {
	c, data, prot := startFSAgentProt(t, nil)
	ctx := context.Background()
	sockDir := filepath.Join(prot, "run", "berth")
	d, l := filepath.Join(data, "d"), filepath.Join(data, "l")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sockDir, l); err != nil {
		t.Fatal(err)
	}
	// A second pair reaches the binary's directory the same way.
	d2, l2 := filepath.Join(data, "d2"), filepath.Join(data, "l2")
	if err := os.Mkdir(d2, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(prot, ".berth"), l2); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var swaps atomic.Int64
	var wg sync.WaitGroup
	for _, pair := range [][2]string{{d, l}, {d2, l2}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := unix.Renameat2(unix.AT_FDCWD, pair[0], unix.AT_FDCWD, pair[1], unix.RENAME_EXCHANGE); err != nil {
					t.Errorf("swap: %v", err)
					return
				}
				swaps.Add(1)
			}
		}()
	}

	tarBody := buildTar(t, tarFile(wire.SocketName, "imported"), tarFile("berth", "imported"))
	ops := []struct {
		name string
		run  func(i int) error
	}{
		{"write", func(i int) error {
			_, err := c.Write(ctx, wire.WriteRequest{Path: "d/" + wire.SocketName}, strings.NewReader("x"))
			if i%2 == 0 {
				_, err = c.Write(ctx, wire.WriteRequest{Path: "d2/berth"}, strings.NewReader("x"))
			}
			return err
		}},
		{"write new", func(i int) error {
			_, err := c.Write(ctx, wire.WriteRequest{Path: fmt.Sprintf("d/new%d", i), MakeParents: true}, strings.NewReader("x"))
			return err
		}},
		{"edit", func(i int) error {
			_, err := c.Edit(ctx, wire.EditRequest{Path: "d2/berth", Edits: []wire.Edit{{Old: "x", New: "y", ReplaceAll: true}}})
			return err
		}},
		{"move onto", func(i int) error {
			src := fmt.Sprintf("e%d", i)
			mustWrite(t, filepath.Join(data, src), "moved")
			_, err := c.Move(ctx, src, "d/"+wire.SocketName, true)
			return err
		}},
		{"move out", func(i int) error {
			_, err := c.Move(ctx, "d/"+wire.SocketName, fmt.Sprintf("stolen%d", i), false)
			return err
		}},
		{"copy", func(i int) error {
			mustWrite(t, filepath.Join(data, "c"), "copied")
			_, err := c.Copy(ctx, "c", "d/"+wire.SocketName, true)
			if i%2 == 0 {
				_, err = c.Copy(ctx, "c", "d2/berth", true)
			}
			return err
		}},
		{"delete", func(i int) error {
			err := c.Delete(ctx, "d/"+wire.SocketName, false)
			if i%2 == 0 {
				err = c.Delete(ctx, "d2/berth", true)
			}
			return err
		}},
		{"mkdir", func(i int) error {
			_, err := c.Mkdir(ctx, fmt.Sprintf("d/m%d", i), false)
			if i%2 == 0 {
				_, err = c.Mkdir(ctx, fmt.Sprintf("d2/p%d/q", i), true)
			}
			return err
		}},
		{"import", func(i int) error {
			_, err := c.Import(ctx, wire.ImportRequest{Path: "d"}, bytes.NewReader(tarBody))
			if i%2 == 0 {
				_, err = c.Import(ctx, wire.ImportRequest{Path: "d2"}, bytes.NewReader(tarBody))
			}
			return err
		}},
	}
	const rounds = 400
	landed := make([]atomic.Int64, len(ops))
	var opsWG sync.WaitGroup
	for k, op := range ops {
		opsWG.Add(1)
		go func() {
			defer opsWG.Done()
			for i := range rounds {
				if op.run(i) == nil {
					landed[k].Add(1)
				}
			}
		}()
	}
	opsWG.Wait()
	stop.Store(true)
	wg.Wait()

	protEntries(t, prot)
	for k, op := range ops {
		t.Logf("%s: %d of %d calls succeeded", op.name, landed[k].Load(), rounds)
	}
	t.Logf("%d swaps", swaps.Load())
	// The operations did run against the real directories: a test where
	// every call is refused would prove nothing.
	if landed[0].Load() == 0 || landed[3].Load() == 0 || landed[7].Load() == 0 {
		t.Errorf("writes, moves or mkdirs never succeeded; the race was not exercised")
	}
	// Whatever failed cleaned up after itself.
	for _, dir := range []string{d, l, d2, l2} {
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
			continue
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".berth-") {
				t.Errorf("%s left in %s", e.Name(), dir)
			}
		}
	}
}

// TestFSReadSpecialFiles: reading what is not a regular file is a clear
// refusal with a code, not an internal error, and opening it for the check
// has no effect on it (a FIFO with no writer does not block the read).
// Files of /proc, which say 0 bytes, read with their content.
func TestFSReadSpecialFiles(t *testing.T) {
	c, data, prot := startFSAgentProt(t, nil)
	ctx := context.Background()
	l, err := net.Listen("unix", filepath.Join(data, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := unix.Mkfifo(filepath.Join(data, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"s.sock", "fifo", "/dev/null"} {
		_, err := c.ReadText(ctx, wire.ReadTextRequest{Path: p})
		re := wantCode(t, err, wire.CodeInvalid)
		if !strings.Contains(re.Message, "not a regular file") {
			t.Errorf("read %s: %q", p, re.Message)
		}
		_, _, err = c.ReadRange(ctx, p, 0, 0)
		wantCode(t, err, wire.CodeInvalid)
	}
	// berth's own directory cannot be read either.
	_, err = c.ReadText(ctx, wire.ReadTextRequest{Path: prot + "/run/berth/agent.sock"})
	wantCode(t, err, wire.CodeInvalid)
	_, err = c.List(ctx, wire.ListRequest{Path: prot + "/run/berth"})
	wantCode(t, err, wire.CodePermission)
	_, err = c.Stat(ctx, prot+"/run/berth/agent.sock")
	wantCode(t, err, wire.CodePermission)
	if res, err := c.List(ctx, wire.ListRequest{Path: prot + "/run", Recursive: true}); err != nil || res.Total != 1 {
		t.Errorf("a recursive list above berth's directory should show it and not its content: %+v, %v", res, err)
	}

	want, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil || len(want) == 0 {
		t.Fatalf("/proc/self/mountinfo: %d bytes, %v", len(want), err)
	}
	// The agent runs in this process, so its /proc/self is the test's.
	rc, info, err := c.ReadRange(ctx, "/proc/self/mountinfo", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || len(got) == 0 || info.Size != int64(len(got)) || !bytes.HasPrefix(got, want[:min(len(want), 20)]) {
		t.Errorf("ReadRange of /proc/self/mountinfo: %d bytes (size %d), %v", len(got), info.Size, err)
	}
	rc, _, err = c.ReadRange(ctx, "/proc/self/mountinfo", 5, 10)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(rc)
	rc.Close()
	if len(got) != 10 {
		t.Errorf("a window of a /proc file: %q", got)
	}
	res, err := c.ReadText(ctx, wire.ReadTextRequest{Path: "/proc/self/status"})
	if err != nil || !strings.Contains(res.Text, "Pid:") || res.Size == 0 {
		t.Errorf("ReadText of /proc/self/status: %+v, %v", res, err)
	}
}
