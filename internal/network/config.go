package network

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"
)

// Config is what New needs. The zero value of each field but StateDir means
// its default.
type Config struct {
	// Bridge is the name of berth's bridge (default "berth0"). It also names
	// berth's nftables tables ("berth-<bridge>") and CNI network, so two
	// berth instances on one host need two bridges and two subnets.
	Bridge string
	// Subnet is the IPv4 prefix workspaces get addresses from (default
	// 10.213.0.0/16). Its first address is the gateway, on the bridge.
	Subnet netip.Prefix
	// PluginDirs are searched for the CNI plugins (default Debian's
	// /usr/lib/cni, then /opt/cni/bin).
	PluginDirs []string
	// StateDir is berth's state directory; this package keeps everything
	// under StateDir/network: CNI configuration, CNI cache, IPAM allocations,
	// namespace bind mounts and one record per attachment.
	StateDir string
	// DeniedTTL is how long a denied destination stays in Denied after its
	// last attempt (default 1h).
	DeniedTTL time.Duration
	// DeniedMax bounds the denied destinations kept per workspace (default
	// 1024); when full, new ones are still dropped but not recorded.
	DeniedMax uint32
	// MinResolvedTTL is the shortest time AllowResolved opens an address for
	// (default 5s), so that answers with TTL 0 still let the client connect.
	MinResolvedTTL time.Duration
}

const (
	defaultBridge    = "berth0"
	defaultDeniedTTL = time.Hour
	defaultDeniedMax = 1024
	defaultMinTTL    = 5 * time.Second
)

var defaultSubnet = netip.MustParsePrefix("10.213.0.0/16")

func (c Config) withDefaults() (Config, error) {
	if c.Bridge == "" {
		c.Bridge = defaultBridge
	}
	if !c.Subnet.IsValid() {
		c.Subnet = defaultSubnet
	}
	if len(c.PluginDirs) == 0 {
		c.PluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}
	}
	if c.DeniedTTL <= 0 {
		c.DeniedTTL = defaultDeniedTTL
	}
	if c.DeniedMax == 0 {
		c.DeniedMax = defaultDeniedMax
	}
	if c.MinResolvedTTL <= 0 {
		c.MinResolvedTTL = defaultMinTTL
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		return c, fmt.Errorf("network: StateDir must be an absolute path, got %q", c.StateDir)
	}
	// Interface names are at most 15 bytes; the name also goes into nftables
	// rules compared byte for byte, so keep it to plain characters.
	if len(c.Bridge) > 15 || !validName(c.Bridge) {
		return c, fmt.Errorf("network: bridge name %q must be 1-15 letters, digits, '-' or '_'", c.Bridge)
	}
	if !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 29 || c.Subnet.Bits() < 8 {
		return c, errors.New("network: subnet must be an IPv4 prefix from /8 to /29, such as 10.213.0.0/16")
	}
	c.Subnet = c.Subnet.Masked()
	return c, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// validID keeps workspace IDs to what can name files, CNI containers and
// nftables chains without escaping.
func validID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("network: workspace id %q must be 1-128 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("network: workspace id %q may hold only letters, digits, '-', '_' and '.'", id)
		}
	}
	if id == "." || id == ".." {
		return fmt.Errorf("network: workspace id %q is not allowed", id)
	}
	return nil
}

// gateway is the subnet's first address, which the bridge holds.
func (c Config) gateway() netip.Addr { return c.Subnet.Addr().Next() }

func (c Config) dir() string         { return filepath.Join(c.StateDir, "network") }
func (c Config) netnsDir() string    { return filepath.Join(c.dir(), "netns") }
func (c Config) recordDir() string   { return filepath.Join(c.dir(), "attachments") }
func (c Config) cniCacheDir() string { return filepath.Join(c.dir(), "cni-cache") }
func (c Config) ipamDir() string     { return filepath.Join(c.dir(), "ipam") }
func (c Config) tableName() string   { return "berth-" + c.Bridge }
