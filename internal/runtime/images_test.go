package runtime

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/registry"
)

func TestRegistryHost(t *testing.T) {
	for ref, want := range map[string]string{
		"debian":                                 "docker.io",
		"docker.io/library/debian:bookworm-slim": "docker.io",
		"index.docker.io/library/busybox":        "docker.io",
		"ghcr.io/org/img:1":                      "ghcr.io",
		"127.0.0.1:5000/x:1":                     "127.0.0.1:5000",
		"localhost:5000/x":                       "localhost:5000",
		"registry.k8s.io/pause:3.9":              "registry.k8s.io",
		"berth.local/snapshots/a:v1":             "berth.local",
		"[::1]:5000/x:1":                         "[::1]:5000",
	} {
		got, err := RegistryHost(ref)
		if err != nil || got != want {
			t.Errorf("RegistryHost(%q) = %q, %v; want %q", ref, got, err, want)
		}
	}
	for _, bad := range []string{"", "a b", "x:1:2", "x//y"} {
		if _, err := RegistryHost(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("RegistryHost(%q): %v, want an invalid argument", bad, err)
		}
	}
}

func TestRegistryAllowed(t *testing.T) {
	allowed := []string{"docker.io", "GHCR.io", "127.0.0.1:5000"}
	for host, want := range map[string]bool{
		"docker.io":      true,
		"ghcr.io":        true,
		"Docker.IO":      true,
		"127.0.0.1:5000": true,
		"127.0.0.1":      false, // the port must match
		"127.0.0.1:5001": false,
		"quay.io":        false,
		"docker.io.evil": false,
		"evil.docker.io": false,
		"":               false,
	} {
		if got := RegistryAllowed(host, allowed); got != want {
			t.Errorf("RegistryAllowed(%q) = %v, want %v", host, got, want)
		}
	}
	if !RegistryAllowed("anything:1", nil) || !RegistryAllowed("anything:1", []string{"x", "*"}) {
		t.Error("nil and * must allow any registry")
	}
	if RegistryAllowed("docker.io", []string{}) {
		t.Error("an empty list must allow none")
	}
}

// resolveError resolves ref with containerd's resolver as berth's pulls do
// and returns what registryError makes of the failure.
func resolveError(t *testing.T, ref string, terse bool) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hosts := config.ConfigureHosts(ctx, config.HostOptions{})
	_, _, err := docker.NewResolver(docker.ResolverOptions{Hosts: hosts}).Resolve(ctx, ref)
	if err == nil {
		t.Fatalf("resolving %s succeeded", ref)
	}
	host, _ := RegistryHost(ref)
	return registryError(ctx, hosts, ref, host, terse, err)
}

// TestRegistryErrorsDoNotProbe: for a terse caller, a closed port, a TLS
// port, a web server that is not a registry and one that answers garbage
// all read the same; a real registry's "not found" and "unauthorized" are
// told as such. An operator gets the detail.
func TestRegistryErrorsDoNotProbe(t *testing.T) {
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return addr
	}()
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	webAuth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="admin"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer webAuth.Close()
	tlsWeb := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsWeb.Close()
	garbage, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	go func() {
		for {
			c, err := garbage.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
			c.Close()
		}
	}()
	reg := httptest.NewServer(registry.New())
	defer reg.Close()
	locked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer locked.Close()

	host := func(url string) string { return strings.TrimPrefix(url, "http://") }
	var first string
	for name, h := range map[string]string{
		"closed port":     closed,
		"web 404":         host(web.URL),
		"web 401":         host(webAuth.URL),
		"TLS web":         strings.TrimPrefix(tlsWeb.URL, "https://"),
		"not HTTP at all": garbage.Addr().String(),
	} {
		err := resolveError(t, h+"/x/y:1", true)
		if !errdefs.IsUnavailable(err) {
			t.Errorf("%s: %v is not unavailable", name, err)
		}
		msg := strings.ReplaceAll(err.Error(), h, "HOST")
		if msg != "pull HOST/x/y:1: registry HOST is unreachable or not a registry" {
			t.Errorf("%s: %q", name, msg)
		}
		if first == "" {
			first = msg
		} else if msg != first {
			t.Errorf("%s reads %q, unlike %q", name, msg, first)
		}
		var pe *PullError
		if !errors.As(err, &pe) || pe.Detail == nil {
			t.Errorf("%s: no detail kept for the log: %#v", name, err)
		}
	}

	if err := resolveError(t, host(reg.URL)+"/no/such:1", true); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "not found in registry") {
		t.Errorf("missing image in a registry: %v", err)
	}
	if err := resolveError(t, host(locked.URL)+"/x/y:1", true); !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "unauthorized") {
		t.Errorf("registry that wants credentials: %v", err)
	}
	// The operator is told what happened.
	if err := resolveError(t, closed+"/x/y:1", false); !strings.Contains(err.Error(), "refused") {
		t.Errorf("operator's closed port: %v", err)
	}
	if err := resolveError(t, host(web.URL)+"/x/y:1", false); !strings.Contains(err.Error(), "not found") {
		t.Errorf("operator's web server: %v", err)
	}
}
