package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The network tests build, on this machine only:
//
//	workspaces ── bridge bn<tag> (10.253.K.0/24, berth's) ── root ns
//	root ns (10.254.K.1) ── veth ── test host netns (10.254.K.2)
//
// The test DNS server listens in the root ns on 10.254.K.1 and is berth's
// only upstream; nothing is routed anywhere else.
type netEnv struct {
	*env
	bridge      string
	hostIP      string // the test host
	rootIP      string // the root ns end of its veth
	dnsMu       sync.Mutex
	dnsSeen     []string
	loopbackSvc string // a service on the host's 127.0.0.1
	wildSvc     int    // a service on every host address (port)
}

const testHostName = "testhost.berth.test"

func newNetEnv(t *testing.T) *netEnv {
	t.Helper()
	e := newEnv(t)
	k := os.Getpid()%200 + 20
	tag := fmt.Sprint(os.Getpid() % 100000)
	n := &netEnv{env: e, bridge: "bn" + tag, hostIP: fmt.Sprintf("10.254.%d.2", k), rootIP: fmt.Sprintf("10.254.%d.1", k)}

	// The test host: a namespace with one veth to the root ns.
	nsPath := e.stateDir + "/testhost"
	must(t, exec.Command("sh", "-c", "touch "+nsPath+" && unshare --net="+nsPath+" true").Run())
	t.Cleanup(func() { unix.Unmount(nsPath, unix.MNT_DETACH); os.Remove(nsPath) })
	va, vb := "tv"+tag+"a", "tv"+tag+"b"
	must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: va}, PeerName: vb}))
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(va); err == nil {
			netlink.LinkDel(l)
		}
	})
	la, _ := netlink.LinkByName(va)
	lb, _ := netlink.LinkByName(vb)
	addr, _ := netlink.ParseAddr(n.rootIP + "/24")
	must(t, netlink.AddrAdd(la, addr))
	must(t, netlink.LinkSetUp(la))
	nsf, err := os.Open(nsPath)
	must(t, err)
	defer nsf.Close()
	must(t, netlink.LinkSetNsFd(lb, int(nsf.Fd())))
	var ln net.Listener
	must(t, inNetns(nsPath, func() error {
		l, err := netlink.LinkByName(vb)
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(n.hostIP + "/24")
		if err := netlink.AddrAdd(l, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", "0.0.0.0:8080")
		return err
	}))
	serveText(t, ln, "hello from the test host")

	// The test DNS server, the resolver's only upstream.
	pc, err := net.ListenPacket("udp4", n.rootIP+":5353")
	must(t, err)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		n.dnsMu.Lock()
		n.dnsSeen = append(n.dnsSeen, strings.ToLower(q.Name))
		n.dnsMu.Unlock()
		if strings.EqualFold(q.Name, testHostName+".") && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(n.hostIP)})
		} else if q.Qtype == dns.TypeA {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })

	// Host services a workspace must not reach.
	lo, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	serveText(t, lo, "host loopback")
	n.loopbackSvc = lo.Addr().String()
	wild, err := net.Listen("tcp4", "0.0.0.0:0")
	must(t, err)
	serveText(t, wild, "host wildcard")
	n.wildSvc = wild.Addr().(*net.TCPAddr).Port

	e.extra = append(e.extra, "--network-bridge", n.bridge, "--network-subnet", fmt.Sprintf("10.253.%d.0/24", k),
		"--dns-upstreams", n.rootIP+":5353", "--default-network", "bridge")
	t.Cleanup(func() {
		// berth leaves its bridge and tables for the next berth; the test removes them.
		if l, err := netlink.LinkByName(n.bridge); err == nil {
			netlink.LinkDel(l)
		}
		exec.Command("nft", "delete", "table", "inet", "berth-"+n.bridge).Run()
		exec.Command("nft", "delete", "table", "bridge", "berth-"+n.bridge).Run()
	})
	return n
}

func (n *netEnv) queried(name string) bool {
	n.dnsMu.Lock()
	defer n.dnsMu.Unlock()
	for _, q := range n.dnsSeen {
		if strings.HasPrefix(q, name) {
			return true
		}
	}
	return false
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func serveText(t *testing.T, ln net.Listener, text string) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				c.Read(buf)
				fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(text), text)
			}()
		}
	}()
}

// inNetns runs fn on a thread in the namespace at path; sockets made there stay in it.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies in the other namespace
		f, err := os.Open(path)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

type netInfoOut struct {
	Mode   string `json:"mode"`
	IP     string `json:"ip"`
	Policy struct {
		Default string `json:"default"`
	} `json:"policy"`
}

// fetch runs wget in the workspace and returns its output and whether it worked.
func fetch(t *testing.T, c mcpClient, bot, url string) (string, bool) {
	t.Helper()
	// nc rather than wget: the test image's busybox wget crashes (exit 139).
	hostPort := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
	h, p, _ := net.SplitHostPort(hostPort)
	out := execute(t, c, bot, map[string]any{"command": fmt.Sprintf("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 %s %s", h, p)})
	if out.ExitCode == 0 && out.Stdout == "" {
		out.ExitCode = 1
	}
	if out.ExitCode != 0 {
		t.Logf("wget %s in %s: exit %d: %s", url, bot, out.ExitCode, out.Stderr)
	}
	return out.Stdout, out.ExitCode == 0
}

func TestNetworkBridge(t *testing.T) {
	n := newNetEnv(t)
	b := n.serveHTTP()
	c := n.httpMcpgo(b)
	var cr createOut
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "net-a"}).decode(t, &cr)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "net-b"})
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "net-none", "network": "none"})
	byName := "http://" + testHostName + ":8080/"
	byAddr := "http://" + n.hostIP + ":8080/"

	var info netInfoOut
	mustCall(t, c, "network_get", map[string]any{"bot_id": "net-a"}).decode(t, &info)
	if info.Mode != "bridge" || info.IP == "" || info.Policy.Default != "allow" {
		t.Fatalf("network_get of a new workspace: %+v", info)
	}
	var infoB netInfoOut
	mustCall(t, c, "network_get", map[string]any{"bot_id": "net-b"}).decode(t, &infoB)

	// Default allow: the test host by name and by address.
	for _, u := range []string{byName, byAddr} {
		if out, ok := fetch(t, c, "net-a", u); !ok || !strings.Contains(out, "hello from the test host") {
			t.Errorf("default allow: %s: %q ok=%v", u, out, ok)
		}
	}
	// Isolation: the host's services (loopback and wildcard, through any
	// host address) and the other workspace stay out of reach.
	gateway := strings.TrimSuffix(info.IP, info.IP[strings.LastIndex(info.IP, "."):]) + ".1"
	for _, u := range []string{
		"http://" + n.loopbackSvc + "/",
		fmt.Sprintf("http://%s:%d/", gateway, n.wildSvc),
		fmt.Sprintf("http://%s:%d/", n.rootIP, n.wildSvc),
		"http://" + infoB.IP + ":8080/",
	} {
		if out, ok := fetch(t, c, "net-a", u); ok || strings.Contains(out, "host") {
			t.Errorf("isolation: %s answered %q", u, out)
		}
	}
	// none: no route at all.
	if out := execute(t, c, "net-none", map[string]any{"command": "printf 'GET /\\n' | nc -w 3 " + n.hostIP + " 8080 2>&1; route -n"}); strings.Contains(out.Stdout, "hello") || strings.Contains(out.Stdout, "0.0.0.0 ") {
		t.Errorf("network none reached out or has a route: %q", out.Stdout)
	}

	// Default deny: nothing, and a name is not even asked upstream.
	mustCall(t, c, "network_policy_set", map[string]any{"bot_id": "net-a", "default": "deny"})
	if out, ok := fetch(t, c, "net-a", byAddr); ok {
		t.Errorf("default deny: reached the test host by address: %q", out)
	}
	if out := execute(t, c, "net-a", map[string]any{"command": "nslookup secret-data.berth.test"}); strings.Contains(out.Stdout, n.hostIP) {
		t.Errorf("a denied name resolved: %q", out.Stdout)
	}
	if n.queried("secret-data.berth.test") {
		t.Error("a denied name's query reached the upstream resolver")
	}
	// Allowing the name opens it (and only through DNS).
	mustCall(t, c, "network_policy_set", map[string]any{"bot_id": "net-a", "default": "deny", "allow": []map[string]any{{"domain": testHostName}}})
	if out, ok := fetch(t, c, "net-a", byName); !ok || !strings.Contains(out, "hello") {
		t.Errorf("allowed name: %q ok=%v", out, ok)
	}
	// Allowing the CIDR opens the address.
	mustCall(t, c, "network_policy_set", map[string]any{"bot_id": "net-a", "default": "deny", "allow": []map[string]any{{"cidr": n.hostIP + "/32"}}})
	if out, ok := fetch(t, c, "net-a", byAddr); !ok || !strings.Contains(out, "hello") {
		t.Errorf("allowed CIDR: %q ok=%v", out, ok)
	}

	// Bad input.
	for _, bad := range []struct {
		args map[string]any
		want string
	}{
		{map[string]any{"bot_id": "net-a", "default": "deny", "allow": []map[string]any{{"cidr": "10.1.2.3/8"}}}, "cidr"},
		{map[string]any{"bot_id": "net-a", "default": "deny", "allow": []map[string]any{{"domain": "exa*mple.com"}}}, "domain"},
		{map[string]any{"bot_id": "net-a", "default": "deny", "allow": []map[string]any{{"cidr": "10.0.0.0/8", "ports": []string{"70000"}}}}, "70000"},
	} {
		res, err := c.call(t.Context(), "network_policy_set", bad.args, nil)
		if err != nil || !res.IsError || !strings.Contains(strings.ToLower(res.Text), bad.want) {
			t.Errorf("network_policy_set %v: err=%v result=%+v, want an error naming %q", bad.args, err, res, bad.want)
		}
	}
	if res, err := c.call(t.Context(), "workspace_create", map[string]any{"bot_id": "net-x", "network": "sideways"}, nil); err != nil || !res.IsError || !strings.Contains(res.Text, "none, bridge, host") {
		t.Errorf("bad network mode: %v %+v", err, res)
	}

	// The policy survives a workspace restart and a berth restart.
	mustCall(t, c, "workspace_stop", map[string]any{"bot_id": "net-a"})
	if links := bridgePorts(t, n.bridge); links != 1 {
		t.Errorf("after stopping one of three workspaces (one of them none): %d ports on the bridge, want 1", links)
	}
	mustCall(t, c, "workspace_start", map[string]any{"bot_id": "net-a"})
	checkDenyWithCIDR := func(when string) {
		if out, ok := fetch(t, c, "net-a", byAddr); !ok || !strings.Contains(out, "hello") {
			t.Errorf("%s: allowed CIDR: %q ok=%v", when, out, ok)
		}
		if out, ok := fetch(t, c, "net-a", byName); ok {
			t.Errorf("%s: a name the policy does not allow: %q", when, out)
		}
	}
	checkDenyWithCIDR("after workspace restart")
	b.kill()
	b = n.serveHTTP()
	c = n.httpMcpgo(b)
	checkDenyWithCIDR("after berth restart")
	mustCall(t, c, "network_get", map[string]any{"bot_id": "net-a"}).decode(t, &info)
	if info.Mode != "bridge" || info.IP == "" || info.Policy.Default != "deny" {
		t.Errorf("network_get after berth restart: %+v", info)
	}

	// Delete leaves no veth, address or rule.
	for _, bot := range []string{"net-a", "net-b", "net-none"} {
		mustCall(t, c, "workspace_delete", map[string]any{"bot_id": bot})
	}
	if links := bridgePorts(t, n.bridge); links != 0 {
		t.Errorf("after delete: %d ports on the bridge", links)
	}
	out, _ := exec.Command("nft", "list", "table", "inet", "berth-"+n.bridge).CombinedOutput()
	for _, ip := range []string{info.IP, infoB.IP} {
		if strings.Contains(string(out), ip+" ") {
			t.Errorf("after delete, berth's rules still name %s:\n%s", ip, out)
		}
	}
	if ips := allocated(t, n.stateDir); len(ips) > 0 {
		t.Errorf("after delete, IPAM still holds %v", ips)
	}
}

// bridgePorts counts the interfaces enslaved to the bridge.
func bridgePorts(t *testing.T, bridge string) int {
	br, err := netlink.LinkByName(bridge)
	must(t, err)
	links, err := netlink.LinkList()
	must(t, err)
	n := 0
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			n++
		}
	}
	return n
}

// allocated lists the addresses host-local IPAM holds under berth's state dir.
func allocated(t *testing.T, stateDir string) []string {
	out, _ := exec.Command("find", stateDir+"/network", "-type", "f").Output()
	var ips []string
	for _, f := range strings.Fields(string(out)) {
		base := f[strings.LastIndex(f, "/")+1:]
		if a, err := netip.ParseAddr(base); err == nil {
			ips = append(ips, a.String())
		}
	}
	return ips
}
