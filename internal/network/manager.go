package network

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/internal/netpolicy"
)

// ErrNotAttached is returned for a workspace that has no attachment.
var ErrNotAttached = errors.New("network: workspace is not attached")

// Attachment is one workspace's place on the bridge.
type Attachment struct {
	ID string `json:"id"`
	// NetnsPath is the namespace to put into the container's spec
	// (a "network" namespace with this path).
	NetnsPath string     `json:"netns_path"`
	IP        netip.Addr `json:"ip"`
	// Gateway is the bridge's address: the default route, and where berth's
	// DNS resolver listens for the workspace.
	Gateway   netip.Addr `json:"gateway"`
	PrefixLen int        `json:"prefix_len"`
	// HostVeth is the host's end of the workspace's veth pair.
	HostVeth string           `json:"host_veth"`
	MAC      string           `json:"mac,omitempty"`
	Policy   netpolicy.Policy `json:"policy"`
}

// DeniedDestination is a destination a workspace was refused recently.
type DeniedDestination struct {
	Addr netip.Addr `json:"addr"`
	// Proto is "tcp", "udp", "icmp" or the protocol number.
	Proto string `json:"proto"`
	// Port is the destination port (0 for protocols without ports).
	Port uint16 `json:"port,omitempty"`
	// Packets counts the dropped packets (a connection attempt retried by
	// TCP counts once per SYN).
	Packets uint64 `json:"packets"`
	// LastSeen is when the last one was dropped, to the second.
	LastSeen time.Time `json:"last_seen"`
}

// Manager owns berth's bridge, its nftables tables and the attachments.
// Its methods are safe for concurrent use; calls for one workspace are
// serialized.
type Manager struct {
	cfg    Config
	cni    *cniNet
	tables *tables
	log    *slog.Logger

	// mu guards atts and serializes nftables batches, which are short; the
	// slow parts of Attach and Detach (CNI plugins) run under the
	// workspace's own lock only, so a starting workspace never delays
	// AllowResolved on the DNS path.
	mu   sync.Mutex
	atts map[string]*Attachment

	idMu    sync.Mutex
	idLocks map[string]*sync.Mutex
}

// New sets up berth's bridge, enables IPv4 forwarding, installs the
// bridge-level rules and re-adopts the attachments recorded under the state
// directory, all without disturbing running workspaces: their namespaces,
// veths, addresses, policies and DNS-opened addresses stay as they are.
// Attachments whose namespace is gone (after a reboot) are cleaned up, IPAM
// allocation included; the caller attaches those workspaces again.
func New(cfg Config) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.netnsDir(), cfg.recordDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
	}
	cn, err := newCNI(cfg)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, cni: cn, tables: newTables(cfg), log: slog.Default().With("component", "network"),
		atts: map[string]*Attachment{}, idLocks: map[string]*sync.Mutex{}}
	if err := m.ensureBridge(); err != nil {
		return nil, err
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		return nil, fmt.Errorf("network: enable IPv4 forwarding: %w", err)
	}

	records, err := m.readRecords()
	if err != nil {
		return nil, err
	}
	var live, stale []*Attachment
	for _, a := range records {
		if !netnsAlive(a.NetnsPath) {
			stale = append(stale, a)
			continue
		}
		if l, err := netlink.LinkByName(a.HostVeth); err != nil || l.Attrs().MasterIndex == 0 {
			stale = append(stale, a)
			continue
		}
		live = append(live, a)
	}

	m.mu.Lock()
	err = m.nftBatch(func(c *nftables.Conn, present objects) error {
		if err := m.tables.base(c); err != nil {
			return err
		}
		// Refill the shared sets from the records: the batch is atomic, so
		// no packet sees them empty, and entries of workspaces that are gone
		// disappear.
		c.FlushSet(m.tables.wsAddrSet())
		c.FlushSet(m.tables.boundSet())
		c.FlushSet(m.tables.portsSet())
		keep := map[string]bool{}
		for _, a := range live {
			pol, err := compile(a.Policy)
			if err != nil {
				return fmt.Errorf("network: recorded policy of %s: %w", a.ID, err)
			}
			if err := m.tables.workspace(c, a.ID, a.IP, a.HostVeth, pol, false); err != nil {
				return err
			}
			keep[a.ID] = true
		}
		for _, id := range present.workspaceIDs() {
			if !keep[id] {
				if err := m.tables.removeWorkspace(c, id, netip.Addr{}, "", present); err != nil {
					return err
				}
			}
		}
		return nil
	})
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	for _, a := range live {
		if err := isolate(a.HostVeth); err != nil {
			return nil, err
		}
		m.atts[a.ID] = a
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, a := range stale {
		m.log.Info("cleaning up a stale network attachment", "id", a.ID, "netns", a.NetnsPath)
		if err := m.release(ctx, a.ID, a); err != nil {
			m.log.Warn("stale network attachment not fully cleaned up", "id", a.ID, "err", err)
		}
	}
	return m, nil
}

// Gateway is the bridge's address, where berth's DNS resolver should listen.
func (m *Manager) Gateway() netip.Addr { return m.cfg.gateway() }

// Subnet is the prefix workspaces get their addresses from.
func (m *Manager) Subnet() netip.Prefix { return m.cfg.Subnet }

// Bridge is the bridge's interface name.
func (m *Manager) Bridge() string { return m.cfg.Bridge }

func (m *Manager) lockID(id string) func() {
	m.idMu.Lock()
	l, ok := m.idLocks[id]
	if !ok {
		l = &sync.Mutex{}
		m.idLocks[id] = l
	}
	m.idMu.Unlock()
	l.Lock()
	return l.Unlock
}

// Attach gives workspace id a network namespace on the bridge with policy
// pol. Attaching an attached workspace only applies pol. The namespace,
// address and rules are ready when Attach returns; nothing in them runs
// until the caller starts a process in the namespace.
func (m *Manager) Attach(ctx context.Context, id string, pol netpolicy.Policy) (Attachment, error) {
	if err := validID(id); err != nil {
		return Attachment{}, err
	}
	cp, err := compile(pol)
	if err != nil {
		return Attachment{}, err
	}
	defer m.lockID(id)()
	if a, ok := m.Attached(id); ok {
		if netnsAlive(a.NetnsPath) {
			return m.setPolicy(id, pol, cp)
		}
		// The namespace died under us (an unmount by hand): start over.
		if err := m.release(ctx, id, &a); err != nil {
			return Attachment{}, err
		}
	}
	// Half-done setup must be undone even when the caller gives up.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()

	path := filepath.Join(m.cfg.netnsDir(), id)
	if _, err := os.Lstat(path); err == nil {
		// Left by a crash between creating the namespace and recording it.
		if err := m.release(ctx, id, nil); err != nil {
			return Attachment{}, err
		}
	}
	if err := createNetns(path); err != nil {
		return Attachment{}, fmt.Errorf("network: %w", err)
	}
	a := &Attachment{ID: id, NetnsPath: path, Policy: pol, PrefixLen: m.cfg.Subnet.Bits()}
	fail := func(err error) (Attachment, error) {
		if rerr := m.release(ctx, id, a); rerr != nil {
			err = errors.Join(err, fmt.Errorf("network: undoing the attach: %w", rerr))
		}
		return Attachment{}, err
	}
	res, err := m.cni.add(ctx, id, path, m.cfg.Bridge)
	if err != nil {
		return fail(err)
	}
	a.IP, a.Gateway, a.HostVeth, a.MAC = res.IP, res.Gateway, res.HostVeth, res.MAC
	if !a.Gateway.IsValid() {
		a.Gateway = m.cfg.gateway()
	}
	if err := isolate(a.HostVeth); err != nil {
		return fail(err)
	}
	m.mu.Lock()
	err = m.nftBatch(func(c *nftables.Conn, _ objects) error {
		return m.tables.workspace(c, id, a.IP, a.HostVeth, cp, true)
	})
	if err == nil {
		err = m.writeRecord(a)
	}
	if err == nil {
		m.atts[id] = a
	}
	m.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	return *a, nil
}

// Detach undoes Attach: rules, sets, the veth pair, the IPAM allocation,
// the namespace and the record. Detaching a workspace that is not attached,
// or half attached, succeeds and removes whatever is left.
func (m *Manager) Detach(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	defer m.lockID(id)()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	m.mu.Lock()
	a := m.atts[id]
	m.mu.Unlock()
	if a == nil {
		a, _ = m.readRecord(id)
	}
	return m.release(ctx, id, a)
}

// release removes everything of id that exists; a (possibly nil) is what is
// known of it. Every step runs even when an earlier one failed, and the
// record stays until all succeeded, so that a later Detach can finish.
func (m *Manager) release(ctx context.Context, id string, a *Attachment) error {
	var ip netip.Addr
	var veth string
	path := filepath.Join(m.cfg.netnsDir(), id)
	if a != nil {
		ip, veth = a.IP, a.HostVeth
		if a.NetnsPath != "" {
			path = a.NetnsPath
		}
	}
	var errs []error
	m.mu.Lock()
	errs = append(errs, m.nftBatch(func(c *nftables.Conn, present objects) error {
		if !ip.IsValid() {
			// No record: find the address by the chain its map entry jumps to.
			for addr, chain := range present.wsAddrTarget {
				if chain == wsChain(id) {
					ip = addr
				}
			}
		}
		return m.tables.removeWorkspace(c, id, ip, veth, present)
	}))
	m.mu.Unlock()
	// The plugins clean up inside the namespace when it is alive; a path
	// that is a plain file (its mount gone with a reboot) would make them
	// fail, so such a file goes first and they see no namespace at all.
	if !netnsAlive(path) {
		errs = append(errs, removeNetns(path))
		errs = append(errs, m.cni.del(ctx, id, path))
	} else {
		errs = append(errs, m.cni.del(ctx, id, path))
		errs = append(errs, removeNetns(path))
	}
	err := errors.Join(errs...)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		if rerr := os.Remove(m.recordPath(id)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = fmt.Errorf("network: %w", rerr)
		}
		delete(m.atts, id)
	}
	return err
}

// Attached reports workspace id's attachment, if it has one.
func (m *Manager) Attached(id string) (Attachment, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.atts[id]
	if !ok {
		return Attachment{}, false
	}
	return *a, true
}

// Attachments lists every attachment, sorted by ID.
func (m *Manager) Attachments() []Attachment {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Attachment, 0, len(m.atts))
	for _, a := range m.atts {
		out = append(out, *a)
	}
	slices.SortFunc(out, func(a, b Attachment) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// SetPolicy replaces workspace id's policy atomically. Addresses opened by
// AllowResolved are closed (the resolver opens them again under the new
// policy); established connections continue.
func (m *Manager) SetPolicy(id string, pol netpolicy.Policy) error {
	cp, err := compile(pol)
	if err != nil {
		return err
	}
	_, err = m.setPolicy(id, pol, cp)
	return err
}

func (m *Manager) setPolicy(id string, pol netpolicy.Policy, cp compiled) (Attachment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.atts[id]
	if !ok {
		return Attachment{}, fmt.Errorf("%w: %s", ErrNotAttached, id)
	}
	if err := m.nftBatch(func(c *nftables.Conn, _ objects) error {
		return m.tables.workspace(c, id, a.IP, a.HostVeth, cp, true)
	}); err != nil {
		return Attachment{}, err
	}
	next := *a
	next.Policy = pol
	if err := m.writeRecord(&next); err != nil {
		return Attachment{}, err
	}
	m.atts[id] = &next
	return next, nil
}

// AllowResolved opens addrs, the answer of a DNS query that the policy
// allows, to workspace id on every port for ttl (at least the configured
// minimum). An address already open stays open for the longer of its
// remaining time and ttl. Deny rules still win; IPv6 addresses (workspaces
// have no IPv6) and cloud metadata addresses are ignored.
func (m *Manager) AllowResolved(id string, addrs []netip.Addr, ttl time.Duration) error {
	return m.OpenResolved(id, addrs, netpolicy.AllPorts, ttl)
}

// maxResolvedPorts bounds the ports one OpenResolved call opens one by one.
const maxResolvedPorts = 1024

// OpenResolved is AllowResolved limited to ports (netpolicy.Policy's
// DomainPorts for the name): the signature of dnsproxy.Config.Open, less the
// error. Port sets other than all ports are opened port by port, so a set of
// more than 1024 ports is refused (nothing is opened) rather than widened.
func (m *Manager) OpenResolved(id string, addrs []netip.Addr, ports netpolicy.PortSet, ttl time.Duration) error {
	ttl = max(ttl, m.cfg.MinResolvedTTL)
	ttl = min(ttl, 24*time.Hour)
	var v4 []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() && a != metadataV4 && !slices.Contains(v4, a) {
			v4 = append(v4, a)
		}
	}
	if len(v4) == 0 || len(ports) == 0 {
		return nil
	}
	var set *nftables.Set
	var keys [][]byte
	if ports.All() {
		set = m.tables.dnsSet(id)
		for _, a := range v4 {
			k := a.As4()
			keys = append(keys, k[:])
		}
	} else {
		n := 0
		for _, r := range ports {
			n += int(r.Hi) - int(r.Lo) + 1
		}
		if n > maxResolvedPorts {
			return fmt.Errorf("network: %d ports are too many to open one by one (at most %d); give the rule fewer ports or all", n, maxResolvedPorts)
		}
		set = m.tables.dnsPortSet(id)
		for _, a := range v4 {
			for _, r := range ports {
				for p := int(r.Lo); p <= int(r.Hi); p++ {
					if p > 0 {
						keys = append(keys, addrPortKey(a, uint16(p)))
					}
				}
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.atts[id]; !ok {
		return fmt.Errorf("%w: %s", ErrNotAttached, id)
	}
	var err error
	// An element may expire between reading and the batch, which then
	// fails for the deletion of a missing element: once more settles it.
	for range 2 {
		if err = m.nftBatch(func(c *nftables.Conn, _ objects) error { return openUntil(c, set, keys, ttl) }); err == nil {
			return nil
		}
	}
	return err
}

// openUntil adds keys to set with timeout ttl, keeping any that is already
// there for longer.
func openUntil(c *nftables.Conn, set *nftables.Set, keys [][]byte, ttl time.Duration) error {
	cur, err := c.GetSetElements(set)
	if err != nil {
		return fmt.Errorf("read %s: %w", set.Name, err)
	}
	expires := map[string]time.Duration{}
	for _, e := range cur {
		expires[string(e.Key)] = e.Expires
	}
	var del, add []nftables.SetElement
	for _, k := range keys {
		left, open := expires[string(k)]
		if open && left >= ttl {
			continue
		}
		if open {
			// Re-adding an element keeps its old timeout on kernels before
			// 6.10, so replace it.
			del = append(del, nftables.SetElement{Key: k})
		}
		add = append(add, nftables.SetElement{Key: k, Timeout: ttl})
	}
	if len(del) > 0 {
		if err := c.SetDeleteElements(set, del); err != nil {
			return err
		}
	}
	if len(add) > 0 {
		return c.SetAddElements(set, add)
	}
	return nil
}

// ByAddr finds the attachment that has address a: the DNS resolver's
// Lookup of a query's source.
func (m *Manager) ByAddr(a netip.Addr) (Attachment, bool) {
	a = a.Unmap()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, at := range m.atts {
		if at.IP == a {
			return *at, true
		}
	}
	return Attachment{}, false
}

// Denied lists the destinations workspace id was refused within the
// configured DeniedTTL, most attempts first.
func (m *Manager) Denied(id string) ([]DeniedDestination, error) {
	m.mu.Lock()
	_, ok := m.atts[id]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotAttached, id)
	}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("network: nftables: %w", err)
	}
	els, err := c.GetSetElements(m.tables.deniedSet(id))
	if err != nil {
		return nil, fmt.Errorf("network: read denied destinations of %s: %w", id, err)
	}
	now := time.Now()
	out := make([]DeniedDestination, 0, len(els))
	for _, e := range els {
		if len(e.Key) < 12 {
			continue
		}
		a, _ := netip.AddrFromSlice(e.Key[0:4])
		d := DeniedDestination{Addr: a, Proto: protoName(e.Key[4]), Port: uint16(e.Key[8])<<8 | uint16(e.Key[9])}
		if e.Counter != nil {
			d.Packets = e.Counter.Packets
		}
		// Each drop refreshes the element's timeout, so its age is the
		// time since the last drop.
		if e.Timeout > 0 {
			d.LastSeen = now.Add(e.Expires - e.Timeout).Truncate(time.Second)
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(x, y DeniedDestination) int {
		if c := cmp.Compare(y.Packets, x.Packets); c != 0 {
			return c
		}
		if c := x.Addr.Compare(y.Addr); c != 0 {
			return c
		}
		return cmp.Compare(x.Port, y.Port)
	})
	return out, nil
}

func protoName(p byte) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1:
		return "icmp"
	}
	return fmt.Sprint(p)
}

// Teardown detaches every workspace and removes berth's tables and bridge:
// for uninstalling and for tests. A Manager is unusable afterwards.
func (m *Manager) Teardown(ctx context.Context) error {
	var errs []error
	for _, a := range m.Attachments() {
		errs = append(errs, m.Detach(ctx, a.ID))
	}
	m.mu.Lock()
	errs = append(errs, m.nftBatch(func(c *nftables.Conn, present objects) error {
		if present.tableInet {
			c.DelTable(m.tables.inet)
		}
		if present.tableBridge {
			c.DelTable(m.tables.bridge)
		}
		return nil
	}))
	m.mu.Unlock()
	if l, err := netlink.LinkByName(m.cfg.Bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("network: delete bridge %s: %w", m.cfg.Bridge, err))
		}
	}
	return errors.Join(errs...)
}

// nftBatch runs fn on a fresh connection with what exists now, then sends
// fn's batch, which the kernel applies all or nothing. Callers hold m.mu.
func (m *Manager) nftBatch(fn func(c *nftables.Conn, present objects) error) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	present, err := m.tables.list(c)
	if err != nil {
		return err
	}
	if err := fn(c, present); err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	return nil
}

// ensureBridge makes the bridge with the gateway address before any
// workspace attaches, so that the DNS resolver can listen on the gateway
// from the start. The bridge plugin adopts it as it is.
func (m *Manager) ensureBridge() error {
	gw := netip.PrefixFrom(m.cfg.gateway(), m.cfg.Subnet.Bits())
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("network: list links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().Name == m.cfg.Bridge {
			continue
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			p, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ones, _ := a.Mask.Size()
			if other := netip.PrefixFrom(p.Unmap(), ones).Masked(); other.Overlaps(m.cfg.Subnet) {
				return fmt.Errorf("network: subnet %s overlaps %s on %s; choose another subnet", m.cfg.Subnet, other, l.Attrs().Name)
			}
		}
	}
	l, err := netlink.LinkByName(m.cfg.Bridge)
	if err != nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: m.cfg.Bridge}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("network: create bridge %s: %w", m.cfg.Bridge, err)
		}
		if l, err = netlink.LinkByName(m.cfg.Bridge); err != nil {
			return fmt.Errorf("network: bridge %s: %w", m.cfg.Bridge, err)
		}
	} else if l.Type() != "bridge" {
		return fmt.Errorf("network: %s exists and is a %s, not a bridge", m.cfg.Bridge, l.Type())
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("network: addresses of %s: %w", m.cfg.Bridge, err)
	}
	has := false
	for _, a := range addrs {
		p, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if p.Unmap() == gw.Addr() && ones == gw.Bits() {
			has = true
		}
	}
	if !has {
		addr, _ := netlink.ParseAddr(gw.String())
		if err := netlink.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("network: address %s on %s: %w", gw, m.cfg.Bridge, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("network: bring up %s: %w", m.cfg.Bridge, err)
	}
	return nil
}

// isolate sets the bridge port's isolated flag: isolated ports exchange no
// frames with each other, only with the bridge (the host).
func isolate(veth string) error {
	l, err := netlink.LinkByName(veth)
	if err != nil {
		return fmt.Errorf("network: host veth %s: %w", veth, err)
	}
	if err := netlink.LinkSetIsolated(l, true); err != nil {
		return fmt.Errorf("network: isolate bridge port %s: %w", veth, err)
	}
	return nil
}

// --- records -----------------------------------------------------------------

func (m *Manager) recordPath(id string) string {
	return filepath.Join(m.cfg.recordDir(), id+".json")
}

func (m *Manager) writeRecord(a *Attachment) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(m.recordPath(a.ID), b)
}

func (m *Manager) readRecord(id string) (*Attachment, error) {
	b, err := os.ReadFile(m.recordPath(id))
	if err != nil {
		return nil, err
	}
	var a Attachment
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("network: record of %s: %w", id, err)
	}
	if a.ID != id {
		return nil, fmt.Errorf("network: record %s names %q", m.recordPath(id), a.ID)
	}
	return &a, nil
}

func (m *Manager) readRecords() ([]*Attachment, error) {
	ents, err := os.ReadDir(m.cfg.recordDir())
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	var out []*Attachment
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || validID(id) != nil {
			continue
		}
		a, err := m.readRecord(id)
		if err != nil {
			// A record berth cannot read names nothing it can adopt; the
			// workspace will be attached anew.
			m.log.Warn("ignoring an unreadable network record", "id", id, "err", err)
			continue
		}
		out = append(out, a)
	}
	return out, nil
}
