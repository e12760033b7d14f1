package network

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/netpolicy"
)

// compile turns a policy's CIDR rules into what the nftables chain needs.
// Domain rules are skipped: the DNS resolver enforces them through
// AllowResolved. IPv6 rules are skipped too: workspaces have no IPv6, and
// all IPv6 from them is dropped at the bridge.
func compile(p netpolicy.Policy) (compiled, error) {
	var out compiled
	if err := p.Validate(); err != nil {
		return out, fmt.Errorf("network: %w", err)
	}
	switch p.Default {
	case netpolicy.Allow:
		out.DefaultAccept = true
	case netpolicy.Deny:
	default:
		return out, fmt.Errorf("network: policy default %q: want %q or %q", p.Default, netpolicy.Allow, netpolicy.Deny)
	}
	conv := func(rs []netpolicy.Rule) ([]compiledRule, error) {
		var cr []compiledRule
		for _, r := range rs {
			if r.CIDR == "" {
				continue
			}
			pf, err := parseCIDR(r.CIDR)
			if err != nil {
				return nil, err
			}
			if !pf.Addr().Is4() {
				continue
			}
			c := compiledRule{Prefix: pf}
			for _, s := range r.Ports {
				pr, err := parsePorts(s)
				if err != nil {
					return nil, err
				}
				c.Ports = append(c.Ports, pr)
			}
			cr = append(cr, c)
		}
		return cr, nil
	}
	var err error
	if out.Deny, err = conv(p.Deny); err != nil {
		return out, err
	}
	if out.Allow, err = conv(p.Allow); err != nil {
		return out, err
	}
	return out, nil
}

// parseCIDR reads an address or a prefix that netpolicy validated.
func parseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("network: bad CIDR %q", s)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("network: bad CIDR %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parsePorts(s string) (portRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || l == 0 || l > h {
		return portRange{}, fmt.Errorf("network: bad port or range %q: want 1-65535 or a range such as 8000-8100", s)
	}
	return portRange{uint16(l), uint16(h)}, nil
}
