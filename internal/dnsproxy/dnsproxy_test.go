package dnsproxy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berth-dev/berth/internal/netpolicy"
)

// upstream is the only resolver the tests forward to: in-process, on
// loopback, answering from a small zone and recording every query it gets.
type upstream struct {
	addr string
	zone map[string][]dns.RR

	mu      sync.Mutex
	queries []seen
}

type seen struct {
	name, qtype, proto string
	opts               int // EDNS options the query carried
}

func rr(t testing.TB, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{zone: map[string][]dns.RR{}}
	add := func(s string) {
		r := rr(t, s)
		u.zone[r.Header().Name] = append(u.zone[r.Header().Name], r)
	}
	add("example.com. 300 IN A 192.0.2.10")
	add("example.com. 300 IN AAAA 2001:db8::10")
	add("example.com. 300 IN TXT \"hello\"")
	add("www.example.com. 60 IN CNAME cdn.example.net.")
	add("cdn.example.net. 10 IN A 198.51.100.7")
	add("api.github.com. 120 IN A 192.0.2.20")
	add("evil.github.com. 120 IN A 192.0.2.66")
	add("github.com. 120 IN A 192.0.2.21")
	add("slow.example.org. 86400 IN A 192.0.2.30")
	add("rebind.example.com. 300 IN A 127.0.0.1")
	add("rebind.example.com. 300 IN A 10.99.0.5")
	add("rebind.example.com. 300 IN A 169.254.169.254")
	add("rebind.example.com. 300 IN A 192.0.2.99")
	for i := range 100 {
		add(fmt.Sprintf("big.example.com. 300 IN A 203.0.113.%d", i))
	}
	// An unrelated name smuggled into an answer must not be opened.
	u.zone["smuggle.example.com."] = []dns.RR{rr(t, "smuggle.example.com. 300 IN A 192.0.2.40"), rr(t, "other.example.net. 300 IN A 192.0.2.41")}

	pc, ln, bound, err := listenBoth(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	u.addr = bound.String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		q := req.Question[0]
		_, tcp := remote(w.RemoteAddr())
		proto := "udp"
		if tcp {
			proto = "tcp"
		}
		opts := 0
		if o := req.IsEdns0(); o != nil {
			opts = len(o.Option)
		}
		u.mu.Lock()
		u.queries = append(u.queries, seen{strings.ToLower(q.Name), dns.Type(q.Qtype).String(), proto, opts})
		u.mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(req)
		recs, ok := u.zone[strings.ToLower(q.Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, r := range recs {
			if r.Header().Rrtype == q.Qtype || r.Header().Rrtype == dns.TypeCNAME || r.Header().Name != strings.ToLower(q.Name) {
				m.Answer = append(m.Answer, r)
				if c, ok := r.(*dns.CNAME); ok {
					for _, r2 := range u.zone[c.Target] {
						if r2.Header().Rrtype == q.Qtype {
							m.Answer = append(m.Answer, r2)
						}
					}
				}
			}
		}
		size := dns.MinMsgSize
		if tcp {
			size = dns.MaxMsgSize
		} else if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
			m.SetEdns0(o.UDPSize(), false)
		}
		m.Truncate(size)
		w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
	return u
}

func (u *upstream) seen() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.queries)
}

func (u *upstream) asked(name string) bool {
	for _, q := range u.seen() {
		if q.name == dns.Fqdn(name) {
			return true
		}
	}
	return false
}

type opened struct {
	id    string
	addrs []netip.Addr
	ports string
	ttl   time.Duration
}

type fixture struct {
	up     *upstream
	srv    *Server
	addr   string
	mu     sync.Mutex
	opens  []opened
	now    time.Time
	lookup map[netip.Addr]struct {
		id  string
		pol netpolicy.Policy
	}
}

var (
	denySrc    = netip.MustParseAddr("127.0.0.1")
	allowSrc   = netip.MustParseAddr("127.0.0.2")
	unknownSrc = netip.MustParseAddr("127.0.0.3")
)

func mustPolicy(t testing.TB, p netpolicy.Policy) netpolicy.Policy {
	t.Helper()
	n, err := p.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newFixture(t testing.TB, tweak func(*Config)) *fixture {
	t.Helper()
	f := &fixture{up: startUpstream(t), now: time.Unix(1_000_000, 0)}
	f.lookup = map[netip.Addr]struct {
		id  string
		pol netpolicy.Policy
	}{
		denySrc: {"ws-deny", mustPolicy(t, netpolicy.Policy{
			Default: netpolicy.Deny,
			Allow: []netpolicy.Rule{
				{Domain: "example.com"}, {Domain: "www.example.com", Ports: []string{"443"}},
				{Domain: "*.github.com"}, {Domain: "slow.example.org"}, {Domain: "rebind.example.com"},
				{Domain: "big.example.com"}, {Domain: "smuggle.example.com"}, {Domain: "missing.example.com"},
			},
			Deny: []netpolicy.Rule{{Domain: "evil.github.com"}},
		})},
		allowSrc: {"ws-allow", mustPolicy(t, netpolicy.Policy{
			Default: netpolicy.Allow,
			Deny:    []netpolicy.Rule{{Domain: "*.example.net"}},
		})},
	}
	cfg := Config{
		Upstreams: []string{f.up.addr},
		Lookup: func(src netip.Addr) (string, netpolicy.Policy, bool) {
			f.mu.Lock()
			defer f.mu.Unlock()
			e, ok := f.lookup[src]
			return e.id, e.pol, ok
		},
		Open: func(id string, addrs []netip.Addr, ports netpolicy.PortSet, ttl time.Duration) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.opens = append(f.opens, opened{id, slices.Clone(addrs), ports.String(), ttl})
		},
		Protected: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")},
		Now: func() time.Time {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.now
		},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	bound, err := srv.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	f.srv, f.addr = srv, bound.String()
	return f
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func (f *fixture) openCalls() []opened {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.opens)
}

// query asks the proxy from src over proto ("udp", "tcp").
func (f *fixture) query(t testing.TB, src netip.Addr, proto, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns {
		m.SetEdns0(4096, false)
	}
	return f.exchange(t, src, proto, m)
}

func (f *fixture) exchange(t testing.TB, src netip.Addr, proto string, m *dns.Msg) *dns.Msg {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if proto == "tcp" {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	} else {
		d.LocalAddr = &net.UDPAddr{IP: src.AsSlice()}
	}
	c := &dns.Client{Net: proto, Dialer: d, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, f.addr)
	if err != nil {
		t.Fatalf("query %s %s from %s: %v", m.Question[0].Name, proto, src, err)
	}
	return r
}

func addrsOf(m *dns.Msg) []string {
	var out []string
	for _, r := range m.Answer {
		switch r := r.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestAllowedNameAnsweredAndOpened(t *testing.T) {
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			f := newFixture(t, nil)
			r := f.query(t, denySrc, proto, "Example.COM", dns.TypeA, false)
			if r.Rcode != dns.RcodeSuccess || !slices.Equal(addrsOf(r), []string{"192.0.2.10"}) {
				t.Fatalf("answer = %v", r)
			}
			if r.Question[0].Name != "Example.COM." {
				t.Errorf("question echoed as %q; want the client's case", r.Question[0].Name)
			}
			got := f.openCalls()
			want := []opened{{"ws-deny", []netip.Addr{netip.MustParseAddr("192.0.2.10")}, "all", 300 * time.Second}}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Open calls = %v; want %v", got, want)
			}
			q := f.up.seen()
			if len(q) != 1 || q[0].name != "example.com." || q[0].qtype != "A" {
				t.Errorf("upstream saw %v", q)
			}
			r = f.query(t, denySrc, proto, "example.com", dns.TypeAAAA, true)
			if !slices.Equal(addrsOf(r), []string{"2001:db8::10"}) || r.IsEdns0() == nil {
				t.Errorf("AAAA answer = %v", r)
			}
			if got := f.openCalls(); len(got) != 2 || got[1].addrs[0] != netip.MustParseAddr("2001:db8::10") {
				t.Errorf("Open calls = %v", got)
			}
			// A TXT answer carries no address and opens nothing.
			r = f.query(t, denySrc, proto, "example.com", dns.TypeTXT, false)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || len(f.openCalls()) != 2 {
				t.Errorf("TXT: %v, %d Open calls", r, len(f.openCalls()))
			}
		})
	}
}

func TestCNAMEChainAndTTLBounds(t *testing.T) {
	f := newFixture(t, nil)
	r := f.query(t, denySrc, "udp", "www.example.com", dns.TypeA, false)
	if !slices.Equal(addrsOf(r), []string{"198.51.100.7"}) {
		t.Fatalf("answer = %v", r)
	}
	// The A record's TTL is 10s, raised to the 30s floor; the ports are
	// those of the rule naming www.example.com.
	want := []opened{{"ws-deny", []netip.Addr{netip.MustParseAddr("198.51.100.7")}, "443", 30 * time.Second}}
	if got := f.openCalls(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Open calls = %v; want %v", got, want)
	}
	f.query(t, denySrc, "udp", "slow.example.org", dns.TypeA, false)
	if got := f.openCalls(); len(got) != 2 || got[1].ttl != time.Hour {
		t.Errorf("a 1-day TTL opened for %v; want the 1h ceiling", got)
	}
	// Names outside the chain in an answer are not opened.
	f.query(t, denySrc, "udp", "smuggle.example.com", dns.TypeA, false)
	if got := f.openCalls(); len(got) != 3 || fmt.Sprint(got[2].addrs) != "[192.0.2.40]" {
		t.Errorf("Open calls = %v; want only smuggle.example.com's address", got)
	}
}

func TestProtectedAddressesNeverOpened(t *testing.T) {
	f := newFixture(t, nil)
	r := f.query(t, denySrc, "udp", "rebind.example.com", dns.TypeA, false)
	// The answer is the upstream's; only the opening is filtered.
	if len(addrsOf(r)) != 4 {
		t.Fatalf("answer = %v", r)
	}
	if got := f.openCalls(); len(got) != 1 || fmt.Sprint(got[0].addrs) != "[192.0.2.99]" {
		t.Errorf("Open calls = %v; want only 192.0.2.99", got)
	}
}

func TestDeniedNamesNeverForwarded(t *testing.T) {
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			f := newFixture(t, nil)
			for _, name := range []string{"evil.github.com", "github.com", "www.example.org", "data-abcdef0123.tunnel.example", "sub.example.com"} {
				r := f.query(t, denySrc, proto, name, dns.TypeA, true)
				if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
					t.Errorf("%s: rcode %s, answer %v; want NXDOMAIN", name, dns.RcodeToString[r.Rcode], r.Answer)
				}
				var ede *dns.EDNS0_EDE
				if o := r.IsEdns0(); o != nil {
					for _, opt := range o.Option {
						if e, ok := opt.(*dns.EDNS0_EDE); ok {
							ede = e
						}
					}
				}
				if ede == nil || ede.InfoCode != dns.ExtendedErrorCodeBlocked || !strings.Contains(ede.ExtraText, "berth network policy") {
					t.Errorf("%s: extended error %v; want Blocked by berth's policy", name, ede)
				}
			}
			// The wildcard allows api.github.com; the deny rule wins for evil.
			if r := f.query(t, denySrc, proto, "api.github.com", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
				t.Errorf("api.github.com: %v", r)
			}
			for _, name := range []string{"evil.github.com", "github.com", "www.example.org", "data-abcdef0123.tunnel.example", "sub.example.com"} {
				if f.up.asked(name) {
					t.Errorf("denied name %s reached the upstream", name)
				}
			}
			if !f.up.asked("api.github.com") {
				t.Errorf("allowed name api.github.com never reached the upstream")
			}
			for _, o := range f.openCalls() {
				if slices.Contains(o.addrs, netip.MustParseAddr("192.0.2.66")) {
					t.Errorf("a denied name's address was opened: %v", o)
				}
			}
		})
	}
}

func TestDefaultAllow(t *testing.T) {
	f := newFixture(t, nil)
	if r := f.query(t, allowSrc, "udp", "github.com", dns.TypeA, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("default allow: github.com = %v", r)
	}
	// A name the upstream does not know comes back as the upstream's NXDOMAIN.
	if r := f.query(t, allowSrc, "udp", "nowhere.example.org", dns.TypeA, false); r.Rcode != dns.RcodeNameError {
		t.Errorf("nowhere.example.org = %v", r)
	}
	if r := f.query(t, allowSrc, "udp", "cdn.example.net", dns.TypeA, false); r.Rcode != dns.RcodeNameError {
		t.Errorf("denied under default allow: %v", r)
	}
	if f.up.asked("cdn.example.net") || !f.up.asked("nowhere.example.org") {
		t.Errorf("upstream saw %v", f.up.seen())
	}
	got := f.openCalls()
	if len(got) != 1 || got[0].id != "ws-allow" || got[0].ports != "all" {
		t.Errorf("Open calls = %v", got)
	}
}

func TestUnknownSourceRefused(t *testing.T) {
	f := newFixture(t, nil)
	for _, proto := range []string{"udp", "tcp"} {
		if r := f.query(t, unknownSrc, proto, "example.com", dns.TypeA, false); r.Rcode != dns.RcodeRefused {
			t.Errorf("%s from an unknown source: %v", proto, r)
		}
	}
	if len(f.up.seen()) != 0 || len(f.openCalls()) != 0 {
		t.Errorf("unknown source reached the upstream (%v) or opened (%v)", f.up.seen(), f.openCalls())
	}
}

func TestUnservableQueriesRefused(t *testing.T) {
	f := newFixture(t, nil)
	for _, qt := range []uint16{dns.TypeANY, dns.TypeNULL, dns.TypeAXFR, dns.TypeIXFR, dns.TypeHINFO} {
		if r := f.query(t, allowSrc, "tcp", "example.com", qt, false); r.Rcode != dns.RcodeRefused {
			t.Errorf("type %s: %v", dns.Type(qt), r)
		}
	}
	m := new(dns.Msg)
	m.SetQuestion("example.com.", dns.TypeA)
	m.Question[0].Qclass = dns.ClassCHAOS
	if r := f.exchange(t, allowSrc, "udp", m); r.Rcode != dns.RcodeRefused {
		t.Errorf("class CH: %v", r)
	}
	for _, name := range []string{`a\000b.example.com`, `a\.b.example.com`, `sp\032ace.example.com`, "*.example.com", "."} {
		if r := f.query(t, allowSrc, "udp", name, dns.TypeA, false); r.Rcode != dns.RcodeRefused {
			t.Errorf("name %q: %v", name, r)
		}
	}
	// Other opcodes and messages with records in them are not queries.
	m = new(dns.Msg)
	m.SetNotify("example.com.")
	if r := f.exchange(t, allowSrc, "udp", m); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: %v", r)
	}
	m = new(dns.Msg)
	m.SetQuestion("example.com.", dns.TypeA)
	m.Answer = []dns.RR{rr(t, "example.com. 1 IN TXT \"payload\"")}
	if r := f.exchange(t, allowSrc, "udp", m); r.Rcode != dns.RcodeFormatError {
		t.Errorf("query with an answer section: %v", r)
	}
	if q := f.up.seen(); len(q) != 0 {
		t.Errorf("upstream saw %v", q)
	}
	// Refusals are listed with the denials, the last reason per name.
	var ex *DeniedName
	for _, d := range f.srv.Denied("ws-allow") {
		if d.Name == "example.com" {
			ex = &d
		}
	}
	if ex == nil || ex.Count != 6 || ex.Reason != "class CH is not served" {
		t.Errorf("Denied example.com = %+v; want 6 refusals, the last for class CH", ex)
	}
}

func TestQueryRebuiltForUpstream(t *testing.T) {
	f := newFixture(t, nil)
	m := new(dns.Msg)
	m.SetQuestion("example.com.", dns.TypeA)
	m.SetEdns0(4096, true)
	o := m.IsEdns0()
	o.Option = append(o.Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte("exfiltrated secret")},
		&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(10, 0, 0, 0)})
	if r := f.exchange(t, denySrc, "udp", m); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("answer = %v", r)
	}
	if q := f.up.seen(); len(q) != 1 || q[0].opts != 0 {
		t.Errorf("upstream saw %v; want one query without the client's EDNS options", q)
	}
}

func TestLargeAnswers(t *testing.T) {
	f := newFixture(t, nil)
	// Over UDP without EDNS the client gets a truncated answer and the TC bit.
	r := f.query(t, denySrc, "udp", "big.example.com", dns.TypeA, false)
	if !r.Truncated || len(r.Answer) >= 100 {
		t.Errorf("UDP/512: truncated %v with %d records", r.Truncated, len(r.Answer))
	}
	r.Compress = true
	if n, _ := r.Pack(); len(n) > dns.MinMsgSize {
		t.Errorf("UDP/512 answer is %d bytes", len(n))
	}
	// The upstream's answer was too big for 1232 bytes: berth retried over TCP.
	var protos []string
	for _, q := range f.up.seen() {
		protos = append(protos, q.proto)
	}
	if !slices.Equal(protos, []string{"udp", "tcp"}) {
		t.Errorf("upstream queries over %v; want udp then tcp", protos)
	}
	// All 100 addresses were opened though the client saw only some.
	if got := f.openCalls(); len(got) != 1 || len(got[0].addrs) != 100 {
		t.Errorf("opened %v", got)
	}
	r = f.query(t, denySrc, "tcp", "big.example.com", dns.TypeA, false)
	if r.Truncated || len(r.Answer) != 100 {
		t.Errorf("TCP: truncated %v with %d records", r.Truncated, len(r.Answer))
	}
	r = f.query(t, denySrc, "udp", "big.example.com", dns.TypeA, true)
	if r.Truncated || len(r.Answer) != 100 {
		t.Errorf("UDP/4096: truncated %v with %d records", r.Truncated, len(r.Answer))
	}
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RatePerSecond, c.Burst = 1, 3 })
	for i := range 3 {
		if r := f.query(t, denySrc, "udp", "example.com", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
			t.Fatalf("query %d within the burst: %v", i, r)
		}
	}
	if r := f.query(t, denySrc, "udp", "example.com", dns.TypeA, false); r.Rcode != dns.RcodeRefused {
		t.Errorf("over the limit: %v", r)
	}
	// Another workspace has its own bucket.
	if r := f.query(t, allowSrc, "udp", "example.com", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Errorf("other workspace: %v", r)
	}
	if n := len(f.up.seen()); n != 4 {
		t.Errorf("upstream saw %d queries; want 4", n)
	}
	f.advance(time.Second)
	if r := f.query(t, denySrc, "udp", "example.com", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Errorf("after a second: %v", r)
	}
}

func TestDeniedList(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxDenied = 3 })
	for _, name := range []string{"a.test", "b.test", "a.test", "c.test", "d.test", "A.test."} {
		f.advance(time.Second)
		f.query(t, denySrc, "udp", name, dns.TypeA, false)
	}
	d := f.srv.Denied("ws-deny")
	var got []string
	for _, x := range d {
		got = append(got, fmt.Sprintf("%s:%d:%s", x.Name, x.Count, x.Reason))
	}
	// b.test, the least recently denied, was dropped for d.test.
	want := []string{"a.test:3:default", "d.test:1:default", "c.test:1:default"}
	if !slices.Equal(got, want) {
		t.Errorf("Denied = %v; want %v", got, want)
	}
	if !d[0].Last.Equal(f.now) || d[0].Type != "A" {
		t.Errorf("latest = %+v", d[0])
	}
	f.advance(time.Second)
	f.query(t, denySrc, "udp", "evil.github.com", dns.TypeAAAA, false)
	if d := f.srv.Denied("ws-deny"); d[0].Name != "evil.github.com" || d[0].Reason != "deny[0] evil.github.com" || d[0].Type != "AAAA" {
		t.Errorf("Denied[0] = %+v", d[0])
	}
	f.srv.Forget("ws-deny")
	if d := f.srv.Denied("ws-deny"); len(d) != 0 {
		t.Errorf("after Forget: %v", d)
	}
}

func TestUpstreamFailover(t *testing.T) {
	// A closed port first: the exchange fails and the next upstream answers.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	var f *fixture
	f = newFixture(t, func(c *Config) { c.Upstreams = append([]string{dead}, c.Upstreams...) })
	if r := f.query(t, denySrc, "udp", "example.com", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Errorf("answer = %v", r)
	}
	g := newFixture(t, func(c *Config) { c.Upstreams = []string{dead} })
	if r := g.query(t, denySrc, "udp", "example.com", dns.TypeA, false); r.Rcode != dns.RcodeServerFailure || len(g.openCalls()) != 0 {
		t.Errorf("no upstream: %v, opened %v", r, g.openCalls())
	}
}

func TestListenersComeAndGo(t *testing.T) {
	f := newFixture(t, nil)
	second, err := f.srv.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.Listen(second); err == nil {
		t.Errorf("listening twice on %s accepted", second)
	}
	if got := f.srv.Addrs(); len(got) != 2 {
		t.Errorf("Addrs = %v", got)
	}
	first := f.addr
	f.addr = second.String()
	if r := f.query(t, denySrc, "tcp", "example.com", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Errorf("second listener: %v", r)
	}
	if err := f.srv.Stop(second); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Stop(second); err != nil {
		t.Errorf("stopping twice: %v", err)
	}
	if c, err := net.Dial("tcp", second.String()); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", second)
	}
	// The first listener is unaffected.
	f.addr = first
	if r := f.query(t, denySrc, "udp", "example.com", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Errorf("first listener after stopping the second: %v", r)
	}
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", first); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Close", first)
	}
	if _, err := f.srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")); err != ErrClosed {
		t.Errorf("Listen after Close = %v", err)
	}
}

func TestConfig(t *testing.T) {
	if _, err := New(Config{Upstreams: []string{"127.0.0.1:53"}}); err == nil {
		t.Errorf("no Lookup accepted")
	}
	lookup := func(netip.Addr) (string, netpolicy.Policy, bool) { return "", netpolicy.Policy{}, false }
	if _, err := New(Config{Lookup: lookup, Upstreams: []string{"127.0.0.1"}}); err == nil {
		t.Errorf("upstream without a port accepted")
	}
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	os.WriteFile(rc, []byte("# systemd-resolved\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\nsearch lan\n"), 0o644)
	s, err := New(Config{Lookup: lookup, ResolvConf: rc})
	if err != nil {
		t.Fatal(err)
	}
	// Loopback upstreams are kept: berth forwards from the host's namespace.
	if got := s.Upstreams(); !slices.Equal(got, []string{"127.0.0.53:53", "[::1]:53"}) {
		t.Errorf("upstreams from resolv.conf = %v", got)
	}
	os.WriteFile(rc, []byte("search lan\n"), 0o644)
	if _, err := New(Config{Lookup: lookup, ResolvConf: rc}); err == nil || !strings.Contains(err.Error(), "names no nameserver") {
		t.Errorf("resolv.conf without nameservers: %v", err)
	}
}
