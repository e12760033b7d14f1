// Package dnsproxy is the DNS resolver berth serves to bridge workspaces on
// each bridge's gateway address. It owns one thing: deciding, per query and
// by the querying workspace's egress policy, whether a name may be resolved,
// forwarding only the allowed ones upstream, and reporting the addresses an
// allowed answer carries so that the enforcement side can open them for
// their TTL. It must not touch network namespaces or nftables itself (its
// Open callback does that), and it must never let a denied name leave the
// host: a denied name is answered here and never forwarded, so DNS cannot
// carry data out of a deny-by-default workspace.
//
// Denied names get NXDOMAIN, not REFUSED: a stub resolver given REFUSED
// tries its next server or retries, and tools report it as a server fault,
// while NXDOMAIN fails fast with "name not known". The reply carries an
// Extended DNS Error (RFC 8914, "Blocked") naming berth's policy so a bot
// that looks (dig shows it) can tell a policy denial from a missing name,
// and network_get lists recent denials. Queries berth will not serve at all
// (unknown sources, types that only serve tunnels or zone transfers, classes
// other than IN, names that are no host names, rate limit) get REFUSED.
//
// Upstreams: by default the host's resolvers from /etc/resolv.conf,
// including loopback ones such as systemd-resolved's 127.0.0.53. A workspace
// could not reach those from its namespace, but it never talks to them: the
// resolver runs in berth's (the host's) namespace and forwards from there,
// so a loopback upstream works as it does for any host program.
package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/berth-dev/berth/internal/netpolicy"
)

// Config is the resolver's configuration. Lookup is required; the rest has
// defaults.
type Config struct {
	// Lookup names the workspace a query comes from, by its source address,
	// and returns its (normalised) policy. Queries from an address it does
	// not know are refused.
	Lookup func(src netip.Addr) (id string, pol netpolicy.Policy, ok bool)
	// Open is called with the addresses of an allowed answer (A and AAAA
	// along the CNAME chain of the queried name), the ports the policy opens
	// for that name, and the records' TTL clamped to [MinTTL, MaxTTL], before
	// the answer is sent, so the workspace can connect as soon as it has it.
	// It runs on the query's goroutine; keep it quick. Nil: nothing opened.
	Open func(id string, addrs []netip.Addr, ports netpolicy.PortSet, ttl time.Duration)
	// Upstreams are "host:port" resolvers tried in order. Empty: the
	// nameservers of ResolvConf.
	Upstreams []string
	// ResolvConf is read when Upstreams is empty; default /etc/resolv.conf.
	ResolvConf string
	// MinTTL and MaxTTL bound how long opened addresses stay open; defaults
	// 30s and 1h. The answer itself keeps the upstream's TTLs.
	MinTTL, MaxTTL time.Duration
	// Protected addresses are never opened from an answer, whatever a name
	// resolves to: give the bridge subnet and the host's own addresses, so a
	// name pointing at them (DNS rebinding) cannot open a way to another
	// workspace or the host. Loopback, link-local (cloud metadata included),
	// multicast and unspecified addresses are never opened either.
	Protected []netip.Prefix
	// UpstreamTimeout bounds one upstream exchange; default 3s.
	UpstreamTimeout time.Duration
	// RatePerSecond and Burst limit queries per workspace (a token bucket);
	// defaults 100 and 200. Queries over the limit are refused, not queued.
	RatePerSecond float64
	Burst         int
	// MaxDenied bounds the recent denied names kept per workspace; default 64.
	MaxDenied int
	// Now is the clock for rate limiting and denial times; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// ForwardedTypes are the query types served. The rest (ANY, zone
// transfers, NULL and other types with no use to a workspace but a use to
// a tunnel) are refused.
var ForwardedTypes = []uint16{
	dns.TypeA, dns.TypeAAAA, dns.TypeCNAME, dns.TypeMX, dns.TypeTXT, dns.TypeSRV,
	dns.TypeHTTPS, dns.TypeSVCB, dns.TypeNS, dns.TypeSOA, dns.TypePTR, dns.TypeCAA,
	dns.TypeDS, dns.TypeDNSKEY, dns.TypeTLSA, dns.TypeNAPTR, dns.TypeSSHFP,
}

// DeniedName is one name a workspace was refused, for network_get.
type DeniedName struct {
	Name   string    `json:"name"`
	Type   string    `json:"type"`   // the last query type asked
	Reason string    `json:"reason"` // the last reason, e.g. "deny[0] *.example.com"
	Count  uint64    `json:"count"`
	Last   time.Time `json:"last"`
}

// advertisedUDPSize is the EDNS size berth asks for and offers: the size
// that avoids IP fragmentation (DNS flag day 2020); larger answers go over
// TCP.
const advertisedUDPSize = 1232

// ErrClosed is returned by Listen after Close.
var ErrClosed = errors.New("dns resolver closed")

// Server is the resolver. Its listeners come and go with bridges; its
// per-workspace state (rate limit, denied names) lives until Forget.
type Server struct {
	cfg       Config
	upstreams []string
	log       *slog.Logger
	ctx       context.Context // cancelled on Close: in-flight upstream exchanges end
	cancel    context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners map[netip.AddrPort]*listener
	ws        map[string]*wsState
}

type listener struct {
	udp, tcp *dns.Server
	done     chan struct{} // both serve loops returned
}

type wsState struct {
	tokens float64
	last   time.Time
	denied map[string]*DeniedName
}

// New checks cfg, fills defaults and reads the upstreams. It listens on
// nothing until Listen.
func New(cfg Config) (*Server, error) {
	if cfg.Lookup == nil {
		return nil, errors.New("dnsproxy: Config.Lookup is required")
	}
	if cfg.MinTTL <= 0 {
		cfg.MinTTL = 30 * time.Second
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = time.Hour
	}
	if cfg.MaxTTL < cfg.MinTTL {
		return nil, fmt.Errorf("dnsproxy: MaxTTL %s is below MinTTL %s", cfg.MaxTTL, cfg.MinTTL)
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = 3 * time.Second
	}
	if cfg.RatePerSecond <= 0 {
		cfg.RatePerSecond = 100
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 200
	}
	if cfg.MaxDenied <= 0 {
		cfg.MaxDenied = 64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ups := slices.Clone(cfg.Upstreams)
	if len(ups) == 0 {
		var err error
		if ups, err = ResolvConfUpstreams(cfg.ResolvConf); err != nil {
			return nil, err
		}
	}
	for _, u := range ups {
		if _, _, err := net.SplitHostPort(u); err != nil {
			return nil, fmt.Errorf("dnsproxy: upstream %q: want host:port: %w", u, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg: cfg, upstreams: ups, log: cfg.Logger, ctx: ctx, cancel: cancel,
		listeners: map[netip.AddrPort]*listener{}, ws: map[string]*wsState{},
	}, nil
}

// ResolvConfUpstreams returns the nameservers of a resolv.conf (default
// /etc/resolv.conf) as host:port, loopback ones included (see the package
// comment for why they work).
func ResolvConfUpstreams(path string) ([]string, error) {
	if path == "" {
		path = "/etc/resolv.conf"
	}
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("dnsproxy: reading upstreams: %w", err)
	}
	var ups []string
	for _, s := range cc.Servers {
		ups = append(ups, net.JoinHostPort(s, cc.Port))
	}
	if len(ups) == 0 {
		return nil, fmt.Errorf("dnsproxy: %s names no nameserver; configure the upstreams", path)
	}
	return ups, nil
}

// Upstreams returns the resolvers queries are forwarded to.
func (s *Server) Upstreams() []string { return slices.Clone(s.upstreams) }

// Listen serves UDP and TCP on addr (a bridge gateway address). Port 0 picks
// a port free for both; the address served is returned. Serving the same
// address twice is an error.
func (s *Server) Listen(addr netip.AddrPort) (netip.AddrPort, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return netip.AddrPort{}, ErrClosed
	}
	if _, ok := s.listeners[addr]; ok && addr.Port() != 0 {
		return netip.AddrPort{}, fmt.Errorf("dnsproxy: already serving %s", addr)
	}
	pc, ln, bound, err := listenBoth(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if _, ok := s.listeners[bound]; ok {
		pc.Close()
		ln.Close()
		return netip.AddrPort{}, fmt.Errorf("dnsproxy: already serving %s", bound)
	}
	l := &listener{done: make(chan struct{})}
	accept := dns.MsgAcceptFunc(acceptQuery)
	l.udp = &dns.Server{PacketConn: pc, Handler: s, UDPSize: 4096, MsgAcceptFunc: accept}
	l.tcp = &dns.Server{Listener: ln, Handler: s, MsgAcceptFunc: accept,
		IdleTimeout: func() time.Duration { return 5 * time.Second }}
	var wg sync.WaitGroup
	for _, srv := range []*dns.Server{l.udp, l.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Warn("dns listener stopped", "addr", bound, "err", err)
			}
		}()
		// Shutdown fails on a server that has not marked itself started;
		// waiting here makes Stop right after Listen safe.
		<-started
	}
	go func() { wg.Wait(); close(l.done) }()
	s.listeners[bound] = l
	s.log.Info("dns listening", "addr", bound)
	return bound, nil
}

func listenBoth(addr netip.AddrPort) (net.PacketConn, net.Listener, netip.AddrPort, error) {
	// With port 0 the UDP port is picked first and TCP takes the same one;
	// another program may hold that TCP port, so try a few.
	for range 10 {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return nil, nil, netip.AddrPort{}, fmt.Errorf("dnsproxy: listen udp %s: %w", addr, err)
		}
		bound := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		bound = netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(bound))
		if err == nil {
			return pc, ln, bound, nil
		}
		pc.Close()
		if addr.Port() != 0 {
			return nil, nil, netip.AddrPort{}, fmt.Errorf("dnsproxy: listen tcp %s: %w", addr, err)
		}
	}
	return nil, nil, netip.AddrPort{}, fmt.Errorf("dnsproxy: no port free for both udp and tcp on %s", addr.Addr())
}

// Stop stops serving addr (as Listen returned it) and waits for its
// in-flight queries. Stopping an address not served is not an error:
// bridges are torn down from several paths.
func (s *Server) Stop(addr netip.AddrPort) error {
	s.mu.Lock()
	l := s.listeners[addr]
	delete(s.listeners, addr)
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	return l.stop()
}

func (l *listener) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := errors.Join(l.udp.ShutdownContext(ctx), l.tcp.ShutdownContext(ctx))
	select {
	case <-l.done:
	case <-ctx.Done():
		err = errors.Join(err, ctx.Err())
	}
	return err
}

// Addrs returns the addresses served.
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []netip.AddrPort
	for a := range s.listeners {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return out
}

// Close stops every listener, ends in-flight upstream exchanges and refuses
// further Listen calls.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	ls := s.listeners
	s.listeners = map[netip.AddrPort]*listener{}
	s.mu.Unlock()
	s.cancel()
	var errs []error
	for _, l := range ls {
		errs = append(errs, l.stop())
	}
	return errors.Join(errs...)
}

// Denied returns a workspace's recent denied names, most recent first.
func (s *Server) Denied(id string) []DeniedName {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.ws[id]
	if w == nil {
		return nil
	}
	out := make([]DeniedName, 0, len(w.denied))
	for _, d := range w.denied {
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Last.Equal(out[j].Last) {
			return out[i].Last.After(out[j].Last)
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Forget drops a workspace's state (denied names, rate limit): call it when
// the workspace is deleted.
func (s *Server) Forget(id string) {
	s.mu.Lock()
	delete(s.ws, id)
	s.mu.Unlock()
}

// acceptQuery lets through plain queries only: one question, nothing in the
// answer and authority sections, at most an OPT record in the additional
// one. Responses get no reply (a reply to a spoofed response is a reflection).
func acceptQuery(h dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	if h.Bits&qr != 0 {
		return dns.MsgIgnore
	}
	if int(h.Bits>>11)&0xF != dns.OpcodeQuery {
		return dns.MsgRejectNotImplemented
	}
	if h.Qdcount != 1 || h.Ancount != 0 || h.Nscount != 0 || h.Arcount > 1 {
		return dns.MsgReject
	}
	return dns.MsgAccept
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	src, tcp := remote(w.RemoteAddr())
	resp := s.answer(src, req, tcp)
	if resp == nil {
		return
	}
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("dns reply not sent", "src", src, "err", err)
	}
}

func remote(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap(), false
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

func refuse(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	return m
}

// answer decides on one query and returns the reply (nil: no reply).
func (s *Server) answer(src netip.Addr, req *dns.Msg, tcp bool) *dns.Msg {
	if req.Response || req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		return nil
	}
	id, pol, ok := s.cfg.Lookup(src)
	if !ok {
		s.log.Debug("dns query from an unknown source refused", "src", src)
		return refuse(req, dns.RcodeRefused)
	}
	if !s.take(id) {
		return refuse(req, dns.RcodeRefused)
	}
	q := req.Question[0]
	name := netpolicy.NormalizeName(q.Name)
	qtype := dns.Type(q.Qtype).String()
	if reason := unservable(q, name); reason != "" {
		s.recordDenied(id, name, qtype, reason)
		return refuse(req, dns.RcodeRefused)
	}
	if v, m := pol.DomainVerdict(name); v != netpolicy.Allowed {
		s.recordDenied(id, name, qtype, m.String())
		s.log.Debug("dns name denied", "workspace", id, "name", name, "by", m.String())
		resp := refuse(req, dns.RcodeNameError)
		if opt := req.IsEdns0(); opt != nil {
			resp.SetEdns0(advertisedUDPSize, opt.Do())
			o := resp.IsEdns0()
			o.Option = append(o.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeBlocked,
				ExtraText: "denied by berth network policy: " + m.String()})
		}
		return resp
	}

	up, err := s.forward(name, q, req)
	if err != nil {
		s.log.Warn("dns upstream failed", "workspace", id, "name", name, "err", err)
		return refuse(req, dns.RcodeServerFailure)
	}
	resp := new(dns.Msg)
	resp.SetReply(req) // the client's question, in the client's case
	resp.RecursionAvailable = true
	resp.AuthenticatedData = up.AuthenticatedData
	resp.Rcode = up.Rcode
	resp.Answer = up.Answer
	resp.Ns = up.Ns
	for _, rr := range up.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			resp.Extra = append(resp.Extra, rr)
		}
	}
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(advertisedUDPSize, opt.Do())
	} else if resp.Rcode > 0xF {
		// An extended rcode cannot be said without EDNS.
		resp.Rcode = dns.RcodeServerFailure
	}
	if s.cfg.Open != nil && up.Rcode == dns.RcodeSuccess {
		ports := pol.DomainPorts(name)
		for ttl, addrs := range s.openable(name, up.Answer) {
			s.cfg.Open(id, addrs, ports, ttl)
		}
	}
	resp.Truncate(ednsSize(req, tcp))
	return resp
}

// unservable says why a question is refused before any policy, or "".
func unservable(q dns.Question, name string) string {
	if q.Qclass != dns.ClassINET {
		return "class " + dns.Class(q.Qclass).String() + " is not served"
	}
	if !slices.Contains(ForwardedTypes, q.Qtype) {
		return "query type " + dns.Type(q.Qtype).String() + " is not served"
	}
	if len(name) > netpolicy.MaxDomainLen {
		return "name too long"
	}
	if name == "" {
		return "the root is not served"
	}
	// Only host-name characters: escaped bytes (\000) and the like are no
	// name a workspace needs, and are what encoders for tunnels produce.
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "name has characters other than letters, digits, '-', '_' and '.'"
		}
	}
	return ""
}

func ednsSize(req *dns.Msg, tcp bool) int {
	if tcp {
		return dns.MaxMsgSize
	}
	if opt := req.IsEdns0(); opt != nil {
		return max(dns.MinMsgSize, min(int(opt.UDPSize()), dns.MaxMsgSize))
	}
	return dns.MinMsgSize
}

// forward asks the upstreams a fresh question built from the checked name
// and type only: nothing else of the workspace's message (EDNS options,
// other sections, header bits beyond DO and CD) leaves the host.
func (s *Server) forward(name string, q dns.Question, req *dns.Msg) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), q.Qtype)
	m.RecursionDesired = true
	m.CheckingDisabled = req.CheckingDisabled
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	m.SetEdns0(advertisedUDPSize, do)
	var errs []error
	for _, u := range s.upstreams {
		r, err := s.exchange(m, u)
		if err == nil {
			return r, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
		if s.ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func (s *Server) exchange(m *dns.Msg, upstream string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.UpstreamTimeout)
	defer cancel()
	c := &dns.Client{Net: "udp", UDPSize: dns.MaxMsgSize, Timeout: s.cfg.UpstreamTimeout}
	r, _, err := c.ExchangeContext(ctx, m, upstream)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, upstream)
	}
	if err != nil {
		return nil, err
	}
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, m.Question[0].Name) || r.Question[0].Qtype != m.Question[0].Qtype {
		return nil, errors.New("answer is for another question")
	}
	if r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused {
		return nil, fmt.Errorf("upstream answered %s", dns.RcodeToString[r.Rcode])
	}
	return r, nil
}

// openable groups the addresses an answer gives the queried name (A and
// AAAA owned by the name or by a name its CNAME chain reaches within the
// answer) by clamped TTL, leaving out the ones never to open.
func (s *Server) openable(name string, answer []dns.RR) map[time.Duration][]netip.Addr {
	chain := map[string]bool{dns.Fqdn(name): true}
	// Follow CNAMEs to a fixed point; an answer is at most 64 KiB, so the
	// number of rounds is bounded by the number of records.
	for changed := true; changed; {
		changed = false
		for _, rr := range answer {
			if c, ok := rr.(*dns.CNAME); ok && chain[strings.ToLower(c.Hdr.Name)] && !chain[strings.ToLower(c.Target)] {
				chain[strings.ToLower(c.Target)] = true
				changed = true
			}
		}
	}
	out := map[time.Duration][]netip.Addr{}
	for _, rr := range answer {
		var a netip.Addr
		switch r := rr.(type) {
		case *dns.A:
			a, _ = netip.AddrFromSlice(r.A.To4())
		case *dns.AAAA:
			a, _ = netip.AddrFromSlice(r.AAAA.To16())
		default:
			continue
		}
		a = a.Unmap()
		if !chain[strings.ToLower(rr.Header().Name)] || !a.IsValid() || s.protected(a) {
			continue
		}
		ttl := min(max(time.Duration(rr.Header().Ttl)*time.Second, s.cfg.MinTTL), s.cfg.MaxTTL)
		if !slices.Contains(out[ttl], a) {
			out[ttl] = append(out[ttl], a)
		}
	}
	return out
}

func (s *Server) protected(a netip.Addr) bool {
	if !a.IsGlobalUnicast() || netpolicy.IsMetadata(a) {
		return true
	}
	for _, p := range s.cfg.Protected {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// take spends one token of the workspace's bucket.
func (s *Server) take(id string) bool {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.state(id, now)
	w.tokens = min(float64(s.cfg.Burst), w.tokens+now.Sub(w.last).Seconds()*s.cfg.RatePerSecond)
	w.last = now
	if w.tokens < 1 {
		return false
	}
	w.tokens--
	return true
}

func (s *Server) state(id string, now time.Time) *wsState {
	w := s.ws[id]
	if w == nil {
		w = &wsState{tokens: float64(s.cfg.Burst), last: now, denied: map[string]*DeniedName{}}
		s.ws[id] = w
	}
	return w
}

func (s *Server) recordDenied(id, name, qtype, reason string) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.state(id, now)
	d := w.denied[name]
	if d == nil {
		if len(w.denied) >= s.cfg.MaxDenied {
			// Drop the least recently denied name: the list is for "what
			// is this workspace being refused now".
			var oldest *DeniedName
			for _, x := range w.denied {
				if oldest == nil || x.Last.Before(oldest.Last) {
					oldest = x
				}
			}
			delete(w.denied, oldest.Name)
		}
		d = &DeniedName{Name: name}
		w.denied[name] = d
	}
	d.Type, d.Reason, d.Last = qtype, reason, now
	d.Count++
}
