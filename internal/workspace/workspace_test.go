package workspace

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/runtime"
)

func TestValidateBotID(t *testing.T) {
	for _, ok := range []string{"a", "bot-1", "support_bot.v2", "x9", strings.Repeat("a", MaxBotIDLength)} {
		if err := ValidateBotID(ok); err != nil {
			t.Errorf("%q rejected: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Bot", "a--b", "-a", "a-", "a b", "../x", "a/b", ".", "a\x00", strings.Repeat("a", MaxBotIDLength+1), "é"} {
		if err := ValidateBotID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzValidateBotID(f *testing.F) {
	for _, s := range []string{"bot-1", "../etc", "a..b", "A", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if ValidateBotID(id) != nil {
			return
		}
		// An accepted id must be safe as a path element and a containerd id.
		if filepath.Base(id) != id || strings.ContainsAny(id, "/\\\x00 ") || id == "." || id == ".." || len(id) > MaxBotIDLength {
			t.Fatalf("unsafe id accepted: %q", id)
		}
	})
}

func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	var mu sync.Mutex
	inside := map[string]int{}
	var wg sync.WaitGroup
	for i := range 200 {
		key := []string{"a", "b"}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := k.lock(key)
			mu.Lock()
			inside[key]++
			if inside[key] > 1 {
				t.Errorf("two holders of %s", key)
			}
			mu.Unlock()
			time.Sleep(time.Microsecond)
			mu.Lock()
			inside[key]--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if len(k.locks) != 0 {
		t.Fatalf("locks not released: %d left", len(k.locks))
	}
}

func TestCreateRequestValidation(t *testing.T) {
	good := CreateRequest{BotID: "b", Env: map[string]string{"A_1": "x"}, Limits: runtime.Limits{MemoryBytes: 64 << 20}}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]CreateRequest{
		"env name":     {BotID: "b", Env: map[string]string{"A=B": "x"}},
		"env NUL":      {BotID: "b", Env: map[string]string{"A": "x\x00"}},
		"device comma": {BotID: "b", Devices: []string{"a,b"}},
		"bad bot":      {BotID: "B"},
	} {
		if err := req.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNotApplied(t *testing.T) {
	ctr := runtime.Container{Image: "docker.io/library/a:1", Snapshotter: "overlayfs", Labels: map[string]string{
		labelLimits: `{"cpus":1}`, labelDevices: "x.com/gpu=0", labelEnvNames: "A",
	}}
	same := CreateRequest{Snapshotter: "overlayfs", Limits: runtime.Limits{CPUs: 1}, Devices: []string{"x.com/gpu=0"}}
	if got := notApplied(same, "docker.io/library/a:1", ctr); len(got) != 0 {
		t.Fatalf("identical request reported %v", got)
	}
	other := CreateRequest{Snapshotter: "native", Limits: runtime.Limits{CPUs: 2}, Env: map[string]string{"B": "1"}}
	got := strings.Join(notApplied(other, "docker.io/library/b:2", ctr), "\n")
	for _, want := range []string{"image docker.io/library/b:2", "snapshotter native", "cpus 2 cores (the workspace has 1 core)", "devices none (the workspace has x.com/gpu=0)", "env B (env is fixed"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in %q", want, got)
		}
	}
}

func TestCheckStateDir(t *testing.T) {
	if err := CheckStateDir("/var/lib/berth"); err != nil {
		t.Fatal(err)
	}
	if err := CheckStateDir("/" + strings.Repeat("d", 60)); err == nil {
		t.Fatal("a state dir whose sockets cannot fit was accepted")
	}
}

// TestAgentStatusOutdated serves a fake agent of another protocol version
// where a workspace's agent would listen: berth must report it as outdated
// and say how to fix it, not use it.
func TestAgentStatusOutdated(t *testing.T) {
	state, err := os.MkdirTemp("/tmp", "bw")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(state)
	m := NewManager(nil, Options{StateDir: state})
	if err := os.MkdirAll(m.runDir("old"), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", m.socketPath("old"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(wire.ProtocolHeader, "999")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"protocol_version": 999, "berth_version": "v9.9.9", "pid": 1})
	})}
	go srv.Serve(ln)
	defer srv.Close()

	// The fake agent is served by this process, as the workspace's init.
	me := uint32(os.Getpid())
	st := m.agentStatus(context.Background(), "old", me)
	if st.Status != "outdated" || !strings.Contains(st.Error, "restarting it") {
		t.Fatalf("want outdated with advice, got %+v", st)
	}
	// Served by anyone else, it is not the workspace's agent at all.
	if st := m.agentStatus(context.Background(), "old", me+1); st.Status != "replaced" {
		t.Fatalf("a socket served by another process: %+v", st)
	}
	if st := m.agentStatus(context.Background(), "missing", me); st.Status != "unreachable" {
		t.Fatalf("no agent: %+v", st)
	}
}
