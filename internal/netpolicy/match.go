package netpolicy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Verdict is the outcome for one destination.
type Verdict uint8

const (
	Denied Verdict = iota
	Allowed
)

func (v Verdict) String() string {
	if v == Allowed {
		return "allow"
	}
	return "deny"
}

// MatchKind says what decided a verdict.
type MatchKind uint8

const (
	ByDefault   MatchKind = iota // no rule named the destination
	ByAllowRule                  // Match.Rule is p.Allow[Match.Index]
	ByDenyRule                   // Match.Rule is p.Deny[Match.Index]
	ByMetadata                   // a cloud metadata address without an explicit allow
)

// Match is the reason for a verdict, for messages and for network_get.
type Match struct {
	By    MatchKind
	Index int  // into Allow or Deny; -1 otherwise
	Rule  Rule // zero unless By is ByAllowRule or ByDenyRule
}

func (m Match) String() string {
	switch m.By {
	case ByAllowRule:
		return fmt.Sprintf("allow[%d] %s", m.Index, m.Rule)
	case ByDenyRule:
		return fmt.Sprintf("deny[%d] %s", m.Index, m.Rule)
	case ByMetadata:
		return "cloud metadata address (allow it by cidr to reach it)"
	}
	return "default"
}

func (r Rule) String() string {
	s := r.Domain
	if s == "" {
		s = r.CIDR
	}
	if len(r.Ports) > 0 {
		s += " ports " + strings.Join(r.Ports, ",")
	}
	return s
}

// PortSet is a sorted list of disjoint, non-adjacent port ranges. Port 0
// stands for traffic without ports (ICMP); a rule without ports covers it.
type PortSet []PortRange

// AllPorts is the set a rule without ports covers.
var AllPorts = PortSet{{0, 65535}}

// All reports whether s covers every port.
func (s PortSet) All() bool { return len(s) == 1 && s[0] == PortRange{0, 65535} }

// Contains reports whether port is in s.
func (s PortSet) Contains(port uint16) bool {
	for _, r := range s {
		if r.Contains(port) {
			return true
		}
	}
	return false
}

func (s PortSet) String() string {
	if s.All() {
		return "all"
	}
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

func normalizeSet(rs []PortRange) PortSet {
	if len(rs) == 0 {
		return nil
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b PortRange) int { return int(a.Lo) - int(b.Lo) })
	out := PortSet{rs[0]}
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if int(r.Lo) <= int(last.Hi)+1 {
			last.Hi = max(last.Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

func union(a, b PortSet) PortSet { return normalizeSet(append(slices.Clone(a), b...)) }

func subtract(a, b PortSet) PortSet {
	var out []PortRange
	for _, r := range a {
		pieces := []PortRange{r}
		for _, d := range b {
			var next []PortRange
			for _, p := range pieces {
				if d.Hi < p.Lo || d.Lo > p.Hi {
					next = append(next, p)
					continue
				}
				if d.Lo > p.Lo {
					next = append(next, PortRange{p.Lo, d.Lo - 1})
				}
				if d.Hi < p.Hi {
					next = append(next, PortRange{d.Hi + 1, p.Hi})
				}
			}
			pieces = next
		}
		out = append(out, pieces...)
	}
	return normalizeSet(out)
}

// portSet is the rule's ports; ports that do not parse (a policy that was
// not normalised) are skipped, so such a rule covers fewer ports, never more.
func (r Rule) portSet() PortSet {
	if len(r.Ports) == 0 {
		return AllPorts
	}
	var rs []PortRange
	for _, s := range r.Ports {
		if pr, err := ParsePortRange(s); err == nil {
			rs = append(rs, pr)
		}
	}
	return normalizeSet(rs)
}

// NormalizeName puts a queried name in the form patterns are written in:
// ASCII lower-case (DNS compares names case-insensitively in ASCII only) and
// no trailing dot.
func NormalizeName(name string) string {
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 'A' && c <= 'Z' {
			b := []byte(name)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return name
}

// MatchDomain reports whether a normalised pattern covers a normalised name:
// "example.com" only itself, "*.example.com" any name below example.com but
// not example.com.
func MatchDomain(pattern, name string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return len(name) > len(suffix) && strings.HasSuffix(name, suffix)
	}
	return pattern == name
}

// DomainVerdict judges a name (as queried; any case, trailing dot or not).
// A name is allowed when some port remains open to it: the ports of the
// allow rules that match it (or every port, when none matches and the
// default is allow), less the ports of the deny rules that match it. So a
// deny rule without ports always wins, and a name no rule names gets the
// default. The Match names the deciding rule: the first matching deny rule
// for a denial by rule, the first matching allow rule for an allowance by
// rule.
func (p Policy) DomainVerdict(name string) (Verdict, Match) {
	v, m, _ := p.domain(name)
	return v, m
}

// DomainPorts is the set of ports the addresses a name resolves to may be
// reached on; empty when the name is denied. The DNS resolver opens an
// allowed name's addresses for these ports only.
func (p Policy) DomainPorts(name string) PortSet {
	_, _, ports := p.domain(name)
	return ports
}

func (p Policy) domain(name string) (Verdict, Match, PortSet) {
	name = NormalizeName(name)
	var ports PortSet
	m := Match{By: ByDefault, Index: -1}
	matched := false
	for i, r := range p.Allow {
		if r.Domain == "" || !MatchDomain(r.Domain, name) {
			continue
		}
		if !matched {
			m = Match{By: ByAllowRule, Index: i, Rule: r}
			matched = true
		}
		ports = union(ports, r.portSet())
	}
	if !matched && p.Default == Allow {
		ports = AllPorts
	}
	for i, r := range p.Deny {
		if r.Domain == "" || !MatchDomain(r.Domain, name) {
			continue
		}
		ports = subtract(ports, r.portSet())
		if len(ports) == 0 {
			return Denied, Match{By: ByDenyRule, Index: i, Rule: r}, nil
		}
	}
	if len(ports) == 0 {
		return Denied, m, nil
	}
	return Allowed, m, ports
}

// Cloud metadata services: reachable from most cloud VMs, and a workspace
// must not borrow the host's cloud identity by default.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"),
	netip.MustParseAddr("fd00:ec2::254"),
}

// IsMetadata reports whether a is a cloud metadata address.
func IsMetadata(a netip.Addr) bool { return slices.Contains(metadataAddrs, a.Unmap()) }

// AddrVerdict judges a destination address and port by the CIDR rules
// (domain rules act through DNS, not here). Port 0 stands for traffic
// without ports; only rules without ports match it. Deny rules win; a cloud
// metadata address is denied unless an allow rule names it explicitly, which
// a prefix of length 0 (0.0.0.0/0, ::/0) does not; otherwise the default.
func (p Policy) AddrVerdict(addr netip.Addr, port uint16) (Verdict, Match) {
	addr = addr.Unmap()
	for i, r := range p.Deny {
		if r.covers(addr, port) {
			return Denied, Match{By: ByDenyRule, Index: i, Rule: r}
		}
	}
	meta := IsMetadata(addr)
	for i, r := range p.Allow {
		if !r.covers(addr, port) {
			continue
		}
		if meta {
			if pf, err := netip.ParsePrefix(r.CIDR); err != nil || pf.Bits() == 0 {
				continue
			}
		}
		return Allowed, Match{By: ByAllowRule, Index: i, Rule: r}
	}
	if meta {
		return Denied, Match{By: ByMetadata, Index: -1}
	}
	if p.Default == Allow {
		return Allowed, Match{By: ByDefault, Index: -1}
	}
	return Denied, Match{By: ByDefault, Index: -1}
}

func (r Rule) covers(addr netip.Addr, port uint16) bool {
	if r.CIDR == "" {
		return false
	}
	pf, err := netip.ParsePrefix(r.CIDR)
	if err != nil {
		return false
	}
	return pf.Contains(addr) && r.portSet().Contains(port)
}
