package workspace

import (
	"math"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/containerd/errdefs"
)

func TestLimitPolicyResolve(t *testing.T) {
	p, err := NewLimitPolicy(LimitSettings{DefaultPids: 100, MaxPids: 200, DefaultMemory: "256M", MaxMemory: "1G", DefaultCPUs: 1, MaxCPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Resolve(runtime.Limits{})
	if err != nil || got != (runtime.Limits{CPUs: 1, MemoryBytes: 256 << 20, Pids: 100}) {
		t.Fatalf("zero request: %+v, %v", got, err)
	}
	got, err = p.Resolve(runtime.Limits{CPUs: 0.5, Pids: 200})
	if err != nil || got != (runtime.Limits{CPUs: 0.5, MemoryBytes: 256 << 20, Pids: 200}) {
		t.Fatalf("partial request: %+v, %v", got, err)
	}
	for name, tc := range map[string]struct {
		req  runtime.Limits
		want string
	}{
		"huge cpus":      {runtime.Limits{CPUs: 1e300}, "maximum of 2 that berth allows (--max-cpus)"},
		"NaN cpus":       {runtime.Limits{CPUs: math.NaN()}, "finite"},
		"Inf cpus":       {runtime.Limits{CPUs: math.Inf(1)}, "finite"},
		"negative cpus":  {runtime.Limits{CPUs: -1}, "negative"},
		"tiny cpus":      {runtime.Limits{CPUs: 0.001}, "minimum"},
		"memory":         {runtime.Limits{MemoryBytes: 2 << 30}, "maximum of 1.0 GiB that berth allows (--max-memory)"},
		"tiny memory":    {runtime.Limits{MemoryBytes: 1024}, "at least 6 MiB"},
		"negative mem":   {runtime.Limits{MemoryBytes: -1}, "negative"},
		"pids":           {runtime.Limits{Pids: 201}, "maximum of 200 that berth allows (--max-pids)"},
		"negative pids":  {runtime.Limits{Pids: -1}, "negative"},
		"too few pids":   {runtime.Limits{Pids: 31}, "minimum of 32"},
		"max int64 pids": {runtime.Limits{Pids: math.MaxInt64}, "--max-pids"},
	} {
		_, err := p.Resolve(tc.req)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want an invalid-argument error naming %q, got %v", name, tc.want, err)
		}
	}
}

func TestNewLimitPolicyDerivesFromHost(t *testing.T) {
	p, err := NewLimitPolicy(LimitSettings{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Max.CPUs < 1 || p.Max.MemoryBytes < minMemoryBytes || p.Max.Pids != DefaultMaxPids {
		t.Fatalf("derived maximums: %+v", p.Max)
	}
	if p.Default.Pids != DefaultPids || p.Default.CPUs != p.Max.CPUs || p.Default.MemoryBytes != min(DefaultMemoryBytes, p.Max.MemoryBytes) {
		t.Fatalf("derived defaults: %+v", p.Default)
	}
	// The zero policy a Manager is given without settings behaves the same.
	if (LimitPolicy{}).withHostDefaults() != p {
		t.Fatalf("zero policy: %+v, want %+v", (LimitPolicy{}).withHostDefaults(), p)
	}
	for name, s := range map[string]LimitSettings{
		"default over max": {DefaultPids: 100, MaxPids: 50},
		"too few pids":     {DefaultPids: 16},
		"memory":           {DefaultMemory: "2G", MaxMemory: "1G"},
		"cpus":             {DefaultCPUs: 3, MaxCPUs: 2},
		"NaN":              {MaxCPUs: math.NaN()},
		"bad size":         {MaxMemory: "lots"},
	} {
		if _, err := NewLimitPolicy(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCheckDevices(t *testing.T) {
	allowed := []string{"example.com/gpu=*", "example.com/fpga=0"}
	if err := checkDevices([]string{"example.com/gpu=1", "example.com/fpga=0"}, allowed, false); err != nil {
		t.Fatal(err)
	}
	err := checkDevices([]string{"example.com/gpu=1", "other.com/x=0"}, allowed, false)
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "other.com/x=0") || strings.Contains(err.Error(), "[example.com/gpu=1 ") {
		t.Fatalf("refused device: %v", err)
	}
	if err := checkDevices([]string{"other.com/x=0"}, nil, true); err != nil {
		t.Fatalf("admins may use any device: %v", err)
	}
	if err := checkDevices([]string{"example.com/gpu=1"}, nil, false); !errdefs.IsPermissionDenied(err) {
		t.Fatalf("no allowlist: %v", err)
	}
	if err := CheckDevicePatterns([]string{"example.com/gpu=["}); err == nil {
		t.Fatal("bad pattern accepted")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"": 0, "0": 0, "1024": 1024, "512M": 512 << 20, "512m": 512 << 20, "2G": 2 << 30,
		"1.5GiB": 3 << 29, "64Mi": 64 << 20, "10k": 10 << 10, "1T": 1 << 40, " 8MB ": 8 << 20,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"lots", "-1M", "1.2.3", "5X", "M", "1e400", "99999999999T"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512M", "1.5GiB", "", "x", "1e9", "0.0001K"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}
