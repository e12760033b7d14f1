package workspace

// A workspace's network: its mode (none, bridge, host), its egress policy,
// and the hooks that give a bridge workspace its namespace before its task
// starts and take it away when the task stops or the workspace goes.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/dnsproxy"
	"github.com/berth-dev/berth/internal/netpolicy"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/containerd/errdefs"
)

// Network modes of a workspace.
const (
	// NetworkNone is loopback only, the mode of workspaces made before
	// berth had networking (they carry no mode label).
	NetworkNone = "none"
	// NetworkBridge is a namespace of its own on berth's bridge, with NAT,
	// berth's DNS resolver and the egress policy.
	NetworkBridge = "bridge"
	// NetworkHost is the host's own network namespace: no isolation and no
	// policy, so only admins may choose it.
	NetworkHost = "host"
)

// NetworkModes are the modes, in the order tools list them.
var NetworkModes = []string{NetworkNone, NetworkBridge, NetworkHost}

// Labels of the network. The policy may be longer than containerd allows
// one label (4 KiB with its key), so it is split over numbered labels.
const (
	labelNetwork       = labelPrefix + "network"
	labelNetPolicy     = labelPrefix + "network-policy"
	labelNetPolicyPart = labelPrefix + "network-policy."
	labelNetPolicyN    = labelPrefix + "network-policy-parts"
	policyChunk        = 3500
)

// NetworkOptions are the network's part of Options.
type NetworkOptions struct {
	// Bridge is berth's bridge; nil when bridge mode is unavailable (then
	// BridgeUnavailable says why).
	Bridge            *network.Manager
	BridgeUnavailable string
	// DNS is the resolver bridge workspaces use; nil without Bridge.
	DNS *dnsproxy.Server
	// DefaultMode is the mode of a create that names none.
	DefaultMode string
}

// DeniedDestination is an address a workspace was refused recently.
type DeniedDestination = network.DeniedDestination

// DeniedName is a name berth's resolver refused a workspace recently.
type DeniedName = dnsproxy.DeniedName

// NetworkInfo is a workspace's network as network_get shows it.
type NetworkInfo struct {
	Mode    string `json:"mode" jsonschema:"enum=none,enum=bridge,enum=host,description=none: loopback only; bridge: own address on berth's bridge under the policy; host: the host's network"`
	IP      string `json:"ip,omitempty" jsonschema:"description=the workspace's address (bridge mode while it runs)"`
	Gateway string `json:"gateway,omitempty" jsonschema:"description=the bridge's address: default route and DNS resolver"`
	// Policy applies in bridge mode; it is kept in the other modes for
	// when the workspace returns to bridge.
	Policy             netpolicy.Policy    `json:"policy"`
	DeniedDestinations []DeniedDestination `json:"denied_destinations,omitempty" jsonschema:"description=addresses the policy refused recently\\, most attempts first"`
	DeniedNames        []DeniedName        `json:"denied_names,omitempty" jsonschema:"description=names berth's resolver refused recently\\, most recent first"`
}

// defaultPolicy is the policy of a new workspace: open egress, with the
// isolation (other workspaces, the host, cloud metadata) that holds
// whatever the policy says.
func defaultPolicy() netpolicy.Policy { return netpolicy.Policy{Default: netpolicy.Allow} }

// resolveNetworkMode checks a create's mode and fills the default.
func (m *Manager) resolveNetworkMode(mode string, allowHost bool) (string, error) {
	if mode == "" {
		mode = m.opts.Network.DefaultMode
		if mode == "" {
			mode = NetworkNone
		}
		if mode == NetworkBridge && m.opts.Network.Bridge == nil {
			mode = NetworkNone
		}
		// The operator's default stands for them; it is not the caller's ask.
		return mode, nil
	}
	return mode, m.checkNetworkMode(mode, allowHost)
}

func (m *Manager) checkNetworkMode(mode string, allowHost bool) error {
	switch mode {
	case NetworkNone:
		return nil
	case NetworkBridge:
		if m.opts.Network.Bridge == nil {
			return fmt.Errorf("%w: network bridge is unavailable on this berth (%s); use network none", errdefs.ErrFailedPrecondition,
				m.opts.Network.BridgeUnavailable)
		}
		return nil
	case NetworkHost:
		if !allowHost {
			return fmt.Errorf("%w: network host shares the host's network without isolation or policy and needs a token with the admin scope; use bridge", errdefs.ErrPermissionDenied)
		}
		return nil
	}
	return fmt.Errorf("%w: network %q is not one of %s", errdefs.ErrInvalidArgument, mode, strings.Join(NetworkModes, ", "))
}

// networkLabels are the labels that record mode and pol, with empty values
// for policy parts an earlier, longer policy left.
func networkLabels(mode string, pol netpolicy.Policy, old map[string]string) map[string]string {
	b, _ := json.Marshal(pol)
	s := string(b)
	out := map[string]string{labelNetwork: mode, labelNetPolicy: ""}
	n := 0
	for ; len(s) > 0; n++ {
		k := min(policyChunk, len(s))
		out[labelNetPolicyPart+strconv.Itoa(n)] = s[:k]
		s = s[k:]
	}
	out[labelNetPolicyN] = strconv.Itoa(n)
	for k := range old {
		if rest, ok := strings.CutPrefix(k, labelNetPolicyPart); ok {
			if i, err := strconv.Atoi(rest); err == nil && i >= n {
				out[k] = ""
			}
		}
	}
	return out
}

// networkOf reads mode and policy from a container's labels. A workspace
// without them predates networking: none, with the default policy.
func networkOf(labels map[string]string) (string, netpolicy.Policy) {
	mode := labels[labelNetwork]
	if mode == "" {
		mode = NetworkNone
	}
	raw := labels[labelNetPolicy]
	if n, err := strconv.Atoi(labels[labelNetPolicyN]); err == nil {
		var b strings.Builder
		for i := range n {
			b.WriteString(labels[labelNetPolicyPart+strconv.Itoa(i)])
		}
		raw = b.String()
	}
	pol := defaultPolicy()
	if raw != "" {
		var p netpolicy.Policy
		if err := json.Unmarshal([]byte(raw), &p); err == nil {
			if np, err := p.Normalize(); err == nil {
				pol = np
			}
		}
	}
	return mode, pol
}

// NetworkInfo describes the bot's workspace network.
func (m *Manager) NetworkInfo(ctx context.Context, bot string) (NetworkInfo, error) {
	if err := ValidateBotID(bot); err != nil {
		return NetworkInfo{}, err
	}
	ctr, err := m.container(ctx, bot)
	if err != nil {
		return NetworkInfo{}, err
	}
	mode, pol := networkOf(ctr.Labels)
	info := NetworkInfo{Mode: mode, Policy: pol}
	if br := m.opts.Network.Bridge; br != nil {
		if a, ok := br.Attached(bot); ok {
			info.IP, info.Gateway = a.IP.String(), a.Gateway.String()
			if d, err := br.Denied(bot); err == nil {
				info.DeniedDestinations = d
			} else {
				m.log.Warn("read denied destinations", "bot", bot, "err", err)
			}
		}
	}
	if dns := m.opts.Network.DNS; dns != nil {
		info.DeniedNames = dns.Denied(bot)
	}
	return info, nil
}

// SetNetworkPolicy validates and stores the bot's egress policy and applies
// it at once to a running bridge workspace (established connections go on).
// In the other modes it is kept for when the workspace is on the bridge.
// It returns the policy as stored (normalised).
func (m *Manager) SetNetworkPolicy(ctx context.Context, bot string, pol netpolicy.Policy) (netpolicy.Policy, error) {
	np, err := pol.Normalize()
	if err != nil {
		return netpolicy.Policy{}, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
	}
	mctx, done, err := m.mutate(ctx, bot, time.Minute)
	if err != nil {
		return netpolicy.Policy{}, err
	}
	defer done()
	ctr, err := m.container(mctx, bot)
	if err != nil {
		return netpolicy.Policy{}, err
	}
	mode, _ := networkOf(ctr.Labels)
	// Labels first: a berth that dies between the two re-applies the
	// labels' policy at the next attach, never an older one.
	if err := m.rt.SetLabels(mctx, bot, networkLabels(mode, np, ctr.Labels)); err != nil {
		return netpolicy.Policy{}, err
	}
	if br := m.opts.Network.Bridge; br != nil {
		if _, ok := br.Attached(bot); ok {
			if err := br.SetPolicy(bot, np); err != nil {
				return netpolicy.Policy{}, fmt.Errorf("the policy is stored but applying it failed (it applies at the next start): %w", err)
			}
		}
	}
	return np, nil
}

// SetNetworkMode changes the bot's network mode from its next start (a
// running workspace keeps its network until workspace_stop and
// workspace_start). allowHost is the caller's admin scope.
func (m *Manager) SetNetworkMode(ctx context.Context, bot, mode string, allowHost bool) error {
	if err := m.checkNetworkMode(mode, allowHost); err != nil {
		return err
	}
	mctx, done, err := m.mutate(ctx, bot, time.Minute)
	if err != nil {
		return err
	}
	defer done()
	ctr, err := m.container(mctx, bot)
	if err != nil {
		return err
	}
	_, pol := networkOf(ctr.Labels)
	return m.rt.SetLabels(mctx, bot, networkLabels(mode, pol, ctr.Labels))
}

// prepareNetwork gives a workspace whose task is about to start the
// network its labels name: a bridge workspace is attached (again, after a
// reboot) with its policy, and the container's spec is pointed at the
// namespace and resolver files. Callers hold the bot's lock.
func (m *Manager) prepareNetwork(ctx context.Context, ctr runtime.Container) error {
	mode, pol := networkOf(ctr.Labels)
	br := m.opts.Network.Bridge
	var n runtime.Network
	switch mode {
	case NetworkBridge:
		if br == nil {
			return fmt.Errorf("%w: workspace %s uses network bridge, which is unavailable on this berth (%s)", errdefs.ErrFailedPrecondition,
				ctr.ID, m.opts.Network.BridgeUnavailable)
		}
		a, err := br.Attach(ctx, ctr.ID, pol)
		if err != nil {
			return fmt.Errorf("attach workspace %s to the bridge: %w", ctr.ID, err)
		}
		resolv, hosts, err := m.writeNetFiles(ctr.ID, a.IP, a.Gateway)
		if err != nil {
			return err
		}
		n = runtime.Network{NetnsPath: a.NetnsPath, ResolvConf: resolv, Hosts: hosts}
	case NetworkHost:
		m.detachNetwork(ctx, ctr.ID)
		// The host's resolver configuration, as any host program sees it.
		n = runtime.Network{Host: true, ResolvConf: "/etc/resolv.conf"}
	default:
		// Loopback only, with the image's own files, as before networking.
		m.detachNetwork(ctx, ctr.ID)
	}
	return m.rt.SetNetwork(ctx, ctr.ID, n)
}

// detachNetwork takes the workspace off the bridge (stop, delete, a mode
// change). A failure is logged: the next attach or berth start cleans up.
func (m *Manager) detachNetwork(ctx context.Context, bot string) {
	br := m.opts.Network.Bridge
	if br == nil {
		return
	}
	if _, ok := br.Attached(bot); !ok {
		return
	}
	if err := br.Detach(ctx, bot); err != nil {
		m.log.Error("detach workspace from the bridge", "bot", bot, "err", err)
	}
}

// forgetNetwork drops everything berth keeps for a deleted workspace's network.
func (m *Manager) forgetNetwork(ctx context.Context, bot string) error {
	if br := m.opts.Network.Bridge; br != nil {
		if err := br.Detach(ctx, bot); err != nil {
			return fmt.Errorf("detach from the bridge: %w", err)
		}
	}
	if dns := m.opts.Network.DNS; dns != nil {
		dns.Forget(bot)
	}
	return os.RemoveAll(m.netDir(bot))
}

// reconcileNetwork detaches attachments whose workspace is gone (deleted
// while berth was down) and those of workspaces not running.
func (m *Manager) reconcileNetwork(ctx context.Context, ctrs []runtime.Container) {
	br := m.opts.Network.Bridge
	if br == nil {
		return
	}
	keep := map[string]bool{}
	for _, c := range ctrs {
		if mode, _ := networkOf(c.Labels); mode == NetworkBridge && (c.Status == runtime.TaskRunning || c.Status == runtime.TaskPaused) {
			keep[c.ID] = true
		}
	}
	for _, a := range br.Attachments() {
		if keep[a.ID] {
			continue
		}
		m.log.Info("detaching a workspace that is not running on the bridge", "bot", a.ID)
		if err := br.Detach(ctx, a.ID); err != nil {
			m.log.Error("detach workspace from the bridge", "bot", a.ID, "err", err)
		}
	}
}

// netDir holds a workspace's resolv.conf and hosts: outside its agent
// directory, which the workspace can write.
func (m *Manager) netDir(bot string) string { return filepath.Join(m.opts.StateDir, "netconf", bot) }

func (m *Manager) writeNetFiles(bot string, ip, gateway netip.Addr) (resolv, hosts string, err error) {
	hosts = filepath.Join(m.netDir(bot), "hosts")
	h := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" + ip.String() + "\t" + bot + "\n"
	if err := writeFileAtomic(hosts, h); err != nil {
		return "", "", err
	}
	resolv = filepath.Join(m.netDir(bot), "resolv.conf")
	// One resolver, berth's: the policy decides every name there.
	return resolv, hosts, writeFileAtomic(resolv, "nameserver "+gateway.String()+"\n")
}

// writeFileAtomic replaces path, so a running task's bind mount of the
// old file never sees half a file.
func writeFileAtomic(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
