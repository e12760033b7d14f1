package runtime

import (
	"errors"
	"testing"
)

func TestBundleFromError(t *testing.T) {
	err := errors.New("failed to start shim: mkdir /tmp/c/state/io.containerd.runtime.v2.task/ns-1/bot-a: file exists: unknown")
	m := bundleExists.FindStringSubmatch(err.Error())
	if m == nil || m[1] != "/tmp/c/state/io.containerd.runtime.v2.task/ns-1/bot-a" {
		t.Fatalf("bundle from %q: %v", err, m)
	}
	for _, other := range []string{
		"mkdir /etc/passwd: file exists",
		"mkdir /tmp/io.containerd.runtime.v2.task/ns: file exists",
		"task bot-a: already exists",
	} {
		if m := bundleExists.FindStringSubmatch(other); m != nil {
			t.Fatalf("matched %q: %v", other, m)
		}
	}
	if !hasArgs([]string{"shim", "-namespace", "n", "-id", "x", "-address", "/s"}, []string{"-namespace", "n", "-id", "x", "-address", "/s"}) {
		t.Fatal("hasArgs missed its flags")
	}
	if hasArgs([]string{"shim", "-namespace", "n", "-id", "xy"}, []string{"-namespace", "n", "-id", "x"}) {
		t.Fatal("hasArgs matched another id")
	}
}
