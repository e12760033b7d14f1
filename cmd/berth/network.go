package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/dnsproxy"
	"github.com/berth-dev/berth/internal/netpolicy"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/workspace"
)

// setupNetwork brings up berth's bridge and the DNS resolver on its
// gateway. Bridge mode is optional: without the CNI plugins or nftables
// berth serves workspaces in mode none and says why, unless the operator
// asked for bridge as the default, which then fails the start. close stops
// the resolver only: the bridge, the workspaces' namespaces and their
// rules outlive berth, so a restart does not cut running workspaces off.
func setupNetwork(cfg config.Config, log *slog.Logger) (opts workspace.NetworkOptions, close func(), err error) {
	close = func() {}
	if cfg.DefaultNetwork != "" && !slices.Contains(workspace.NetworkModes, cfg.DefaultNetwork) {
		return opts, close, fmt.Errorf("--default-network %q is not one of %v", cfg.DefaultNetwork, workspace.NetworkModes)
	}
	subnet, err := netip.ParsePrefix(cfg.NetworkSubnet)
	if err != nil {
		return opts, close, fmt.Errorf("--network-subnet: %w", err)
	}
	opts.DefaultMode = cfg.DefaultNetwork
	var br *network.Manager
	var dns *dnsproxy.Server
	if cfg.NetworkBridge == "" {
		err = errors.New("disabled by an empty --network-bridge")
	} else {
		br, dns, err = startBridge(cfg, subnet, log)
	}
	if err != nil {
		if cfg.DefaultNetwork == workspace.NetworkBridge {
			return opts, close, fmt.Errorf("--default-network bridge: %w", err)
		}
		opts.BridgeUnavailable = err.Error()
		if opts.DefaultMode == "" {
			opts.DefaultMode = workspace.NetworkNone
		}
		log.Warn("bridge networking is unavailable: new workspaces get network none (loopback only)", "reason", err)
		return opts, close, nil
	}
	if opts.DefaultMode == "" {
		opts.DefaultMode = workspace.NetworkBridge
	}
	opts.Bridge, opts.DNS = br, dns
	log.Info("bridge networking", "bridge", br.Bridge(), "subnet", br.Subnet(), "dns", dns.Addrs(), "upstreams", dns.Upstreams(),
		"default_network", opts.DefaultMode)
	return opts, func() { _ = dns.Close() }, nil
}

func startBridge(cfg config.Config, subnet netip.Prefix, log *slog.Logger) (*network.Manager, *dnsproxy.Server, error) {
	br, err := network.New(network.Config{Bridge: cfg.NetworkBridge, Subnet: subnet, PluginDirs: cfg.CNIPluginDirs, StateDir: cfg.StateDir})
	if err != nil {
		return nil, nil, err
	}
	upstreams := make([]string, 0, len(cfg.DNSUpstreams))
	for _, u := range cfg.DNSUpstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			u = net.JoinHostPort(u, "53")
		}
		upstreams = append(upstreams, u)
	}
	// Names resolving to the workspaces' subnet or the host's own addresses
	// open nothing: DNS rebinding must not reach another workspace or berth.
	protected := []netip.Prefix{br.Subnet()}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				protected = append(protected, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
			}
		}
	}
	dns, err := dnsproxy.New(dnsproxy.Config{
		Lookup: func(src netip.Addr) (string, netpolicy.Policy, bool) {
			a, ok := br.ByAddr(src)
			return a.ID, a.Policy, ok
		},
		Open: func(id string, addrs []netip.Addr, ports netpolicy.PortSet, ttl time.Duration) {
			if err := br.OpenResolved(id, addrs, ports, ttl); err != nil && !errors.Is(err, network.ErrNotAttached) {
				log.Warn("open resolved addresses", "bot", id, "err", err)
			}
		},
		Upstreams: upstreams,
		Protected: protected,
		Logger:    log.With("component", "dns"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("dns resolver: %w", err)
	}
	if _, err := dns.Listen(netip.AddrPortFrom(br.Gateway(), 53)); err != nil {
		_ = dns.Close()
		return nil, nil, fmt.Errorf("dns resolver on %s: %w", br.Gateway(), err)
	}
	return br, dns, nil
}
