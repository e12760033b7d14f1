package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// berth's nftables layout, in two tables named after the bridge so that
// nothing else's rules are touched and two berths on one host stay apart:
//
//	table inet berth-<bridge>
//	  map workspaces    ipv4_addr : verdict   workspace address -> jump ws_<id>
//	  chain forward     (hook forward) established/related accept; bridge to
//	                    bridge drop; from the bridge: vmap @workspaces, else drop;
//	                    to the bridge (new from elsewhere): drop
//	  chain input       (hook input) from the bridge only DNS to the gateway
//	  chain postrouting (nat) masquerade the subnet out of any other interface
//	  chain ws_<id>     the workspace's policy: deny rules, explicitly allowed
//	                    metadata, metadata drop, allow rules, @dns_<id>, default
//	  chain drop_<id>   records the destination in @denied_<id>, then drops
//	  set dns_<id>      ipv4_addr with timeouts (AllowResolved)
//	  set dnsp_<id>     ipv4_addr . inet_service with timeouts (OpenResolved
//	                    for some ports)
//	  set denied_<id>   ipv4_addr . inet_proto . inet_service, dynamic, counters
//
//	table bridge berth-<bridge>
//	  set ports         ifname: the host veths of attached workspaces
//	  set bound         ifname . ipv4_addr: each host veth and its workspace address
//	  chain prerouting  from a port: IPv4 and ARP only from the port's own
//	                    address, nothing but IPv4 and ARP
//	  chain forward     no frame from one port to another
const (
	chainForward   = "forward"
	chainInput     = "input"
	chainPost      = "postrouting"
	chainBrPre     = "prerouting"
	chainBrForward = "forward"
	setWSAddr      = "workspaces"
	setBound       = "bound"
	setPorts       = "ports"
	// Per-workspace names are a fixed prefix and the whole ID, so that no
	// ID's names can be mistaken for another's ("a-drop" vs "a" + "-drop").
	wsChainPrefix    = "ws_"
	dropChainPrefix  = "drop_"
	dnsSetPrefix     = "dns_"
	dnsPortSetPrefix = "dnsp_"
	deniedSetPrefix  = "denied_"
)

// metadataV4 is the cloud metadata address workspaces may not reach unless a
// rule names it; its IPv6 twin (fd00:ec2::254) is covered by workspaces
// having no IPv6 at all.
var metadataV4 = netip.MustParseAddr("169.254.169.254")

type tables struct {
	cfg    Config
	inet   *nftables.Table
	bridge *nftables.Table
}

func newTables(cfg Config) *tables {
	return &tables{
		cfg:    cfg,
		inet:   &nftables.Table{Name: cfg.tableName(), Family: nftables.TableFamilyINet},
		bridge: &nftables.Table{Name: cfg.tableName(), Family: nftables.TableFamilyBridge},
	}
}

func wsChain(id string) string    { return wsChainPrefix + id }
func dropChain(id string) string  { return dropChainPrefix + id }
func dnsSet(id string) string     { return dnsSetPrefix + id }
func dnsPortSet(id string) string { return dnsPortSetPrefix + id }
func deniedSet(id string) string  { return deniedSetPrefix + id }

func (t *tables) wsAddrSet() *nftables.Set {
	return &nftables.Set{Table: t.inet, Name: setWSAddr, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
}

func (t *tables) boundSet() *nftables.Set {
	return &nftables.Set{Table: t.bridge, Name: setBound, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)}
}

func (t *tables) portsSet() *nftables.Set {
	return &nftables.Set{Table: t.bridge, Name: setPorts, KeyType: nftables.TypeIFName}
}

func (t *tables) dnsSet(id string) *nftables.Set {
	return &nftables.Set{Table: t.inet, Name: dnsSet(id), KeyType: nftables.TypeIPAddr, HasTimeout: true}
}

// dnsPortSet holds addresses opened by DNS for some ports only, one
// element per address and port.
func (t *tables) dnsPortSet(id string) *nftables.Set {
	return &nftables.Set{Table: t.inet, Name: dnsPortSet(id), HasTimeout: true, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
}

// addrPortKey is an ipv4_addr . inet_service key, the port padded to 4 bytes.
func addrPortKey(a netip.Addr, port uint16) []byte {
	b := a.As4()
	return append(b[:], byte(port>>8), byte(port), 0, 0)
}

func (t *tables) deniedSet(id string) *nftables.Set {
	return &nftables.Set{Table: t.inet, Name: deniedSet(id), Dynamic: true, HasTimeout: true, Concatenation: true,
		Timeout: t.cfg.DeniedTTL, Size: t.cfg.DeniedMax,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)}
}

// base adds the tables, the shared sets and the base chains with their rules
// to c's batch. Tables, chains and sets are added without "exclusive", so an
// existing one is kept (with its elements); the base chains are flushed and
// refilled, which the kernel applies atomically with the rest of the batch.
func (t *tables) base(c *nftables.Conn) error {
	c.AddTable(t.inet)
	c.AddTable(t.bridge)
	wsAddr := t.wsAddrSet()
	if err := c.AddSet(wsAddr, nil); err != nil {
		return err
	}
	bound := t.boundSet()
	if err := c.AddSet(bound, nil); err != nil {
		return err
	}
	ports := t.portsSet()
	if err := c.AddSet(ports, nil); err != nil {
		return err
	}
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Name: chainForward, Table: t.inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	in := c.AddChain(&nftables.Chain{Name: chainInput, Table: t.inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	post := c.AddChain(&nftables.Chain{Name: chainPost, Table: t.inet, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	brPre := c.AddChain(&nftables.Chain{Name: chainBrPre, Table: t.bridge, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-200), Policy: &accept})
	brFwd := c.AddChain(&nftables.Chain{Name: chainBrForward, Table: t.bridge, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(-200), Policy: &accept})
	for _, ch := range []*nftables.Chain{fwd, in, post, brPre, brFwd} {
		c.FlushChain(ch)
	}
	br := t.cfg.Bridge
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: concat(exprs...)})
	}

	// forward: replies and related ICMP of allowed connections pass; the
	// policy decides only new flows. Connections opened before a policy
	// change keep going, as with any stateful firewall.
	rule(fwd, ctEstablished(), verdict(expr.VerdictAccept))
	// A workspace sending to another through the gateway (routed, not
	// bridged) would otherwise slip past port isolation.
	rule(fwd, iif(br), oif(br, true), verdict(expr.VerdictDrop))
	rule(fwd, iif(br), nfproto(unix.NFPROTO_IPV4), saddr(), []expr.Any{
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: wsAddr.Name, SetID: wsAddr.ID},
	})
	// Not an attached workspace's address (or not IPv4): nothing to allow.
	rule(fwd, iif(br), verdict(expr.VerdictDrop))
	// Nobody outside opens connections into workspaces (their ports are
	// reached through the agent).
	rule(fwd, oif(br, true), verdict(expr.VerdictDrop))

	// input: the host's own addresses, whatever they are bound to, are off
	// limits to workspaces except for berth's DNS resolver on the gateway.
	rule(in, ctEstablished(), verdict(expr.VerdictAccept))
	gw := t.cfg.gateway().As4()
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rule(in, iif(br), nfproto(unix.NFPROTO_IPV4), daddrIs(gw[:]), l4proto(proto), dport(53, 53), verdict(expr.VerdictAccept))
	}
	rule(in, iif(br), verdict(expr.VerdictDrop))

	// postrouting: masquerade, since the bridge plugin's ipMasq needs iptables.
	rule(post, nfproto(unix.NFPROTO_IPV4), saddrIn(t.cfg.Subnet), oif(br, false), []expr.Any{&expr.Masq{}})

	// bridge prerouting: a port speaks only for its own address, so a root
	// in one workspace cannot take another's address (and with it the
	// other's policy) or poison the host's ARP cache. Frames are matched by
	// their port being one of berth's, not by the bridge's name: "meta
	// ibrname" needs CONFIG_NFT_BRIDGE_META, which many kernels lack.
	fromPort := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: ports.Name, SetID: ports.ID},
	}
	for _, ethertype := range []uint16{unix.ETH_P_IP, unix.ETH_P_ARP} {
		off := uint32(12) // IPv4 source address
		if ethertype == unix.ETH_P_ARP {
			off = 14 // ARP sender protocol address (Ethernet/IPv4)
		}
		rule(brPre, fromPort, ethProto(ethertype, false), []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: bound.Name, SetID: bound.ID, Invert: true},
		}, verdict(expr.VerdictDrop))
	}
	// Workspaces are IPv4-only: no IPv6 (which would reach the host by its
	// link-local address), no VLAN tags, nothing but IPv4 and ARP.
	rule(brPre, fromPort, ethProto(unix.ETH_P_IP, true), ethProto(unix.ETH_P_ARP, true), verdict(expr.VerdictDrop))
	// bridge forward: port isolation's twin, in case a port lost its flag.
	rule(brFwd, fromPort, verdict(expr.VerdictDrop))
	return nil
}

// compiledRule is one CIDR rule of a policy, ready for nftables.
type compiledRule struct {
	Prefix netip.Prefix
	Ports  []portRange // none: every port and protocol
}

type portRange struct{ Lo, Hi uint16 }

type compiled struct {
	DefaultAccept bool
	Deny, Allow   []compiledRule
}

// workspace adds (or refreshes) one workspace's chains and sets and its
// entries in the shared sets. The policy chain is flushed and refilled in
// the same batch, so a policy change is atomic; the DNS and denied sets keep
// their elements unless flushDNS.
func (t *tables) workspace(c *nftables.Conn, id string, ip netip.Addr, hostVeth string, pol compiled, flushDNS bool) error {
	dns := t.dnsSet(id)
	if err := c.AddSet(dns, nil); err != nil {
		return err
	}
	if flushDNS {
		c.FlushSet(dns)
	}
	dnsp := t.dnsPortSet(id)
	if err := c.AddSet(dnsp, nil); err != nil {
		return err
	}
	if flushDNS {
		c.FlushSet(dnsp)
	}
	denied := t.deniedSet(id)
	if err := c.AddSet(denied, nil); err != nil {
		return err
	}
	ws := c.AddChain(&nftables.Chain{Name: wsChain(id), Table: t.inet})
	drop := c.AddChain(&nftables.Chain{Name: dropChain(id), Table: t.inet})
	c.FlushChain(ws)
	c.FlushChain(drop)
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: concat(exprs...)})
	}

	// The drop chain records what was denied, then drops. Recording is a
	// rule of its own: a full set makes its rule stop, and that must never
	// skip the drop.
	record := func(proto []expr.Any, port []expr.Any) {
		rule(drop, proto, []expr.Any{
			&expr.Payload{DestRegister: 8, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
		}, port, []expr.Any{
			&expr.Dynset{SrcRegKey: 8, SetName: denied.Name, SetID: denied.ID, Operation: uint32(unix.NFT_DYNSET_OP_UPDATE),
				Timeout: t.cfg.DeniedTTL, Exprs: []expr.Any{&expr.Counter{}}},
		})
	}
	thDport := []expr.Any{&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}}
	record(l4proto(unix.IPPROTO_TCP), thDport)
	record(l4proto(unix.IPPROTO_UDP), thDport)
	record(concat(l4protoNot(unix.IPPROTO_TCP), l4protoNot(unix.IPPROTO_UDP)),
		[]expr.Any{&expr.Immediate{Register: 10, Data: []byte{0, 0, 0, 0}}})
	rule(drop, verdict(expr.VerdictDrop))

	toDrop := verdictChain(expr.VerdictGoto, drop.Name)
	emit := func(r compiledRule, v []expr.Any) {
		if len(r.Ports) == 0 {
			rule(ws, daddrIn(r.Prefix), v)
			return
		}
		for _, pr := range r.Ports {
			for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				rule(ws, daddrIn(r.Prefix), l4proto(proto), dport(pr.Lo, pr.Hi), v)
			}
		}
	}
	for _, r := range pol.Deny {
		emit(r, toDrop)
	}
	// The metadata address opens only to an allow rule that names it: a
	// prefix covering it other than 0.0.0.0/0. DNS answers never open it
	// (a name pointing at it is a classic rebinding trick).
	meta := netip.PrefixFrom(metadataV4, 32)
	for _, r := range pol.Allow {
		if r.Prefix.Bits() > 0 && r.Prefix.Contains(metadataV4) {
			emit(compiledRule{Prefix: meta, Ports: r.Ports}, verdict(expr.VerdictAccept))
		}
	}
	emit(compiledRule{Prefix: meta}, toDrop)
	for _, r := range pol.Allow {
		emit(r, verdict(expr.VerdictAccept))
	}
	rule(ws, daddr(), []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: dns.Name, SetID: dns.ID}}, verdict(expr.VerdictAccept))
	for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		rule(ws, l4proto(proto), daddr(), []expr.Any{
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: dnsp.Name, SetID: dnsp.ID},
		}, verdict(expr.VerdictAccept))
	}
	if pol.DefaultAccept {
		rule(ws, verdict(expr.VerdictAccept))
	} else {
		rule(ws, toDrop)
	}

	ip4 := ip.As4()
	if err := c.SetAddElements(t.wsAddrSet(), []nftables.SetElement{{
		Key: ip4[:], VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ws.Name},
	}}); err != nil {
		return err
	}
	if err := c.SetAddElements(t.portsSet(), []nftables.SetElement{{Key: ifnameBytes(hostVeth)}}); err != nil {
		return err
	}
	return c.SetAddElements(t.boundSet(), []nftables.SetElement{{Key: boundKey(hostVeth, ip)}})
}

// removeWorkspace deletes what workspace added, as far as present says it
// exists: a batch with one missing object fails whole.
func (t *tables) removeWorkspace(c *nftables.Conn, id string, ip netip.Addr, hostVeth string, present objects) error {
	if ip.IsValid() && present.wsAddr[ip] {
		ip4 := ip.As4()
		if err := c.SetDeleteElements(t.wsAddrSet(), []nftables.SetElement{{Key: ip4[:]}}); err != nil {
			return err
		}
	}
	if hostVeth != "" && present.ports[hostVeth] {
		if err := c.SetDeleteElements(t.portsSet(), []nftables.SetElement{{Key: ifnameBytes(hostVeth)}}); err != nil {
			return err
		}
	}
	if ip.IsValid() && hostVeth != "" && present.bound[string(boundKey(hostVeth, ip))] {
		if err := c.SetDeleteElements(t.boundSet(), []nftables.SetElement{{Key: boundKey(hostVeth, ip)}}); err != nil {
			return err
		}
	}
	// Flush before delete: a chain with rules, or a set a rule uses, cannot
	// be deleted.
	for _, name := range []string{wsChain(id), dropChain(id)} {
		if present.chains[name] {
			c.FlushChain(&nftables.Chain{Name: name, Table: t.inet})
		}
	}
	for _, name := range []string{wsChain(id), dropChain(id)} {
		if present.chains[name] {
			c.DelChain(&nftables.Chain{Name: name, Table: t.inet})
		}
	}
	for _, name := range []string{dnsSet(id), dnsPortSet(id), deniedSet(id)} {
		if present.sets[name] {
			c.DelSet(&nftables.Set{Table: t.inet, Name: name})
		}
	}
	return nil
}

// objects is what exists in berth's tables, read before a batch that
// deletes.
type objects struct {
	chains map[string]bool
	sets   map[string]bool
	wsAddr map[netip.Addr]bool
	bound  map[string]bool
	ports  map[string]bool
	// wsAddrTarget maps each address in the workspaces map to the chain it
	// jumps to.
	wsAddrTarget map[netip.Addr]string
	tableInet    bool
	tableBridge  bool
}

func (t *tables) list(c *nftables.Conn) (objects, error) {
	o := objects{chains: map[string]bool{}, sets: map[string]bool{}, wsAddr: map[netip.Addr]bool{},
		bound: map[string]bool{}, ports: map[string]bool{}, wsAddrTarget: map[netip.Addr]string{}}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return o, fmt.Errorf("network: list nftables chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == t.inet.Name {
			o.chains[ch.Name] = true
		}
	}
	tabs, err := c.ListTables()
	if err != nil {
		return o, fmt.Errorf("network: list nftables tables: %w", err)
	}
	for _, tb := range tabs {
		if tb.Name == t.inet.Name && tb.Family == t.inet.Family {
			o.tableInet = true
		}
		if tb.Name == t.bridge.Name && tb.Family == t.bridge.Family {
			o.tableBridge = true
		}
	}
	if !o.tableInet {
		return o, nil
	}
	sets, err := c.GetSets(t.inet)
	if err != nil {
		if isNotExist(err) {
			return o, nil
		}
		return o, fmt.Errorf("network: list nftables sets: %w", err)
	}
	for _, s := range sets {
		o.sets[s.Name] = true
	}
	if o.sets[setWSAddr] {
		els, err := c.GetSetElements(t.wsAddrSet())
		if err != nil {
			return o, fmt.Errorf("network: read %s: %w", setWSAddr, err)
		}
		for _, e := range els {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				o.wsAddr[a] = true
				if e.VerdictData != nil {
					o.wsAddrTarget[a] = e.VerdictData.Chain
				}
			}
		}
	}
	if !o.tableBridge {
		return o, nil
	}
	if bs, err := c.GetSets(t.bridge); err == nil {
		for _, s := range bs {
			var into map[string]bool
			switch s.Name {
			case setBound:
				into = o.bound
			case setPorts:
				into = o.ports
			default:
				continue
			}
			els, err := c.GetSetElements(s)
			if err != nil {
				return o, fmt.Errorf("network: read %s: %w", s.Name, err)
			}
			for _, e := range els {
				k := string(e.Key)
				if s.Name == setPorts {
					k = strings.TrimRight(k, "\x00")
				}
				into[k] = true
			}
		}
	}
	return o, nil
}

func isNotExist(err error) bool {
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), "no such file or directory"))
}

// boundKey is an ifname . ipv4_addr key: the name NUL-padded to 16 bytes,
// then the address.
func boundKey(ifname string, ip netip.Addr) []byte {
	k := make([]byte, 20)
	copy(k, ifname)
	a := ip.As4()
	copy(k[16:], a[:])
	return k
}

// --- expression helpers ------------------------------------------------------

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func ifnameBytes(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

func iif(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(name)},
	}
}

func oif(name string, eq bool) []expr.Any {
	op := expr.CmpOpNeq
	if eq {
		op = expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifnameBytes(name)},
	}
}

// briIIF matches frames that came in through a port of bridge name.
func briIIF(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyBRIIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(name)},
	}
}

func ethProto(p uint16, not bool) []expr.Any {
	op := expr.CmpOpEq
	if not {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
	}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func l4protoNot(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{p}},
	}
}

func dport(lo, hi uint16) []expr.Any {
	load := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
	if lo == hi {
		return []expr.Any{load, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(lo)}}
	}
	return []expr.Any{load, &expr.Range{Op: expr.CmpOpEq, Register: 1,
		FromData: binaryutil.BigEndian.PutUint16(lo), ToData: binaryutil.BigEndian.PutUint16(hi)}}
}

func saddr() []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}}
}

func daddr() []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}}
}

func daddrIs(a []byte) []expr.Any {
	return append(daddr(), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a})
}

func saddrIn(p netip.Prefix) []expr.Any { return prefixMatch(saddr(), p) }
func daddrIn(p netip.Prefix) []expr.Any { return prefixMatch(daddr(), p) }

func prefixMatch(load []expr.Any, p netip.Prefix) []expr.Any {
	if p.Bits() == 0 {
		return nil
	}
	a := p.Masked().Addr().As4()
	if p.Bits() == 32 {
		return append(load, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]})
	}
	mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-p.Bits()))
	return append(load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]})
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func verdictChain(k expr.VerdictKind, chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: k, Chain: chain}}
}

// workspaceIDs lists the workspaces that have anything in berth's tables.
func (o objects) workspaceIDs() []string {
	seen := map[string]bool{}
	var ids []string
	add := func(name string, prefixes ...string) {
		for _, p := range prefixes {
			if id, ok := strings.CutPrefix(name, p); ok && id != "" && !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	for name := range o.chains {
		add(name, wsChainPrefix, dropChainPrefix)
	}
	for name := range o.sets {
		add(name, dnsSetPrefix, dnsPortSetPrefix, deniedSetPrefix)
	}
	return ids
}
