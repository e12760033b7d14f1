package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
)

func startWatch(t *testing.T, c *client.Client, paths ...string) *client.Watch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := c.Watch(ctx, paths)
	if err != nil {
		t.Fatalf("watch %v: %v", paths, err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// nextEvent waits for an event; a stream that stays silent fails the test
// through the deadline of the surrounding go test run, so it is bounded here.
func nextEvent(t *testing.T, w *client.Watch) wire.WatchEvent {
	t.Helper()
	type result struct {
		ev  wire.WatchEvent
		err error
	}
	ch := make(chan result, 1)
	go func() { ev, err := w.Next(); ch <- result{ev, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("watch: %v", r.err)
		}
		return r.ev
	case <-time.After(20 * time.Second):
		t.Fatal("no watch event within 20s")
	}
	return wire.WatchEvent{}
}

func TestWatchReportsWritesRenamesAndDeletes(t *testing.T) {
	c, data := startFSAgent(t, nil)
	f := filepath.Join(data, "f.txt")
	other := filepath.Join(data, "other.txt")
	w := startWatch(t, c, "f.txt") // relative: in the data directory

	// A change of an entry that is not watched, then one that is: the
	// event names only the watched one.
	mustWrite(t, other, "x")
	mustWrite(t, f, "one")
	if ev := nextEvent(t, w); !slices.Equal(ev.Paths, []string{f}) || ev.Lost {
		t.Fatalf("after a write: %+v, want %s", ev, f)
	}
	// Replaced by a rename over it, as editors and fs_write do.
	mustWrite(t, f+".tmp", "two")
	if err := os.Rename(f+".tmp", f); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, w); !slices.Contains(ev.Paths, f) {
		t.Fatalf("after a rename over it: %+v", ev)
	}
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, w); !slices.Contains(ev.Paths, f) {
		t.Fatalf("after delete: %+v", ev)
	}
}

func TestWatchCoalesces(t *testing.T) {
	c, data := startFSAgent(t, nil)
	f := filepath.Join(data, "busy")
	w := startWatch(t, c, f)
	// A thousand writes cost a handful of events, each naming f once.
	for i := range 1000 {
		mustWrite(t, f, fmt.Sprint(i))
	}
	mustWrite(t, filepath.Join(data, "busy"), "last")
	ev := nextEvent(t, w)
	if !slices.Equal(ev.Paths, []string{f}) {
		t.Fatalf("event %+v, want %s once", ev, f)
	}
}

func TestWatchLostDirectoryEndsStream(t *testing.T) {
	c, data := startFSAgent(t, nil)
	sub := filepath.Join(data, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, c, filepath.Join(sub, "f"))
	if err := os.Remove(sub); err != nil {
		t.Fatal(err)
	}
	for {
		ev := nextEvent(t, w)
		if ev.Lost {
			if !slices.Equal(ev.Paths, []string{filepath.Join(sub, "f")}) {
				t.Fatalf("lost event %+v", ev)
			}
			break
		}
	}
	if _, err := w.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after every path was lost: %v, want the end of the stream", err)
	}
}

func TestWatchRefusals(t *testing.T) {
	c, data, prot := startFSAgentProt(t, nil)
	berthDir := filepath.Join(prot, "run", "berth")
	if err := os.Symlink(berthDir, filepath.Join(data, "link")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		paths []string
		code  string
	}{
		{"berth's directory", []string{filepath.Join(berthDir, wire.SocketName)}, wire.CodePermission},
		{"berth's directory through a symlink", []string{"link/" + wire.SocketName}, wire.CodePermission},
		{"proc", []string{"/proc/self/status"}, wire.CodeInvalid},
		{"missing directory", []string{"nope/f"}, wire.CodeNotFound},
		{"root", []string{"/"}, wire.CodeInvalid},
		{"NUL", []string{"a\x00b"}, wire.CodeInvalid},
		{"one bad among good ones", []string{"a", "nope/f"}, wire.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := c.Watch(ctx, tc.paths)
			if err == nil {
				_ = w.Close()
				t.Fatalf("watch %q succeeded", tc.paths)
			}
			wantCode(t, err, tc.code)
		})
	}
	// Too many paths in one request is refused by the client already; the
	// agent refuses it too.
	paths := make([]string, wire.MaxWatchPaths+1)
	for i := range paths {
		paths[i] = fmt.Sprint("f", i)
	}
	err := c.Call(ctx, "POST", wire.PathWatch, wire.WatchRequest{Paths: paths}, &struct{}{})
	wantCode(t, err, wire.CodeLimit)
}

func TestWatchCapPerWorkspace(t *testing.T) {
	c, _ := startFSAgent(t, nil)
	batch := func(n, from int) []string {
		paths := make([]string, n)
		for i := range paths {
			paths[i] = fmt.Sprint("f", from+i)
		}
		return paths
	}
	for i := 0; i < wire.MaxWatches/wire.MaxWatchPaths; i++ {
		startWatch(t, c, batch(wire.MaxWatchPaths, i*wire.MaxWatchPaths)...)
	}
	_, err := c.Watch(context.Background(), []string{"one-more"})
	wantCode(t, err, wire.CodeLimit)
}

func TestWatchFollowsALinkToItsTarget(t *testing.T) {
	c, data, prot := startFSAgentProt(t, nil)
	sub := filepath.Join(data, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(sub, "real"), "v1")
	link := filepath.Join(data, "link")
	if err := os.Symlink("sub/real", link); err != nil {
		t.Fatal(err)
	}
	// A link into berth's directory is watched as the link only.
	if err := os.Symlink(filepath.Join(prot, "run", "berth", wire.SocketName), filepath.Join(data, "sock")); err != nil {
		t.Fatal(err)
	}
	startWatch(t, c, "sock")

	w := startWatch(t, c, "link")
	mustWrite(t, filepath.Join(sub, "real"), "v2")
	if ev := nextEvent(t, w); !slices.Equal(ev.Paths, []string{link}) {
		t.Fatalf("after a write of the link's target: %+v, want %s", ev, link)
	}
}
