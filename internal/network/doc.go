// Package network gives bridge-mode workspaces their network from the host's
// side: a network namespace per workspace (bind-mounted under berth's state
// directory), an address on berth's own bridge through CNI (Debian's bridge,
// host-local and loopback plugins, with berth's own configuration and cache,
// never /etc/cni/net.d or /var/lib/cni), NAT to the outside, and each
// workspace's egress policy enforced in nftables tables that berth owns.
//
// Everything is enforced in the host's namespaces, where nothing running in a
// workspace, root included, can change it. Workspaces reach neither each other
// (bridge port isolation plus a bridge-family filter) nor the host (only DNS to
// the gateway is accepted from the bridge).
//
// The package must not touch other programs' CNI configuration, IPAM state or
// nftables tables, and it knows nothing of containers: it hands out a network
// namespace path that the caller puts into the container's spec. Domain rules
// are not enforced here: the DNS resolver turns allowed answers into
// AllowResolved calls.
package network
