package netpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every validation error, so callers can map it to
// an invalid-argument class at the edge (errdefs.ErrInvalidArgument) while
// the message stays the one written here for the model or operator.
var ErrInvalid = errors.New("invalid network policy")

// Caps keep one policy small enough to compile into nftables sets and to
// judge per DNS query without thought about cost; a policy that needs more
// is better written with CIDRs or wildcards.
const (
	MaxRules        = 256 // per list (allow, deny)
	MaxPortsPerRule = 32
	MaxDomainLen    = 253 // RFC 1035 presentation form without the trailing dot
	MaxLabelLen     = 63
	// maxErrors bounds how many problems one error reports: enough to fix a
	// policy in one go, not so many that one bad paste floods a tool result.
	maxErrors = 10
)

// Normalize validates p and returns its canonical form: default and domains
// lower-case, domains without a trailing dot, CIDRs masked and in their
// canonical text (a bare address becomes a /32 or /128), ports as "N" or
// "N-M". Matching assumes a normalised policy; store what Normalize returns.
// The error lists every problem found (up to a few), each naming the rule by
// its list and index, and wraps ErrInvalid.
func (p Policy) Normalize() (Policy, error) {
	var errs []error
	add := func(err error) {
		if len(errs) < maxErrors {
			errs = append(errs, fmt.Errorf("%w: %w", ErrInvalid, err))
		}
	}
	out := Policy{Default: Default(strings.ToLower(strings.TrimSpace(string(p.Default))))}
	switch out.Default {
	case Allow, Deny:
	case "":
		add(errors.New(`default is required: "allow" or "deny"`))
	default:
		add(fmt.Errorf(`default %q: must be "allow" or "deny"`, p.Default))
	}
	norm := func(list string, rules []Rule) []Rule {
		if len(rules) > MaxRules {
			add(fmt.Errorf("%s: %d rules, at most %d; use CIDRs or *.domain wildcards to cover more with fewer rules", list, len(rules), MaxRules))
			return nil
		}
		var res []Rule
		for i, r := range rules {
			nr, err := r.normalize()
			if err != nil {
				add(fmt.Errorf("%s[%d]: %w", list, i, err))
				continue
			}
			res = append(res, nr)
		}
		return res
	}
	out.Allow = norm("allow", p.Allow)
	out.Deny = norm("deny", p.Deny)
	if len(errs) > 0 {
		return Policy{}, errors.Join(errs...)
	}
	return out, nil
}

// Validate reports what Normalize would refuse.
func (p Policy) Validate() error {
	_, err := p.Normalize()
	return err
}

func (r Rule) normalize() (Rule, error) {
	var out Rule
	switch {
	case r.Domain != "" && r.CIDR != "":
		return Rule{}, fmt.Errorf("has both domain %q and cidr %q; a rule names exactly one, so split it into two rules", r.Domain, r.CIDR)
	case r.Domain == "" && r.CIDR == "":
		return Rule{}, errors.New(`names no destination; set "domain" (example.com, *.example.com) or "cidr" (10.0.0.0/8, 2001:db8::1)`)
	case r.Domain != "":
		d, err := NormalizeDomainPattern(r.Domain)
		if err != nil {
			return Rule{}, err
		}
		out.Domain = d
	default:
		c, err := NormalizeCIDR(r.CIDR)
		if err != nil {
			return Rule{}, err
		}
		out.CIDR = c.String()
	}
	if len(r.Ports) > MaxPortsPerRule {
		return Rule{}, fmt.Errorf("%d port entries, at most %d; use ranges such as 8000-8100", len(r.Ports), MaxPortsPerRule)
	}
	for _, s := range r.Ports {
		pr, err := ParsePortRange(s)
		if err != nil {
			return Rule{}, err
		}
		out.Ports = append(out.Ports, pr.String())
	}
	return out, nil
}

// NormalizeDomainPattern checks a rule's domain and returns it lower-case
// without a trailing dot. Allowed forms are a name ("example.com") and a
// wildcard of its subdomains ("*.example.com"); the wildcard must be the
// whole first label. Labels are letters, digits, '-' and '_' (the last for
// service names such as _acme-challenge), 1 to 63 characters, not starting
// or ending with '-'.
func NormalizeDomainPattern(s string) (string, error) {
	orig := s
	if s == "" {
		return "", errors.New("domain is empty")
	}
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if s == "" || s == "*" {
		return "", fmt.Errorf("domain %q matches everything; use default \"allow\" instead of a rule", orig)
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return "", fmt.Errorf("domain %q is an address; put it in \"cidr\" instead", orig)
	}
	if len(s) > MaxDomainLen {
		return "", fmt.Errorf("domain %.40q... is %d characters, at most %d", orig, len(s), MaxDomainLen)
	}
	rest := s
	if strings.HasPrefix(s, "*.") {
		rest = s[2:]
	}
	labels := strings.Split(rest, ".")
	for i, l := range labels {
		if err := checkLabel(l); err != nil {
			if strings.Contains(l, "*") {
				return "", fmt.Errorf("domain %q: a wildcard is allowed only as the whole first label, as in *.example.com", orig)
			}
			return "", fmt.Errorf("domain %q: label %d %w", orig, i+1, err)
		}
	}
	// A final label of digits only is no TLD anyone can register, and is
	// what a mistyped address looks like ("10.0.0.300").
	if last := labels[len(labels)-1]; allDigits(last) {
		return "", fmt.Errorf("domain %q ends in a numeric label; if it is an address, put it in \"cidr\"", orig)
	}
	return s, nil
}

func checkLabel(l string) error {
	if l == "" {
		return errors.New("is empty (two dots in a row, or a leading dot)")
	}
	if len(l) > MaxLabelLen {
		return fmt.Errorf("is %d characters, at most %d", len(l), MaxLabelLen)
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("%q starts or ends with '-'", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%q has %q; allowed are letters, digits, '-' and '_' (write internationalised names in their xn-- form)", l, rune(c))
		}
	}
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// NormalizeCIDR parses a prefix or a bare address (taken as a single-host
// prefix). A prefix with host bits set is refused rather than silently
// masked: "10.1.2.3/8" more likely means a typo than "all of 10/8".
// IPv4-mapped IPv6 is unmapped so that one address has one spelling.
func NormalizeCIDR(s string) (netip.Prefix, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return netip.Prefix{}, errors.New("cidr is empty")
	}
	if strings.Contains(t, "%") {
		return netip.Prefix{}, fmt.Errorf("cidr %q has a zone; zones are not allowed", s)
	}
	if !strings.Contains(t, "/") {
		a, err := netip.ParseAddr(t)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("cidr %q is neither an address nor a prefix such as 10.0.0.0/8 or 2001:db8::/32", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(t)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr %q is not a prefix such as 10.0.0.0/8 or 2001:db8::/32", s)
	}
	if p.Addr().Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			return netip.Prefix{}, fmt.Errorf("cidr %q: an IPv4-mapped prefix needs at least 96 bits", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), bits)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("cidr %q has host bits set; did you mean %s?", s, m)
	}
	return p, nil
}

// PortRange is an inclusive range of destination ports.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Contains reports whether port is in r.
func (r PortRange) Contains(port uint16) bool { return port >= r.Lo && port <= r.Hi }

// ParsePortRange parses "443" or "8000-8100"; ports are 1 to 65535.
func ParsePortRange(s string) (PortRange, error) {
	t := strings.TrimSpace(s)
	lo, hi, isRange := strings.Cut(t, "-")
	l, err := parsePort(lo, s)
	if err != nil {
		return PortRange{}, err
	}
	if !isRange {
		return PortRange{l, l}, nil
	}
	h, err := parsePort(hi, s)
	if err != nil {
		return PortRange{}, err
	}
	if l > h {
		return PortRange{}, fmt.Errorf("port range %q is backwards; write %d-%d", s, h, l)
	}
	return PortRange{l, h}, nil
}

func parsePort(p, whole string) (uint16, error) {
	if !allDigits(p) {
		return 0, fmt.Errorf("port %q: expected a number 1-65535 or a range such as 8000-8100", whole)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q: ports are 1-65535", whole)
	}
	return uint16(n), nil
}
