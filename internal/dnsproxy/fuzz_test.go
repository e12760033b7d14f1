package dnsproxy

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berth-dev/berth/internal/netpolicy"
)

func packed(t testing.TB, m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzServeDNS feeds arbitrary packets to the query handling, as a
// workspace could send them. berth must not crash, every reply must be a
// message it can send, and no name the source's policy denies may reach the
// upstream.
func FuzzServeDNS(f *testing.F) {
	q := func(name string, qt uint16, edns bool) []byte {
		m := new(dns.Msg)
		m.SetQuestion(name, qt)
		if edns {
			m.SetEdns0(4096, true)
		}
		return packed(f, m)
	}
	f.Add(q("example.com.", dns.TypeA, false), false)
	f.Add(q("www.example.com.", dns.TypeA, true), false)
	f.Add(q("evil.github.com.", dns.TypeAAAA, true), false)
	f.Add(q("cdn.example.net.", dns.TypeA, false), true)
	f.Add(q("big.example.com.", dns.TypeA, false), false)
	f.Add(q("example.com.", dns.TypeANY, false), true)
	f.Add(q(`a\000.example.com.`, dns.TypeTXT, false), true)
	n := new(dns.Msg)
	n.SetNotify("example.com.")
	f.Add(packed(f, n), true)
	f.Add([]byte{0, 1, 2}, false)

	fx := newFixture(f, func(c *Config) { c.RatePerSecond, c.Burst = 1e9, 1e9 })
	f.Fuzz(func(t *testing.T, pkt []byte, fromAllow bool) {
		req := new(dns.Msg)
		if err := req.Unpack(pkt); err != nil {
			return // the dns package drops what it cannot parse before berth sees it
		}
		src := denySrc
		if fromAllow {
			src = allowSrc
		}
		pol := fx.lookup[src].pol
		before := len(fx.up.seen())
		for _, tcp := range []bool{false, true} {
			resp := fx.srv.answer(src, req, tcp)
			if resp == nil {
				continue
			}
			if _, err := resp.Pack(); err != nil {
				t.Fatalf("reply to %v does not pack: %v", req, err)
			}
			if resp.Id != req.Id {
				t.Fatalf("reply id %d to query id %d", resp.Id, req.Id)
			}
		}
		for _, s := range fx.up.seen()[before:] {
			if v, m := pol.DomainVerdict(s.name); v != netpolicy.Allowed {
				t.Fatalf("upstream saw %q, which %s denies", s.name, m)
			}
		}
	})
}

// FuzzUpstreamReply lets the upstream answer with arbitrary bytes: berth
// must not crash, must send the workspace a message it can pack, and must
// open only addresses the reply gives the queried name, never protected ones.
func FuzzUpstreamReply(f *testing.F) {
	base := func() *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("rebind.example.com.", dns.TypeA)
		m.Response = true
		return m
	}
	for _, rrs := range [][]string{
		{"rebind.example.com. 300 IN A 192.0.2.1"},
		{"rebind.example.com. 300 IN CNAME a.example.", "a.example. 5 IN A 192.0.2.2", "b.example. 5 IN A 192.0.2.3"},
		{"rebind.example.com. 300 IN CNAME a.example.", "a.example. 5 IN CNAME rebind.example.com.", "a.example. 7 IN AAAA 2001:db8::1"},
		{"rebind.example.com. 0 IN A 127.0.0.1", "rebind.example.com. 4294967295 IN A 10.99.1.1"},
	} {
		m := base()
		for _, s := range rrs {
			m.Answer = append(m.Answer, rr(f, s))
		}
		f.Add(packed(f, m))
	}
	tc := base()
	tc.Truncated = true
	f.Add(packed(f, tc))
	f.Add([]byte{})

	var mu sync.Mutex
	var reply []byte
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			out := append([]byte(nil), reply...)
			mu.Unlock()
			if len(out) >= 2 && n >= 2 {
				copy(out[:2], buf[:2]) // the client drops replies to other ids
			}
			pc.WriteTo(out, from)
		}
	}()

	var opened []netip.Addr
	protected := netip.MustParsePrefix("10.99.0.0/16")
	s, err := New(Config{
		Upstreams:       []string{pc.LocalAddr().String()},
		UpstreamTimeout: 200 * time.Millisecond,
		Protected:       []netip.Prefix{protected},
		Lookup: func(netip.Addr) (string, netpolicy.Policy, bool) {
			return "ws", netpolicy.Policy{Default: netpolicy.Deny, Allow: []netpolicy.Rule{{Domain: "rebind.example.com"}}}, true
		},
		Open: func(_ string, addrs []netip.Addr, _ netpolicy.PortSet, ttl time.Duration) {
			if ttl < 30*time.Second || ttl > time.Hour {
				panic("TTL out of bounds")
			}
			opened = append(opened, addrs...)
		},
		RatePerSecond: 1e9, Burst: 1e9,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, upReply []byte) {
		mu.Lock()
		reply = upReply
		mu.Unlock()
		opened = nil
		req := new(dns.Msg)
		req.SetQuestion("rebind.example.com.", dns.TypeA)
		resp := s.answer(netip.MustParseAddr("127.0.0.1"), req, false)
		if resp == nil {
			t.Fatal("no reply")
		}
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("reply does not pack: %v", err)
		}
		if len(opened) == 0 {
			return
		}
		up := new(dns.Msg)
		if err := up.Unpack(upReply); err != nil {
			t.Fatalf("opened %v from a reply that does not parse: %v", opened, err)
		}
		for _, a := range opened {
			if protected.Contains(a) || !a.IsGlobalUnicast() {
				t.Fatalf("opened protected address %s", a)
			}
			found := false
			for _, r := range up.Answer {
				switch r := r.(type) {
				case *dns.A:
					found = found || net.IP.Equal(r.A, a.AsSlice())
				case *dns.AAAA:
					found = found || net.IP.Equal(r.AAAA, a.AsSlice())
				}
			}
			if !found {
				t.Fatalf("opened %s, which is not in the upstream's answer", a)
			}
		}
	})
}
