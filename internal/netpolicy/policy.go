// Package netpolicy is a workspace's egress policy: what it is, how it is
// validated, and how a destination (a domain name, or an address and port)
// is judged against it. It is pure logic: it knows nothing of network
// namespaces, nftables or DNS servers, which enforce its verdicts.
package netpolicy

// Default is what happens to a destination no rule names.
type Default string

const (
	Allow Default = "allow"
	Deny  Default = "deny"
)

// Policy is one workspace's egress policy. Deny rules win over allow rules;
// a destination no rule names gets Default. Cloud metadata addresses
// (169.254.169.254, fd00:ec2::254) are denied unless an allow rule names
// them explicitly (by address or CIDR, not by a broader default).
type Policy struct {
	Default Default `json:"default"`
	Allow   []Rule  `json:"allow,omitempty"`
	Deny    []Rule  `json:"deny,omitempty"`
}

// Rule names destinations by exactly one of Domain or CIDR, optionally
// limited to some ports (none: every port).
type Rule struct {
	// Domain is a name ("example.com") or a wildcard of its subdomains
	// ("*.example.com", which does not match example.com itself).
	Domain string `json:"domain,omitempty"`
	// CIDR is an address or a prefix, IPv4 or IPv6 ("10.0.0.0/8", "::1").
	CIDR string `json:"cidr,omitempty"`
	// Ports limits the rule to these destination ports ("443", "8000-8100").
	Ports []string `json:"ports,omitempty"`
}
