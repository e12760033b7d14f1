package netpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestNormalizeDomainPattern(t *testing.T) {
	good := map[string]string{
		"example.com":                    "example.com",
		"Example.COM.":                   "example.com",
		"*.example.com":                  "*.example.com",
		"*.Example.com.":                 "*.example.com",
		"_acme-challenge.ex.io":          "_acme-challenge.ex.io",
		"xn--bcher-kva.example":          "xn--bcher-kva.example",
		"localhost":                      "localhost",
		"a1.b-c.d":                       "a1.b-c.d",
		"*.com":                          "*.com",
		"123.example.com":                "123.example.com",
		strings.Repeat("a", 63) + ".com": strings.Repeat("a", 63) + ".com",
	}
	for in, want := range good {
		got, err := NormalizeDomainPattern(in)
		if err != nil || got != want {
			t.Errorf("NormalizeDomainPattern(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	long := strings.Repeat("abcdefghi.", 25) + "com" // 253 with the dots
	if _, err := NormalizeDomainPattern(long); err != nil {
		t.Errorf("253-character name refused: %v", err)
	}
	bad := map[string]string{
		"":                               "empty",
		"*":                              "matches everything",
		".":                              "matches everything",
		"ex*ample.com":                   "wildcard is allowed only",
		"*example.com":                   "wildcard is allowed only",
		"a.*.example.com":                "wildcard is allowed only",
		"*.*.example.com":                "wildcard is allowed only",
		"example.*":                      "wildcard is allowed only",
		"**.example.com":                 "wildcard is allowed only",
		"example..com":                   "empty",
		".example.com":                   "empty",
		"example.com..":                  "empty",
		"-example.com":                   "starts or ends with '-'",
		"example-.com":                   "starts or ends with '-'",
		"exa mple.com":                   "allowed are letters",
		"exämple.com":                    "xn--",
		"example.com/path":               "allowed are letters",
		"10.0.0.1":                       "is an address",
		"::1":                            "is an address",
		"10.0.0.300":                     "numeric label",
		strings.Repeat("a", 64) + ".com": "at most 63",
		long + "m":                       "at most 253",
	}
	for in, want := range bad {
		_, err := NormalizeDomainPattern(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NormalizeDomainPattern(%q) = %v; want an error containing %q", in, err, want)
		}
	}
}

func TestNormalizeCIDR(t *testing.T) {
	good := map[string]string{
		"10.0.0.0/8":          "10.0.0.0/8",
		"10.1.2.3":            "10.1.2.3/32",
		"::1":                 "::1/128",
		"2001:DB8::/32":       "2001:db8::/32",
		"::ffff:10.0.0.0/104": "10.0.0.0/8",
		"::ffff:1.2.3.4":      "1.2.3.4/32",
		"0.0.0.0/0":           "0.0.0.0/0",
	}
	for in, want := range good {
		got, err := NormalizeCIDR(in)
		if err != nil || got.String() != want {
			t.Errorf("NormalizeCIDR(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":              "empty",
		"10.0.0.1/8":    "did you mean 10.0.0.0/8",
		"10.0.0.0/33":   "not a prefix",
		"10.0.0/8":      "not a prefix",
		"example.com":   "neither an address nor a prefix",
		"fe80::1%eth0":  "zone",
		"::ffff:0:0/90": "at least 96",
		"256.0.0.0/8":   "not a prefix",
	}
	for in, want := range bad {
		_, err := NormalizeCIDR(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NormalizeCIDR(%q) = %v; want an error containing %q", in, err, want)
		}
	}
}

func TestParsePortRange(t *testing.T) {
	good := map[string]PortRange{"443": {443, 443}, "1": {1, 1}, "65535": {65535, 65535}, "8000-8100": {8000, 8100}, " 80 ": {80, 80}, "5-5": {5, 5}}
	for in, want := range good {
		got, err := ParsePortRange(in)
		if err != nil || got != want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"0": "1-65535", "70000": "1-65535", "65536": "1-65535", "-1": "expected a number",
		"": "expected a number", "http": "expected a number", "8100-8000": "backwards; write 8000-8100",
		"1-2-3": "expected a number", "0-10": "1-65535", "99999999999999999999999": "1-65535", "+80": "expected a number",
	}
	for in, want := range bad {
		_, err := ParsePortRange(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePortRange(%q) = %v; want an error containing %q", in, err, want)
		}
	}
}

func TestNormalizePolicy(t *testing.T) {
	p := Policy{
		Default: "DENY",
		Allow: []Rule{
			{Domain: "Example.com."},
			{CIDR: "10.1.2.3", Ports: []string{"443", "8000-8100"}},
		},
		Deny: []Rule{{Domain: "*.Ads.example.com"}},
	}
	got, err := p.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{
		Default: Deny,
		Allow:   []Rule{{Domain: "example.com"}, {CIDR: "10.1.2.3/32", Ports: []string{"443", "8000-8100"}}},
		Deny:    []Rule{{Domain: "*.ads.example.com"}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Normalize = %+v; want %+v", got, want)
	}
	// Normalising is idempotent: what is stored normalises to itself.
	again, err := got.Normalize()
	if err != nil || fmt.Sprint(again) != fmt.Sprint(got) {
		t.Errorf("Normalize twice = %+v, %v", again, err)
	}
}

func TestNormalizePolicyErrors(t *testing.T) {
	cases := []struct {
		p    Policy
		want []string
	}{
		{Policy{}, []string{"default is required"}},
		{Policy{Default: "maybe"}, []string{`default "maybe"`}},
		{Policy{Default: Deny, Allow: []Rule{{}}}, []string{"allow[0]: names no destination"}},
		{Policy{Default: Deny, Allow: []Rule{{Domain: "a.com", CIDR: "10.0.0.0/8"}}}, []string{"allow[0]: has both"}},
		{Policy{Default: Deny, Deny: []Rule{{Domain: "a.com"}, {CIDR: "10.0.0.1/8"}}}, []string{"deny[1]: cidr", "did you mean 10.0.0.0/8"}},
		{Policy{Default: Deny, Allow: []Rule{{Domain: "a.com", Ports: []string{"0"}}}}, []string{"allow[0]: port \"0\""}},
		{Policy{Default: Deny, Allow: []Rule{{Domain: "a.com", Ports: []string{"70000"}}}}, []string{"allow[0]: port \"70000\""}},
		{Policy{Default: Deny, Allow: []Rule{{Domain: "ex*ample.com"}}, Deny: []Rule{{CIDR: "x"}}}, []string{"allow[0]: domain", "deny[0]: cidr"}},
		{Policy{Default: Deny, Allow: make([]Rule, MaxRules+1)}, []string{"allow: 257 rules, at most 256"}},
		{Policy{Default: Deny, Allow: []Rule{{Domain: "a.com", Ports: slices.Repeat([]string{"1"}, MaxPortsPerRule+1)}}}, []string{"at most 32"}},
	}
	for _, c := range cases {
		_, err := c.p.Normalize()
		if err == nil {
			t.Errorf("Normalize(%+v) accepted", c.p)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Normalize(%+v) = %v; does not wrap ErrInvalid", c.p, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Normalize(%+v) = %q; want it to contain %q", c.p, err, w)
			}
		}
	}
	// Many bad rules: the error stays short.
	many := Policy{Default: Deny, Allow: slices.Repeat([]Rule{{}}, 100)}
	err := many.Validate()
	if n := strings.Count(err.Error(), "names no destination"); n != maxErrors {
		t.Errorf("%d problems reported; want %d", n, maxErrors)
	}
}

func mustNorm(t *testing.T, p Policy) Policy {
	t.Helper()
	n, err := p.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDomainVerdict(t *testing.T) {
	p := mustNorm(t, Policy{
		Default: Deny,
		Allow: []Rule{
			{Domain: "example.com"},
			{Domain: "*.github.com"},
			{Domain: "api.other.org", Ports: []string{"443"}},
			{Domain: "*.other.org", Ports: []string{"80"}},
			{Domain: "mail.example.net", Ports: []string{"25-587"}},
		},
		Deny: []Rule{
			{Domain: "evil.github.com"},
			{Domain: "mail.example.net", Ports: []string{"25"}},
		},
	})
	cases := []struct {
		name  string
		want  Verdict
		by    MatchKind
		index int
		ports string
	}{
		{"example.com", Allowed, ByAllowRule, 0, "all"},
		{"EXAMPLE.com.", Allowed, ByAllowRule, 0, "all"},
		{"www.example.com", Denied, ByDefault, -1, ""}, // a name rule does not cover subdomains
		{"github.com", Denied, ByDefault, -1, ""},      // a wildcard does not cover its base
		{"api.github.com", Allowed, ByAllowRule, 1, "all"},
		{"a.b.github.com", Allowed, ByAllowRule, 1, "all"},
		{"evil.github.com", Denied, ByDenyRule, 0, ""}, // deny wins
		{"notgithub.com", Denied, ByDefault, -1, ""},   // suffix match is by label
		{"xgithub.com", Denied, ByDefault, -1, ""},
		{"api.other.org", Allowed, ByAllowRule, 2, "80,443"}, // ports of all matching allow rules
		{"www.other.org", Allowed, ByAllowRule, 3, "80"},
		{"mail.example.net", Allowed, ByAllowRule, 4, "26-587"}, // a deny rule with ports removes only those
		{"", Denied, ByDefault, -1, ""},
		{".", Denied, ByDefault, -1, ""},
	}
	for _, c := range cases {
		v, m := p.DomainVerdict(c.name)
		if v != c.want || m.By != c.by || m.Index != c.index {
			t.Errorf("DomainVerdict(%q) = %v, %+v; want %v by %v index %d", c.name, v, m, c.want, c.by, c.index)
		}
		if got := p.DomainPorts(c.name).String(); got != c.ports {
			t.Errorf("DomainPorts(%q) = %q; want %q", c.name, got, c.ports)
		}
	}
	// A deny rule whose ports cover all the allowed ones denies the name.
	q := mustNorm(t, Policy{Default: Deny, Allow: []Rule{{Domain: "a.com", Ports: []string{"443"}}}, Deny: []Rule{{Domain: "a.com", Ports: []string{"400-500"}}}})
	if v, m := q.DomainVerdict("a.com"); v != Denied || m.By != ByDenyRule {
		t.Errorf("covered by deny ports: %v %+v", v, m)
	}
}

func TestDomainVerdictDefaultAllow(t *testing.T) {
	p := mustNorm(t, Policy{Default: Allow, Deny: []Rule{{Domain: "*.tracker.io"}, {Domain: "smtp.x.com", Ports: []string{"25"}}}})
	for name, want := range map[string]Verdict{"anything.example": Allowed, "tracker.io": Allowed, "a.tracker.io": Denied, "smtp.x.com": Allowed} {
		if v, _ := p.DomainVerdict(name); v != want {
			t.Errorf("DomainVerdict(%q) = %v; want %v", name, v, want)
		}
	}
	if got := p.DomainPorts("smtp.x.com").String(); got != "0-24,26-65535" {
		t.Errorf("DomainPorts(smtp.x.com) = %q", got)
	}
	if v, m := p.DomainVerdict("x.com"); v != Allowed || m.By != ByDefault {
		t.Errorf("unnamed name = %v %+v; want the default", v, m)
	}
}

func TestAddrVerdict(t *testing.T) {
	p := mustNorm(t, Policy{
		Default: Deny,
		Allow: []Rule{
			{CIDR: "10.0.0.0/8"},
			{CIDR: "192.0.2.1", Ports: []string{"443", "8000-8100"}},
			{CIDR: "2001:db8::/32"},
			{Domain: "example.com"}, // domain rules do not judge addresses
		},
		Deny: []Rule{
			{CIDR: "10.9.0.0/16"},
			{CIDR: "10.1.0.0/16", Ports: []string{"22"}},
		},
	})
	a := netip.MustParseAddr
	cases := []struct {
		addr string
		port uint16
		want Verdict
		by   MatchKind
	}{
		{"10.1.2.3", 80, Allowed, ByAllowRule},
		{"10.1.2.3", 22, Denied, ByDenyRule},
		{"10.1.2.3", 0, Allowed, ByAllowRule}, // ICMP: the port-limited deny rule does not apply
		{"10.9.1.1", 80, Denied, ByDenyRule},
		{"::ffff:10.1.2.3", 80, Allowed, ByAllowRule},
		{"192.0.2.1", 443, Allowed, ByAllowRule},
		{"192.0.2.1", 8050, Allowed, ByAllowRule},
		{"192.0.2.1", 80, Denied, ByDefault},
		{"192.0.2.1", 0, Denied, ByDefault},
		{"2001:db8::5", 53, Allowed, ByAllowRule},
		{"8.8.8.8", 53, Denied, ByDefault},
		{"169.254.169.254", 80, Denied, ByMetadata},
	}
	for _, c := range cases {
		v, m := p.AddrVerdict(a(c.addr), c.port)
		if v != c.want || m.By != c.by {
			t.Errorf("AddrVerdict(%s, %d) = %v, %v; want %v by %v", c.addr, c.port, v, m, c.want, c.by)
		}
	}

	// Metadata: denied under default allow and under allow-everything, open
	// only when named.
	open := mustNorm(t, Policy{Default: Allow, Allow: []Rule{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}})
	for _, s := range []string{"169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"} {
		if v, m := open.AddrVerdict(a(s), 80); v != Denied || m.By != ByMetadata {
			t.Errorf("AddrVerdict(%s) under allow-all = %v %v; want denied as metadata", s, v, m)
		}
	}
	if v, _ := open.AddrVerdict(a("169.254.169.253"), 80); v != Allowed {
		t.Errorf("a neighbour of the metadata address is denied")
	}
	named := mustNorm(t, Policy{Default: Deny, Allow: []Rule{{CIDR: "169.254.169.254"}}})
	if v, m := named.AddrVerdict(a("169.254.169.254"), 80); v != Allowed || m.By != ByAllowRule {
		t.Errorf("named metadata address = %v %v; want allowed", v, m)
	}
	if v, _ := mustNorm(t, Policy{Default: Allow, Deny: []Rule{{CIDR: "0.0.0.0/0"}}}).AddrVerdict(a("1.1.1.1"), 443); v != Denied {
		t.Errorf("deny 0/0 does not win over default allow")
	}
}

func TestPortSetOps(t *testing.T) {
	s := normalizeSet([]PortRange{{10, 20}, {5, 9}, {30, 40}, {15, 25}})
	if s.String() != "5-25,30-40" {
		t.Errorf("normalizeSet = %s", s)
	}
	if got := subtract(AllPorts, PortSet{{0, 0}, {65535, 65535}}).String(); got != "1-65534" {
		t.Errorf("subtract ends = %s", got)
	}
	if got := subtract(s, PortSet{{7, 31}}).String(); got != "5-6,32-40" {
		t.Errorf("subtract middle = %s", got)
	}
	if got := subtract(s, AllPorts); len(got) != 0 {
		t.Errorf("subtract all = %s", got)
	}
	if !union(PortSet{{0, 100}}, PortSet{{101, 65535}}).All() {
		t.Errorf("union of halves is not all")
	}
}

func FuzzValidateDomainPattern(f *testing.F) {
	for _, s := range []string{"example.com", "*.example.com", "ex*ample.com", "a..b", "-a.b", "10.0.0.1", "Ä.com", "*.", "a.b.", strings.Repeat("a.", 130)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeDomainPattern(s)
		if err != nil {
			return
		}
		// What is accepted is canonical, bounded, and matches as documented.
		if again, err := NormalizeDomainPattern(n); err != nil || again != n {
			t.Fatalf("%q normalised to %q, which normalises to %q, %v", s, n, again, err)
		}
		if len(n) > MaxDomainLen || n != strings.ToLower(n) || strings.HasSuffix(n, ".") {
			t.Fatalf("%q accepted as %q", s, n)
		}
		if strings.Count(n, "*") > 1 || (strings.Contains(n, "*") && !strings.HasPrefix(n, "*.")) {
			t.Fatalf("%q accepted with a wildcard elsewhere than the first label", s)
		}
		if base, ok := strings.CutPrefix(n, "*."); ok {
			if MatchDomain(n, base) || !MatchDomain(n, "x."+base) {
				t.Fatalf("%q matches its base or misses a subdomain", n)
			}
		} else if !MatchDomain(n, NormalizeName(strings.ToUpper(n)+".")) {
			t.Fatalf("%q does not match itself in another case", n)
		}
		p := Policy{Default: Deny, Allow: []Rule{{Domain: s}}}
		if err := p.Validate(); err != nil {
			t.Fatalf("pattern %q accepted alone but not in a policy: %v", s, err)
		}
	})
}
