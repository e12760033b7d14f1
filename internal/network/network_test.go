package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/netpolicy"
)

var (
	allowAll = netpolicy.Policy{Default: netpolicy.Allow}
	denyAll  = netpolicy.Policy{Default: netpolicy.Deny}
)

func cidr(s string, ports ...string) netpolicy.Rule { return netpolicy.Rule{CIDR: s, Ports: ports} }

func attach(t *testing.T, e *testEnv, id string, pol netpolicy.Policy) Attachment {
	t.Helper()
	a, err := e.m.Attach(context.Background(), id, pol)
	if err != nil {
		t.Fatalf("attach %s: %v", id, err)
	}
	if !e.cfg.Subnet.Contains(a.IP) || a.Gateway != e.m.Gateway() || a.NetnsPath == "" || a.HostVeth == "" {
		t.Fatalf("attachment %+v does not fit subnet %s", a, e.cfg.Subnet)
	}
	return a
}

func setPolicy(t *testing.T, e *testEnv, id string, pol netpolicy.Policy) {
	t.Helper()
	if err := e.m.SetPolicy(id, pol); err != nil {
		t.Fatalf("set policy of %s: %v", id, err)
	}
}

// deniedHas tells whether id's denied destinations list addr:port over TCP.
func deniedHas(t *testing.T, e *testEnv, id string, addr netip.Addr, port int) bool {
	t.Helper()
	ds, err := e.m.Denied(id)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(ds, func(d DeniedDestination) bool {
		return d.Addr == addr && d.Proto == "tcp" && int(d.Port) == port && d.Packets > 0
	})
}

func TestEgressPolicy(t *testing.T) {
	e := newTestEnv(t)
	a := attach(t, e, "ws-a", allowAll)
	ns := a.NetnsPath
	host, host2, host3 := e.hostAddr(e.hostIP), e.hostAddr(e.hostIP2), e.hostAddr(e.hostIP3)
	other := net.JoinHostPort(e.hostIP.String(), fmt.Sprint(e.port+1))
	metadata := net.JoinHostPort("169.254.169.254", fmt.Sprint(e.port))

	t.Run("default allow reaches the test host", func(t *testing.T) {
		setPolicy(t, e, a.ID, allowAll)
		e.mustReach(t, ns, host)
		e.mustReach(t, ns, host2)
	})
	t.Run("metadata is blocked by default and recorded", func(t *testing.T) {
		setPolicy(t, e, a.ID, allowAll)
		e.mustNotReach(t, ns, metadata)
		if !deniedHas(t, e, a.ID, netip.MustParseAddr("169.254.169.254"), e.port) {
			t.Fatalf("denied destinations lack the metadata address")
		}
	})
	t.Run("metadata opens to a rule naming it, not to 0.0.0.0/0", func(t *testing.T) {
		setPolicy(t, e, a.ID, netpolicy.Policy{Default: netpolicy.Deny, Allow: []netpolicy.Rule{cidr("0.0.0.0/0")}})
		e.mustReach(t, ns, host)
		e.mustNotReach(t, ns, metadata)
		setPolicy(t, e, a.ID, netpolicy.Policy{Default: netpolicy.Deny, Allow: []netpolicy.Rule{cidr("169.254.169.254")}})
		e.mustReach(t, ns, metadata)
		e.mustNotReach(t, ns, host)
	})
	t.Run("default deny blocks and records", func(t *testing.T) {
		setPolicy(t, e, a.ID, denyAll)
		e.mustNotReach(t, ns, host)
		if !deniedHas(t, e, a.ID, e.hostIP, e.port) {
			t.Fatalf("denied destinations lack %s", host)
		}
	})
	t.Run("allow CIDR opens exactly it", func(t *testing.T) {
		setPolicy(t, e, a.ID, netpolicy.Policy{Default: netpolicy.Deny, Allow: []netpolicy.Rule{cidr(e.hostIP.String() + "/32")}})
		e.mustReach(t, ns, host)
		e.mustReach(t, ns, other)
		e.mustNotReach(t, ns, host2)
	})
	t.Run("allow CIDR with ports opens only those ports", func(t *testing.T) {
		setPolicy(t, e, a.ID, netpolicy.Policy{Default: netpolicy.Deny, Allow: []netpolicy.Rule{cidr(e.hostIP.String(), fmt.Sprint(e.port), "1-2")}})
		e.mustReach(t, ns, host)
		e.mustNotReach(t, ns, other)
	})
	t.Run("deny wins over allow", func(t *testing.T) {
		wide := netip.PrefixFrom(e.hostIP, 24).Masked().String()
		setPolicy(t, e, a.ID, netpolicy.Policy{Default: netpolicy.Allow,
			Allow: []netpolicy.Rule{cidr(wide)}, Deny: []netpolicy.Rule{cidr(e.hostIP.String())}})
		e.mustNotReach(t, ns, host)
		e.mustReach(t, ns, host2)
		setPolicy(t, e, a.ID, netpolicy.Policy{Default: netpolicy.Allow,
			Deny: []netpolicy.Rule{cidr(wide, fmt.Sprintf("%d-%d", e.port+1, e.port+1))}})
		e.mustReach(t, ns, host)
		e.mustNotReach(t, ns, other)
	})
	t.Run("AllowResolved opens exactly the answer until its TTL", func(t *testing.T) {
		setPolicy(t, e, a.ID, denyAll)
		e.mustNotReach(t, ns, host2)
		ttl := 3 * time.Second
		if err := e.m.AllowResolved(a.ID, []netip.Addr{e.hostIP2, netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("2001:db8::1")}, ttl); err != nil {
			t.Fatal(err)
		}
		e.mustReach(t, ns, host2)
		e.mustNotReach(t, ns, host3)
		e.mustNotReach(t, ns, metadata)
		// Wait for the kernel to expire the element, then check.
		waitFor(t, "the resolved address to expire", func() bool { return !dnsOpen(t, e, a.ID, e.hostIP2) })
		e.mustNotReach(t, ns, host2)
	})
	t.Run("AllowResolved extends, never shortens", func(t *testing.T) {
		setPolicy(t, e, a.ID, denyAll)
		must(t, e.m.AllowResolved(a.ID, []netip.Addr{e.hostIP2}, time.Hour))
		must(t, e.m.AllowResolved(a.ID, []netip.Addr{e.hostIP2}, time.Millisecond))
		if left := dnsExpires(t, e, a.ID, e.hostIP2); left < 50*time.Minute {
			t.Fatalf("a shorter TTL cut the opening to %v", left)
		}
		must(t, e.m.AllowResolved(a.ID, []netip.Addr{e.hostIP3}, time.Minute))
		must(t, e.m.AllowResolved(a.ID, []netip.Addr{e.hostIP3}, 2*time.Hour))
		if left := dnsExpires(t, e, a.ID, e.hostIP3); left < 90*time.Minute {
			t.Fatalf("a longer TTL did not extend the opening: %v left", left)
		}
		e.mustReach(t, ns, host3)
	})
	t.Run("OpenResolved opens only the name's ports", func(t *testing.T) {
		setPolicy(t, e, a.ID, denyAll)
		other2 := net.JoinHostPort(e.hostIP2.String(), fmt.Sprint(e.port+1))
		ports := netpolicy.PortSet{{Lo: uint16(e.port), Hi: uint16(e.port)}, {Lo: 1, Hi: 3}}
		must(t, e.m.OpenResolved(a.ID, []netip.Addr{e.hostIP2}, ports, time.Hour))
		e.mustReach(t, ns, host2)
		e.mustNotReach(t, ns, other2)
		e.mustNotReach(t, ns, host3)
		if err := e.m.OpenResolved(a.ID, []netip.Addr{e.hostIP3}, netpolicy.PortSet{{Lo: 1, Hi: 5000}}, time.Hour); err == nil {
			t.Fatal("5000 ports were opened one by one")
		}
		e.mustNotReach(t, ns, host3)
		if got, ok := e.m.ByAddr(a.IP); !ok || got.ID != a.ID {
			t.Fatalf("ByAddr(%s) = %+v, %v", a.IP, got, ok)
		}
		if _, ok := e.m.ByAddr(e.hostIP); ok {
			t.Fatalf("ByAddr found a workspace at the test host's address")
		}
	})
	t.Run("deny wins over AllowResolved", func(t *testing.T) {
		setPolicy(t, e, a.ID, netpolicy.Policy{Default: netpolicy.Deny, Deny: []netpolicy.Rule{cidr(e.hostIP2.String())}})
		must(t, e.m.AllowResolved(a.ID, []netip.Addr{e.hostIP2, e.hostIP3}, time.Hour))
		e.mustNotReach(t, ns, host2)
		e.mustReach(t, ns, host3)
	})
	t.Run("SetPolicy closes what AllowResolved opened", func(t *testing.T) {
		setPolicy(t, e, a.ID, denyAll)
		must(t, e.m.AllowResolved(a.ID, []netip.Addr{e.hostIP2}, time.Hour))
		e.mustReach(t, ns, host2)
		setPolicy(t, e, a.ID, denyAll)
		e.mustNotReach(t, ns, host2)
	})
	t.Run("DNS elsewhere and DoT fall under the policy", func(t *testing.T) {
		setPolicy(t, e, a.ID, netpolicy.Policy{Default: netpolicy.Deny, Allow: []netpolicy.Rule{cidr(e.hostIP.String())}})
		for _, port := range []int{53, 853} {
			// Nothing listens there: allowed means refused by the test host,
			// denied means dropped and recorded.
			addr := net.JoinHostPort(e.hostIP2.String(), fmt.Sprint(port))
			e.mustNotReach(t, ns, addr)
			if !deniedHas(t, e, a.ID, e.hostIP2, port) {
				t.Fatalf("port %d to an address not allowed was not denied", port)
			}
		}
	})
	t.Run("bad policies are refused", func(t *testing.T) {
		for _, p := range []netpolicy.Policy{
			{Default: "maybe"},
			{Default: netpolicy.Deny, Allow: []netpolicy.Rule{cidr("10.0.0.0/33")}},
			{Default: netpolicy.Deny, Allow: []netpolicy.Rule{cidr("10.0.0.1", "0")}},
			{Default: netpolicy.Deny, Deny: []netpolicy.Rule{cidr("10.0.0.1", "70000")}},
		} {
			if err := e.m.SetPolicy(a.ID, p); err == nil {
				t.Errorf("policy %+v was accepted", p)
			}
		}
	})
	if err := e.m.SetPolicy("nope", allowAll); !errors.Is(err, ErrNotAttached) {
		t.Errorf("SetPolicy of an unknown workspace: %v", err)
	}
	if err := e.m.AllowResolved("nope", []netip.Addr{e.hostIP}, time.Hour); !errors.Is(err, ErrNotAttached) {
		t.Errorf("AllowResolved of an unknown workspace: %v", err)
	}
}

func dnsElements(t *testing.T, e *testEnv, id string) map[netip.Addr]time.Duration {
	t.Helper()
	c, err := nftables.New()
	must(t, err)
	els, err := c.GetSetElements(e.m.tables.dnsSet(id))
	must(t, err)
	out := map[netip.Addr]time.Duration{}
	for _, el := range els {
		a, _ := netip.AddrFromSlice(el.Key)
		out[a] = el.Expires
	}
	return out
}

func dnsOpen(t *testing.T, e *testEnv, id string, a netip.Addr) bool {
	_, ok := dnsElements(t, e, id)[a]
	return ok
}

func dnsExpires(t *testing.T, e *testEnv, id string, a netip.Addr) time.Duration {
	left, ok := dnsElements(t, e, id)[a]
	if !ok {
		t.Fatalf("%s is not open", a)
	}
	return left
}

func TestIsolation(t *testing.T) {
	e := newTestEnv(t)
	a := attach(t, e, "ws-a", allowAll)
	b := attach(t, e, "ws-b", allowAll)

	// B serves; the host (root namespace) reaches it, A must not.
	bAddr := net.JoinHostPort(b.IP.String(), "9000")
	serveIn(t, b.NetnsPath, "0.0.0.0:9000")
	if err := reach(rootNS, bAddr, okTimeout); err != nil {
		t.Fatalf("the host cannot reach B's server (the check would prove nothing): %v", err)
	}
	t.Run("a workspace cannot reach another", func(t *testing.T) {
		e.mustNotReach(t, a.NetnsPath, bAddr)
		// Not through the gateway either (routed rather than bridged).
		must(t, inNetns(a.NetnsPath, func() error {
			l, err := netlink.LinkByName(containerIface)
			if err != nil {
				return err
			}
			return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixNet(netip.PrefixFrom(b.IP, 32)), Gw: a.Gateway.AsSlice()})
		}))
		e.mustNotReach(t, a.NetnsPath, bAddr)
	})
	t.Run("a workspace cannot reach the host's services", func(t *testing.T) {
		gw := a.Gateway.String()
		wild := serveIn(t, "", "0.0.0.0:0")
		port := fmt.Sprint(wild.Addr().(*net.TCPAddr).Port)
		onGW := serveIn(t, "", net.JoinHostPort(gw, "0"))
		dns := serveIn(t, "", net.JoinHostPort(gw, "53"))
		for _, addr := range []string{net.JoinHostPort(gw, port), net.JoinHostPort(e.rootIP.String(), port), onGW.Addr().String()} {
			if err := reach(rootNS, addr, okTimeout); err != nil {
				t.Fatalf("the host cannot reach its own %s: %v", addr, err)
			}
			e.mustNotReach(t, a.NetnsPath, addr)
		}
		// DNS to the gateway is the one exception.
		e.mustReach(t, a.NetnsPath, dns.Addr().String())
		// Even a deny-all workspace has it: the resolver decides there.
		setPolicy(t, e, a.ID, denyAll)
		e.mustReach(t, a.NetnsPath, dns.Addr().String())
		setPolicy(t, e, a.ID, allowAll)
	})
	t.Run("a workspace cannot use another address", func(t *testing.T) {
		// A one-way datagram is what a borrowed address is good for (the
		// replies go to the address's owner): A, denied everything, sends
		// as B, allowed everything, to a UDP listener on the test host.
		setPolicy(t, e, a.ID, denyAll)
		setPolicy(t, e, b.ID, allowAll)
		var uc net.PacketConn
		must(t, inNetns(e.hostNS, func() (err error) { uc, err = net.ListenPacket("udp4", "0.0.0.0:0"); return err }))
		defer uc.Close()
		dst := net.JoinHostPort(e.hostIP.String(), fmt.Sprint(uc.LocalAddr().(*net.UDPAddr).Port))
		got := make(chan string, 16)
		go func() {
			buf := make([]byte, 64)
			for {
				n, _, err := uc.ReadFrom(buf)
				if err != nil {
					return
				}
				got <- string(buf[:n])
			}
		}()
		send := func(ns string, from netip.Addr, msg string) {
			t.Helper()
			must(t, inNetns(ns, func() error {
				c, err := net.DialUDP("udp4", &net.UDPAddr{IP: from.AsSlice()}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = c.Write([]byte(msg))
				return err
			}))
		}
		// B's own datagram arrives: the check can fail.
		send(b.NetnsPath, b.IP, "from-b")
		select {
		case m := <-got:
			if m != "from-b" {
				t.Fatalf("got %q", m)
			}
		case <-time.After(okTimeout):
			t.Fatal("B's datagram never arrived")
		}
		unattached := e.cfg.Subnet.Addr().Next().Next().Next().Next().Next()
		for _, spoof := range []netip.Addr{b.IP, unattached} {
			must(t, inNetns(a.NetnsPath, func() error {
				l, err := netlink.LinkByName(containerIface)
				if err != nil {
					return err
				}
				return netlink.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(spoof, 32))})
			}))
			send(a.NetnsPath, spoof, "spoofed")
		}
		// And a marker from B after them, through the same host to the same
		// test host: when it is here, the spoofed ones would have been too.
		send(b.NetnsPath, b.IP, "marker")
		for {
			select {
			case m := <-got:
				if m == "spoofed" {
					t.Fatal("a datagram from A with another's address arrived")
				}
				if m == "marker" {
					return
				}
			case <-time.After(okTimeout):
				t.Fatal("B's marker never arrived")
			}
		}
	})
	t.Run("workspaces have no IPv6", func(t *testing.T) {
		// Link-local IPv6 would otherwise reach the host's wildcard-bound
		// services on the bridge.
		ln, err := net.Listen("tcp6", "[::]:0")
		must(t, err)
		defer ln.Close()
		// Both ends need their link-local address past duplicate address
		// detection, or the dial fails for that reason instead of ours.
		var ll netip.Addr
		waitFor(t, "link-local IPv6 on the bridge and in A", func() bool {
			br, err := netlink.LinkByName(e.cfg.Bridge)
			if err != nil {
				return false
			}
			ll = linkLocal(br)
			inA := false
			inNetns(a.NetnsPath, func() error {
				l, err := netlink.LinkByName(containerIface)
				if err == nil {
					inA = linkLocal(l).IsValid()
				}
				return nil
			})
			return ll.IsValid() && inA
		})
		addr := net.JoinHostPort(ll.WithZone(containerIface).String(), fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
		c, err := dialFrom(a.NetnsPath, addr, netip.Addr{}, dropTimeout)
		if err == nil {
			c.Close()
			t.Fatalf("A reached the host over IPv6 at %s", addr)
		}
	})
}

func TestDetach(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	a := attach(t, e, "ws-a", denyAll)
	keep := attach(t, e, "ws-keep", allowAll)
	must(t, e.m.AllowResolved(a.ID, []netip.Addr{e.hostIP2}, time.Hour))
	e.mustNotReach(t, a.NetnsPath, e.hostAddr(e.hostIP))
	ipamFile := filepath.Join(e.cfg.ipamDir(), e.cfg.tableName(), a.IP.String())
	if _, err := os.Stat(ipamFile); err != nil {
		t.Fatalf("no IPAM allocation to check for: %v", err)
	}

	must(t, e.m.Detach(ctx, a.ID))
	if _, ok := e.m.Attached(a.ID); ok {
		t.Error("still attached")
	}
	if _, err := netlink.LinkByName(a.HostVeth); err == nil {
		t.Errorf("veth %s is left", a.HostVeth)
	}
	if _, err := os.Stat(ipamFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("IPAM allocation %s is left: %v", ipamFile, err)
	}
	if _, err := os.Lstat(a.NetnsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns %s is left: %v", a.NetnsPath, err)
	}
	if _, err := os.Lstat(e.m.recordPath(a.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record is left: %v", err)
	}
	c, err := nftables.New()
	must(t, err)
	o, err := e.m.tables.list(c)
	must(t, err)
	if ids := o.workspaceIDs(); !slices.Equal(ids, []string{keep.ID}) {
		t.Errorf("nftables objects of workspaces %v, want only %s", ids, keep.ID)
	}
	if o.wsAddr[a.IP] || o.ports[a.HostVeth] || o.bound[string(boundKey(a.HostVeth, a.IP))] {
		t.Errorf("entries of %s are left in the shared sets: %+v", a.ID, o)
	}
	if _, err := e.m.Denied(a.ID); !errors.Is(err, ErrNotAttached) {
		t.Errorf("Denied after Detach: %v", err)
	}
	// Idempotent, and the others are untouched.
	must(t, e.m.Detach(ctx, a.ID))
	must(t, e.m.Detach(ctx, "never-attached"))
	e.mustReach(t, keep.NetnsPath, e.hostAddr(e.hostIP))

	// The same workspace attaches again.
	a2 := attach(t, e, a.ID, allowAll)
	e.mustReach(t, a2.NetnsPath, e.hostAddr(e.hostIP))
	// A policy change through Attach of an attached workspace.
	if again := attach(t, e, a.ID, denyAll); again.IP != a2.IP || again.NetnsPath != a2.NetnsPath {
		t.Errorf("re-Attach moved the workspace: %+v then %+v", a2, again)
	}
	e.mustNotReach(t, a2.NetnsPath, e.hostAddr(e.hostIP))
}

func TestReadopt(t *testing.T) {
	e := newTestEnv(t)
	pol := netpolicy.Policy{Default: netpolicy.Deny, Allow: []netpolicy.Rule{cidr(e.hostIP.String())}}
	a := attach(t, e, "ws-a", pol)
	b := attach(t, e, "ws-b", allowAll)
	must(t, e.m.AllowResolved(a.ID, []netip.Addr{e.hostIP2}, time.Hour))

	// A connection open across the restart.
	conn, err := dialFrom(a.NetnsPath, net.JoinHostPort(e.hostIP.String(), fmt.Sprint(e.port+2)), netip.Addr{}, okTimeout)
	must(t, err)
	defer conn.Close()
	rd := bufio.NewReader(conn)
	echo := func(msg string) {
		t.Helper()
		conn.SetDeadline(time.Now().Add(okTimeout))
		if _, err := fmt.Fprintln(conn, msg); err != nil {
			t.Fatal(err)
		}
		line, err := rd.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != msg {
			t.Fatalf("echo %q: got %q, %v", msg, line, err)
		}
	}
	echo("before")

	// berth restarts: a new Manager over the same state.
	m2, err := New(e.cfg)
	must(t, err)
	e.m = m2
	for _, want := range []Attachment{a, b} {
		got, ok := m2.Attached(want.ID)
		if !ok || got.IP != want.IP || got.HostVeth != want.HostVeth || got.NetnsPath != want.NetnsPath {
			t.Fatalf("re-adopted %s as %+v (%v), want %+v", want.ID, got, ok, want)
		}
	}
	if got, _ := m2.Attached(a.ID); len(got.Policy.Allow) != 1 || got.Policy.Default != netpolicy.Deny {
		t.Errorf("re-adopted policy %+v, want %+v", got.Policy, pol)
	}
	echo("after")
	e.mustReach(t, a.NetnsPath, e.hostAddr(e.hostIP))
	e.mustReach(t, a.NetnsPath, e.hostAddr(e.hostIP2)) // opened by DNS before the restart
	e.mustNotReach(t, a.NetnsPath, e.hostAddr(e.hostIP3))
	e.mustReach(t, b.NetnsPath, e.hostAddr(e.hostIP3))
	must(t, m2.SetPolicy(a.ID, allowAll))
	e.mustReach(t, a.NetnsPath, e.hostAddr(e.hostIP3))

	// A reboot loses the namespaces (and the veths in them); the next New
	// cleans up what is recorded, IPAM included, and knows nothing attached.
	// (An open socket would keep A's namespace alive.)
	conn.Close()
	for _, x := range []Attachment{a, b} {
		must(t, removeNetns(x.NetnsPath))
		must(t, os.WriteFile(x.NetnsPath, nil, 0o444)) // the file stays, unmounted
	}
	waitFor(t, "the veths to go with their namespaces", func() bool {
		_, errA := netlink.LinkByName(a.HostVeth)
		_, errB := netlink.LinkByName(b.HostVeth)
		return errA != nil && errB != nil
	})
	m3, err := New(e.cfg)
	must(t, err)
	e.m = m3
	if atts := m3.Attachments(); len(atts) != 0 {
		t.Fatalf("attachments after a reboot: %+v", atts)
	}
	ents, _ := os.ReadDir(filepath.Join(e.cfg.ipamDir(), e.cfg.tableName()))
	for _, en := range ents {
		if _, err := netip.ParseAddr(en.Name()); err == nil {
			t.Errorf("IPAM allocation %s is left", en.Name())
		}
	}
	c, err := nftables.New()
	must(t, err)
	o, err := m3.tables.list(c)
	must(t, err)
	if ids := o.workspaceIDs(); len(ids) != 0 || len(o.wsAddr) != 0 || len(o.bound) != 0 || len(o.ports) != 0 {
		t.Errorf("nftables objects left after a reboot: %v %+v", ids, o)
	}
	for _, x := range []Attachment{a, b} {
		if _, err := os.Lstat(x.NetnsPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns file %s is left", x.NetnsPath)
		}
	}
	// And they attach again.
	a3 := attach(t, e, a.ID, pol)
	e.mustReach(t, a3.NetnsPath, e.hostAddr(e.hostIP))
	e.mustNotReach(t, a3.NetnsPath, e.hostAddr(e.hostIP2))
}

// linkLocal is l's usable IPv6 link-local address, if it has one.
func linkLocal(l netlink.Link) netip.Addr {
	addrs, _ := netlink.AddrList(l, netlink.FAMILY_V6)
	for _, ad := range addrs {
		a, _ := netip.AddrFromSlice(ad.IP)
		if a.IsLinkLocalUnicast() && ad.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
			return a
		}
	}
	return netip.Addr{}
}
