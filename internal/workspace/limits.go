package workspace

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/containerd/errdefs"
)

// LimitPolicy is what the operator lets a workspace use. Every new
// workspace gets limits: what a request leaves zero comes from Default, and
// no request may go past Max. A workspace made before berth had limits
// keeps the (unlimited) ones it was made with.
type LimitPolicy struct {
	Default runtime.Limits
	Max     runtime.Limits
}

// Built-in defaults where the operator says nothing.
const (
	DefaultPids        = 1024
	DefaultMaxPids     = 32768
	DefaultMemoryBytes = 2 << 30
	minMemoryBytes     = 6 << 20 // runc refuses less
	minCPUs            = 0.01    // CFS needs a quota of at least 1 ms per 100 ms period
	// minPids leaves room besides the agent (berth's init in the
	// workspace), whose threads count too: it makes 16 when it starts.
	minPids              = 32
	hostMemoryUnknownCap = 1 << 40
)

// LimitSettings are the operator's settings as configured: zero or empty
// means "derive it" (see NewLimitPolicy).
type LimitSettings struct {
	DefaultPids, MaxPids     int64
	DefaultMemory, MaxMemory string // sizes such as 2G
	DefaultCPUs, MaxCPUs     float64
}

// NewLimitPolicy resolves s: the maximum memory defaults to the host's
// memory and the maximum CPUs to the host's CPUs; the default memory is
// 2 GiB and the default CPUs all of them, each capped at its maximum;
// pids default to 1024 of at most 32768.
func NewLimitPolicy(s LimitSettings) (LimitPolicy, error) {
	var p LimitPolicy
	var err error
	if p.Max.MemoryBytes, err = ParseSize(s.MaxMemory); err != nil {
		return p, fmt.Errorf("--max-memory: %w", err)
	}
	if p.Default.MemoryBytes, err = ParseSize(s.DefaultMemory); err != nil {
		return p, fmt.Errorf("--default-memory: %w", err)
	}
	p.Max.CPUs, p.Default.CPUs = s.MaxCPUs, s.DefaultCPUs
	p.Max.Pids, p.Default.Pids = s.MaxPids, s.DefaultPids
	for name, v := range map[string]float64{"--max-cpus": s.MaxCPUs, "--default-cpus": s.DefaultCPUs} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return p, fmt.Errorf("%s must be a positive number of cores, got %v", name, v)
		}
	}
	if s.MaxPids < 0 || s.DefaultPids < 0 {
		return p, fmt.Errorf("--max-pids and --default-pids must not be negative")
	}
	if (s.MaxPids > 0 && s.MaxPids < minPids) || (s.DefaultPids > 0 && s.DefaultPids < minPids) {
		return p, fmt.Errorf("--max-pids and --default-pids must be at least %d: the agent, berth's init in each workspace, keeps 16 threads of the limit", minPids)
	}
	explicit := p.Default
	p = p.withHostDefaults()
	switch {
	case explicit.Pids > p.Max.Pids:
		return p, fmt.Errorf("--default-pids %d is more than --max-pids %d", explicit.Pids, p.Max.Pids)
	case explicit.MemoryBytes > p.Max.MemoryBytes:
		return p, fmt.Errorf("--default-memory %s is more than --max-memory %s", humanBytes(explicit.MemoryBytes), humanBytes(p.Max.MemoryBytes))
	case explicit.CPUs > p.Max.CPUs:
		return p, fmt.Errorf("--default-cpus %g is more than --max-cpus %g", explicit.CPUs, p.Max.CPUs)
	case p.Max.MemoryBytes < minMemoryBytes || p.Max.CPUs < minCPUs:
		return p, fmt.Errorf("--max-memory must be at least 6 MiB and --max-cpus at least %g", minCPUs)
	}
	return p, nil
}

// withHostDefaults fills what p leaves zero from the host and the built-in
// defaults; a derived default never exceeds its maximum.
func (p LimitPolicy) withHostDefaults() LimitPolicy {
	if p.Max.Pids == 0 {
		p.Max.Pids = max(DefaultMaxPids, p.Default.Pids)
	}
	if p.Max.MemoryBytes == 0 {
		p.Max.MemoryBytes = max(hostMemory(), p.Default.MemoryBytes)
	}
	if p.Max.CPUs == 0 {
		p.Max.CPUs = max(float64(goruntime.NumCPU()), p.Default.CPUs)
	}
	if p.Default.Pids == 0 {
		p.Default.Pids = min(DefaultPids, p.Max.Pids)
	}
	if p.Default.MemoryBytes == 0 {
		p.Default.MemoryBytes = min(DefaultMemoryBytes, p.Max.MemoryBytes)
	}
	if p.Default.CPUs == 0 {
		p.Default.CPUs = p.Max.CPUs
	}
	return p
}

// Resolve gives the limits a new workspace gets for what a request asks:
// zero fields take the default; a value past the maximum, negative, not a
// finite number, or too small to run is refused, naming the bound.
func (p LimitPolicy) Resolve(req runtime.Limits) (runtime.Limits, error) {
	bad := func(format string, args ...any) (runtime.Limits, error) {
		return runtime.Limits{}, fmt.Errorf("%w: "+format, append([]any{errdefs.ErrInvalidArgument}, args...)...)
	}
	switch c := req.CPUs; {
	case math.IsNaN(c) || math.IsInf(c, 0):
		return bad("cpus must be a finite number of cores, got %v", c)
	case c < 0:
		return bad("cpus must not be negative, got %g", c)
	case c > p.Max.CPUs:
		return bad("cpus %g is more than the maximum of %g that berth allows (--max-cpus)", c, p.Max.CPUs)
	case c > 0 && c < minCPUs:
		return bad("cpus %g is less than the minimum of %g", c, minCPUs)
	}
	switch m := req.MemoryBytes; {
	case m < 0:
		return bad("memory must not be negative")
	case m > p.Max.MemoryBytes:
		return bad("memory %s is more than the maximum of %s that berth allows (--max-memory)", humanBytes(m), humanBytes(p.Max.MemoryBytes))
	case m > 0 && m < minMemoryBytes:
		return bad("memory limit must be at least 6 MiB")
	}
	switch n := req.Pids; {
	case n < 0:
		return bad("pids must not be negative, got %d", n)
	case n > p.Max.Pids:
		return bad("pids %d is more than the maximum of %d that berth allows (--max-pids)", n, p.Max.Pids)
	case n > 0 && n < minPids:
		return bad("pids %d is less than the minimum of %d (the agent, berth's init in the workspace, keeps 16 threads of the limit)", n, minPids)
	}
	out := req
	if out.CPUs == 0 {
		out.CPUs = p.Default.CPUs
	}
	if out.MemoryBytes == 0 {
		out.MemoryBytes = p.Default.MemoryBytes
	}
	if out.Pids == 0 {
		out.Pids = p.Default.Pids
	}
	return out, nil
}

// hostMemory is the host's total memory in bytes, from /proc/meminfo.
func hostMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return hostMemoryUnknownCap
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			if kb, err := strconv.ParseInt(fields[1], 10, 64); err == nil && kb > 0 {
				return kb << 10
			}
		}
	}
	return hostMemoryUnknownCap
}

// ParseSize reads sizes like "512M", "2G", "1.5GiB" or "1048576" as bytes
// (binary units, as docker and Kubernetes' Mi/Gi); empty is 0.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	num := strings.TrimRightFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	unit := strings.ToUpper(strings.TrimSpace(s[len(num):]))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
	sh, ok := shift[unit]
	v, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || v < 0 || math.IsInf(v, 0) {
		return 0, fmt.Errorf("size %q: use a number with an optional unit K, M, G or T (e.g. 512M)", s)
	}
	bytes := v * float64(uint64(1)<<sh)
	if bytes > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(bytes), nil
}

// checkDevices refuses CDI devices that the allowlist does not match,
// unless the caller may use any device (admins).
func checkDevices(devices, allowed []string, anyDevice bool) error {
	if anyDevice {
		return nil
	}
	var refused []string
	for _, d := range devices {
		if !deviceAllowed(d, allowed) {
			refused = append(refused, d)
		}
	}
	if len(refused) == 0 {
		return nil
	}
	if len(allowed) == 0 {
		return fmt.Errorf("%w: device(s) %v: berth allows no devices to tokens without the admin scope (the operator can list some in --allowed-devices)", errdefs.ErrPermissionDenied, refused)
	}
	return fmt.Errorf("%w: device(s) %v are not in berth's --allowed-devices %v (tokens with the admin scope may use any)", errdefs.ErrPermissionDenied, refused, allowed)
}

// deviceAllowed matches a CDI name (vendor/class=name) against patterns
// such as "example.com/gpu=*" (path.Match syntax).
func deviceAllowed(device string, patterns []string) bool {
	for _, p := range patterns {
		if ok, err := path.Match(p, device); err == nil && ok {
			return true
		}
	}
	return false
}

// CheckDevicePatterns says whether every --allowed-devices pattern is valid.
func CheckDevicePatterns(patterns []string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("--allowed-devices: pattern %q: %w", p, err)
		}
	}
	return nil
}
