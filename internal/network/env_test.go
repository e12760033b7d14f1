package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The tests build this on one machine, with nothing leaving it:
//
//	workspace netns (Attach) ── veth ── bridge bt<N> (10.251.K.1/24, root ns)
//	root ns ── veth th<N>a (10.252.K.1) ═ th<N>b (10.252.K.2) ── test host netns
//
// A policy-routing rule sends everything from the test's workspace subnet to
// the test host, so even traffic to 169.254.169.254 or to a public address
// ends there, never on the machine's uplink.

var envSeq atomic.Int32

// rootNS names the namespace the tests started in (the host's), for dialing
// from it through inNetns like from any other. Opened at init, when every
// thread is still in it, and kept open so the path stays valid.
var (
	rootNSFile = func() *os.File {
		f, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			panic(err)
		}
		return f
	}()
	rootNS = fmt.Sprintf("/proc/self/fd/%d", rootNSFile.Fd())
)

type testEnv struct {
	cfg      Config
	m        *Manager
	hostNS   string     // the test host's namespace
	hostIP   netip.Addr // its main address (10.252.K.2)
	hostIP2  netip.Addr // a second address on it (10.252.K.3)
	hostIP3  netip.Addr // a third (10.252.K.4)
	rootIP   netip.Addr // the root ns end of the test host's veth
	port     int        // where the test host's servers listen (every address)
	hostAddr func(a netip.Addr) string
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("network tests need root (make test runs them as root)")
	}
	n := int(envSeq.Add(1))
	k := (os.Getpid()*7+n*13)%200 + 20
	tag := fmt.Sprintf("%d%d", os.Getpid()%10000, n)
	dir := t.TempDir()
	e := &testEnv{
		cfg: Config{
			Bridge:         "bt" + tag,
			Subnet:         netip.MustParsePrefix(fmt.Sprintf("10.251.%d.0/24", k)),
			StateDir:       filepath.Join(dir, "state"),
			MinResolvedTTL: time.Millisecond,
		},
		hostIP:  netip.MustParseAddr(fmt.Sprintf("10.252.%d.2", k)),
		hostIP2: netip.MustParseAddr(fmt.Sprintf("10.252.%d.3", k)),
		hostIP3: netip.MustParseAddr(fmt.Sprintf("10.252.%d.4", k)),
		rootIP:  netip.MustParseAddr(fmt.Sprintf("10.252.%d.1", k)),
		port:    8080,
	}
	e.hostAddr = func(a netip.Addr) string { return net.JoinHostPort(a.String(), fmt.Sprint(e.port)) }

	// The test host.
	e.hostNS = filepath.Join(dir, "testhost")
	if err := createNetns(e.hostNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNetns(e.hostNS) })
	va, vb := "th"+tag+"a", "th"+tag+"b"
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: va}, PeerName: vb}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(va); err == nil {
			netlink.LinkDel(l)
		}
	})
	la, _ := netlink.LinkByName(va)
	lb, _ := netlink.LinkByName(vb)
	must(t, netlink.AddrAdd(la, mustAddr(e.rootIP.String()+"/24")))
	must(t, netlink.LinkSetUp(la))
	nsf, err := os.Open(e.hostNS)
	must(t, err)
	defer nsf.Close()
	must(t, netlink.LinkSetNsFd(lb, int(nsf.Fd())))
	must(t, inNetns(e.hostNS, func() error {
		l, err := netlink.LinkByName(vb)
		if err != nil {
			return err
		}
		for _, a := range []string{e.hostIP.String() + "/24", e.hostIP2.String() + "/32", e.hostIP3.String() + "/32", "169.254.169.254/32"} {
			if err := netlink.AddrAdd(l, mustAddr(a)); err != nil {
				return fmt.Errorf("%s: %w", a, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}))

	// Everything the workspaces send through the host goes to the test host.
	table := 20000 + k
	route := &netlink.Route{Table: table, Dst: nil, Gw: e.hostIP.AsSlice(), LinkIndex: la.Attrs().Index}
	must(t, netlink.RouteAdd(route))
	t.Cleanup(func() { netlink.RouteDel(route) })
	rule := netlink.NewRule()
	rule.Src = prefixNet(e.cfg.Subnet)
	// Forwarded traffic only: the host's own packets from the gateway
	// address (to a workspace) keep the main table.
	rule.IifName = e.cfg.Bridge
	rule.Table = table
	rule.Priority = 20000 + k
	must(t, netlink.RuleAdd(rule))
	t.Cleanup(func() { netlink.RuleDel(rule) })

	// The test host's servers, on every address: a greeting server on the
	// main port and one more (to tell ports apart), and an echo server.
	serveIn(t, e.hostNS, fmt.Sprintf("0.0.0.0:%d", e.port))
	serveIn(t, e.hostNS, fmt.Sprintf("0.0.0.0:%d", e.port+1))
	echoIn(t, e.hostNS, fmt.Sprintf("0.0.0.0:%d", e.port+2))

	// Whatever New or the test leaves, even when they fail half way.
	t.Cleanup(func() { sweep(t, e.cfg) })
	m, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	t.Cleanup(func() {
		if err := e.m.Teardown(context.Background()); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	return e
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustAddr(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// serveIn listens on addr in the namespace at ns (the root namespace when
// ns is "") and answers every connection with "ok <local address>\n", then
// copies what it reads to nowhere (for the benchmark).
func serveIn(t testing.TB, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	listen := func() (err error) { ln, err = net.Listen("tcp4", addr); return err }
	var err error
	if ns == "" {
		err = listen()
	} else {
		err = inNetns(ns, listen)
	}
	if err != nil {
		t.Fatalf("listen on %s in %q: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "ok %s\n", c.LocalAddr())
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln
}

// echoIn serves an echo server on addr in the namespace ns.
func echoIn(t testing.TB, ns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := inNetns(ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
}

// dialFrom connects from the namespace at ns to addr, optionally from a
// given local address, with a bound on the time a dropped SYN may take.
func dialFrom(ns, addr string, local netip.Addr, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	var c net.Conn
	err := inNetns(ns, func() (err error) { c, err = d.Dial("tcp", addr); return err })
	return c, err
}

// reach tells whether the namespace at ns gets the greeting of the server at
// addr. Allowed connections have a generous bound (a busy machine); denied
// ones are dropped, so a short bound only decides how long "no" takes.
func reach(ns, addr string, timeout time.Duration) error {
	c, err := dialFrom(ns, addr, netip.Addr{}, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if !strings.HasPrefix(line, "ok ") {
		return fmt.Errorf("unexpected greeting %q", line)
	}
	return nil
}

const (
	okTimeout   = 10 * time.Second
	dropTimeout = 1500 * time.Millisecond
)

func (e *testEnv) mustReach(t *testing.T, ns, addr string) {
	t.Helper()
	if err := reach(ns, addr, okTimeout); err != nil {
		t.Fatalf("%s should be reachable: %v", addr, err)
	}
}

// mustNotReach checks a connection fails; a timeout or a refusal both count
// (a refusal only where wantDeniedBy is empty).
func (e *testEnv) mustNotReach(t *testing.T, ns, addr string) {
	t.Helper()
	err := reach(ns, addr, dropTimeout)
	if err == nil {
		t.Fatalf("%s should be unreachable", addr)
	}
	var ne net.Error
	if !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, unix.ECONNREFUSED) && !errors.Is(err, unix.EHOSTUNREACH) && !errors.Is(err, unix.ENETUNREACH) {
		t.Fatalf("%s: unexpected error %v", addr, err)
	}
}

// waitFor polls cond until it holds, failing the test after a long bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sweep removes berth's tables and bridge of cfg, and any veth left on the
// bridge, failing the test if there was anything to remove that Teardown
// should have removed.
func sweep(t testing.TB, cfg Config) {
	c, err := nftables.New()
	if err != nil {
		t.Errorf("sweep: %v", err)
		return
	}
	tabs, _ := c.ListTables()
	for _, tb := range tabs {
		if tb.Name == "berth-"+cfg.Bridge {
			c.DelTable(tb)
		}
	}
	if err := c.Flush(); err != nil {
		t.Errorf("sweep tables: %v", err)
	}
	if l, err := netlink.LinkByName(cfg.Bridge); err == nil {
		links, _ := netlink.LinkList()
		for _, p := range links {
			if p.Attrs().MasterIndex == l.Attrs().Index {
				netlink.LinkDel(p)
			}
		}
		netlink.LinkDel(l)
	}
}
