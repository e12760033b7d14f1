package network

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkThroughput sends the same bulk TCP transfer to the test host from
// an attached workspace (bridge, veth, nftables policy chain, masquerade) and
// from the host's root namespace (plain veth routing), in the same run, and
// reports both rates and their ratio (workspace/root; 1 means no cost).
func BenchmarkThroughput(b *testing.B) {
	e := newTestEnv(b)
	// A realistic policy: a few rules to walk before the default.
	pol := denyAll
	pol.Deny = append(pol.Deny, cidr("192.0.2.0/24"), cidr("198.51.100.0/24", "25"))
	pol.Allow = append(pol.Allow, cidr("203.0.113.0/24", "443"), cidr(e.hostIP.String()))
	a, err := e.m.Attach(context.Background(), "ws-bench", pol)
	if err != nil {
		b.Fatal(err)
	}
	addr := e.hostAddr(e.hostIP)
	const size = 64 << 20
	buf := make([]byte, 256<<10)
	send := func(ns string) time.Duration {
		c, err := dialFrom(ns, addr, netip.Addr{}, okTimeout)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		for n := 0; n < size; n += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		// The server discards; closing our side and waiting for its close
		// makes sure the bytes arrived, not just left.
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		return time.Since(start)
	}
	send(a.NetnsPath) // warm up both paths (ARP, conntrack, caches)
	send(rootNS)
	var ws, root time.Duration
	b.ResetTimer()
	for range b.N {
		ws += send(a.NetnsPath)
		root += send(rootNS)
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(ws), "workspace-MB/s")
	b.ReportMetric(mbps(root), "root-MB/s")
	b.ReportMetric(mbps(ws)/mbps(root), "ratio")
}
