package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// containerIface is the workspace's interface inside its namespace.
const containerIface = "eth0"

// cniNet runs Debian's CNI plugins with berth's own configuration, cache and
// IPAM directories. It uses libcni, the library go-cni wraps, because go-cni
// offers no way to move libcni's result cache out of /var/lib/cni, which
// belongs to the host's other CNI users.
type cniNet struct {
	cni    *libcni.CNIConfig
	bridge *libcni.NetworkConfigList
	lo     *libcni.NetworkConfigList
}

func newCNI(cfg Config) (*cniNet, error) {
	for _, dir := range []string{cfg.cniCacheDir(), cfg.ipamDir(), filepath.Join(cfg.dir(), "cni")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
	}
	gw := cfg.gateway()
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       cfg.tableName(),
		"plugins": []any{map[string]any{
			"type":   "bridge",
			"bridge": cfg.Bridge,
			// The gateway lives on the bridge; masquerading is berth's own
			// nftables rule, since the plugin's ipMasq needs iptables.
			"isGateway":   true,
			"ipMasq":      false,
			"hairpinMode": false,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": cfg.ipamDir(),
				"ranges": [][]map[string]string{{{
					"subnet":  cfg.Subnet.String(),
					"gateway": gw.String(),
				}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
			},
		}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, err
	}
	bridge, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("network: CNI config: %w", err)
	}
	lo, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"berth-loopback","plugins":[{"type":"loopback"}]}`))
	if err != nil {
		return nil, fmt.Errorf("network: CNI loopback config: %w", err)
	}
	// Written for people who look; berth itself uses the bytes above, so a
	// stale or edited file never changes what it does.
	if err := writeFileAtomic(filepath.Join(cfg.dir(), "cni", cfg.tableName()+".conflist"), b); err != nil {
		return nil, err
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if !pluginExists(cfg.PluginDirs, plugin) {
			return nil, fmt.Errorf("network: CNI plugin %q not found in %v: install Debian's containernetworking-plugins (scripts/containerd.sh install) or set the plugin dirs", plugin, cfg.PluginDirs)
		}
	}
	return &cniNet{
		cni:    libcni.NewCNIConfigWithCacheDir(cfg.PluginDirs, cfg.cniCacheDir(), nil),
		bridge: bridge,
		lo:     lo,
	}, nil
}

func pluginExists(dirs []string, name string) bool {
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, name)); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return true
		}
	}
	return false
}

// cniResult is what berth keeps of an ADD.
type cniResult struct {
	IP       netip.Addr
	Gateway  netip.Addr
	HostVeth string
	MAC      string
}

func (c *cniNet) add(ctx context.Context, id, netns, bridge string) (cniResult, error) {
	if _, err := c.cni.AddNetworkList(ctx, c.lo, &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: "lo"}); err != nil {
		return cniResult{}, fmt.Errorf("network: CNI loopback ADD: %w", err)
	}
	r, err := c.cni.AddNetworkList(ctx, c.bridge, &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: containerIface})
	if err != nil {
		return cniResult{}, fmt.Errorf("network: CNI bridge ADD: %w", err)
	}
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return cniResult{}, fmt.Errorf("network: CNI result: %w", err)
	}
	var out cniResult
	for _, ifc := range res.Interfaces {
		switch {
		case ifc.Sandbox != "" && ifc.Name == containerIface:
			out.MAC = ifc.Mac
		case ifc.Sandbox == "" && ifc.Name != bridge:
			out.HostVeth = ifc.Name
		}
	}
	for _, ipc := range res.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok || !a.Unmap().Is4() {
			continue
		}
		out.IP = a.Unmap()
		if g, ok := netip.AddrFromSlice(ipc.Gateway); ok {
			out.Gateway = g.Unmap()
		}
		break
	}
	if !out.IP.IsValid() || out.HostVeth == "" {
		return out, fmt.Errorf("network: CNI bridge ADD returned no IPv4 address or host interface: %+v", res)
	}
	return out, nil
}

// del releases what add made: the veth pair and the IPAM allocation. The
// plugins tolerate a namespace that no longer exists (after a reboot), and
// host-local releases by container ID, so this also cleans up stale state.
func (c *cniNet) del(ctx context.Context, id, netns string) error {
	rt := func(ifname string) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: ifname}
	}
	return errors.Join(
		wrap("CNI bridge DEL", c.cni.DelNetworkList(ctx, c.bridge, rt(containerIface))),
		wrap("CNI loopback DEL", c.cni.DelNetworkList(ctx, c.lo, rt("lo"))),
	)
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("network: %s: %w", what, err)
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("network: %w", err)
	}
	return nil
}
