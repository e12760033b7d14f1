package runtime

// A container's network namespace and resolver files, set at create and
// changed between runs (a workspace's network mode changes with a restart).

import (
	"context"
	"fmt"
	"reflect"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Where Network's files appear in the container.
const (
	resolvConfPath = "/etc/resolv.conf"
	hostsPath      = "/etc/hosts"
)

// withNetwork is the SpecOpts of n, for containerSpecOpts.
func withNetwork(n Network) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if err := n.Validate(); err != nil {
			return err
		}
		applyNetwork(s, n)
		return nil
	}
}

// applyNetwork makes s's network namespace and resolver mounts those of n,
// replacing whatever an earlier Network put there.
func applyNetwork(s *specs.Spec, n Network) {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	ns := make([]specs.LinuxNamespace, 0, len(s.Linux.Namespaces)+1)
	for _, x := range s.Linux.Namespaces {
		if x.Type != specs.NetworkNamespace {
			ns = append(ns, x)
		}
	}
	if !n.Host {
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: n.NetnsPath})
	}
	s.Linux.Namespaces = ns
	mounts := make([]specs.Mount, 0, len(s.Mounts)+2)
	for _, m := range s.Mounts {
		if m.Destination != resolvConfPath && m.Destination != hostsPath {
			mounts = append(mounts, m)
		}
	}
	for _, f := range []struct{ src, dst string }{{n.ResolvConf, resolvConfPath}, {n.Hosts, hostsPath}} {
		if f.src != "" {
			mounts = append(mounts, specs.Mount{Type: "bind", Source: f.src, Destination: f.dst, Options: []string{"rbind", "ro"}})
		}
	}
	s.Mounts = mounts
}

// SetNetwork rewrites the container's OCI spec for n; an unchanged spec is
// left alone, so calling it before every start costs one read.
func (r *Containerd) SetNetwork(ctx context.Context, id string, n Network) error {
	if err := n.Validate(); err != nil {
		return err
	}
	c, ctr, ctx, err := r.load(ctx, id)
	if err != nil {
		return err
	}
	s, err := ctr.Spec(ctx)
	if err != nil {
		return r.wrap(err)
	}
	before := *s
	before.Mounts = append([]specs.Mount(nil), s.Mounts...)
	var beforeNS []specs.LinuxNamespace
	if s.Linux != nil {
		beforeNS = append(beforeNS, s.Linux.Namespaces...)
	}
	applyNetwork(s, n)
	if reflect.DeepEqual(before.Mounts, s.Mounts) && reflect.DeepEqual(beforeNS, s.Linux.Namespaces) {
		return nil
	}
	spec, err := typeurl.MarshalAny(s)
	if err != nil {
		return err
	}
	// Only the spec field: a whole-record update would write back labels
	// read here over ones set since.
	if _, err := c.ContainerService().Update(ctx, containers.Container{ID: id, Spec: spec}, "spec"); err != nil {
		return fmt.Errorf("set network of %s: %w", id, r.wrap(err))
	}
	return nil
}
