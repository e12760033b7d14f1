package testenv

import (
	"sync"
	"testing"
)

// PortServerRef names the test image that holds the port server
// (internal/testenv/portserver) on top of busybox.
const PortServerRef = "docker.io/berth-test/portserver:latest"

// PortServerPath is where the server is in that image.
const PortServerPath = "/usr/local/bin/berth-portserver"

const portServerArchiveFormat = "portserver-v1"

var portServer struct {
	once         sync.Once
	bin, archive string
	err          error
}

// PortServerBinary returns the port server built static, for tests that
// run it on the host (the benchmark's baseline).
func PortServerBinary(t testing.TB) string {
	t.Helper()
	buildPortServer()
	if portServer.err != nil {
		t.Fatalf("build the port server: %v", portServer.err)
	}
	return portServer.bin
}

// PortServerArchive returns the path of an OCI archive holding an image
// named PortServerRef: busybox with the server at PortServerPath. Like
// BusyboxArchive, it is cached under the temp directory.
func PortServerArchive(t testing.TB) string {
	t.Helper()
	buildPortServer()
	if portServer.err != nil {
		t.Fatalf("build the port server test image: %v", portServer.err)
	}
	return portServer.archive
}

func buildPortServer() {
	portServer.once.Do(func() {
		portServer.bin, portServer.err = buildStaticHelper("./internal/testenv/portserver", "berth-portserver")
		if portServer.err == nil {
			portServer.archive, portServer.err = buildArchive(portServerArchiveFormat, "portserver", PortServerRef,
				[]imageFile{{path: PortServerPath, src: portServer.bin, mode: 0o755}})
		}
	})
}
