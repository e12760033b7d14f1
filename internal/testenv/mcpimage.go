package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// MCPFixtureRef names the test image that holds the stdio MCP server fixture
// (internal/testenv/mcpfixture) on top of busybox.
const MCPFixtureRef = "docker.io/berth-test/mcp:latest"

// MCPFixturePath is where the fixture is in that image.
const MCPFixturePath = "/usr/local/bin/mcp-fixture"

// mcpArchiveFormat changes whenever the image MCPArchive builds changes for
// the same busybox and fixture binaries.
const mcpArchiveFormat = "mcp-v1"

// mcpFixturePkg is the fixture's package, relative to the module root.
const mcpFixturePkg = "./internal/testenv/mcpfixture"

var mcpFixture, mcpArchive struct {
	once sync.Once
	path string
	err  error
}

// MCPFixtureBinary returns the path of the fixture MCP server, built static
// (CGO_ENABLED=0) for the host once per test process. Binaries are kept
// under the temp directory, named by their digest, so a path never changes
// content while another test process may be running it.
func MCPFixtureBinary(t testing.TB) string {
	t.Helper()
	mcpFixture.once.Do(func() {
		mcpFixture.path, mcpFixture.err = buildMCPFixture()
	})
	if mcpFixture.err != nil {
		t.Fatalf("build the MCP fixture: %v", mcpFixture.err)
	}
	return mcpFixture.path
}

// MCPArchive returns the path of an OCI archive holding an image named
// MCPFixtureRef: the busybox image of BusyboxArchive with the fixture at
// MCPFixturePath. Like BusyboxArchive, it is cached under the temp directory.
func MCPArchive(t testing.TB) string {
	t.Helper()
	bin := MCPFixtureBinary(t)
	mcpArchive.once.Do(func() {
		mcpArchive.path, mcpArchive.err = buildArchive(mcpArchiveFormat, "mcp", MCPFixtureRef,
			[]imageFile{{path: MCPFixturePath, src: bin, mode: 0o755}})
	})
	if mcpArchive.err != nil {
		t.Fatalf("build MCP test image: %v (run `scripts/containerd.sh install` to get busybox-static)", mcpArchive.err)
	}
	return mcpArchive.path
}

func buildMCPFixture() (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the fixture is built with the go command: %w", err)
	}
	root, err := moduleRoot(goBin)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), "berth-testenv")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Build under a private name: test processes, one per package, may
	// build at the same time.
	tmpDir, err := os.MkdirTemp(dir, "mcp-fixture-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "mcp-fixture")

	cmd := exec.Command(goBin, "build", "-trimpath", "-o", tmp, mcpFixturePkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out.Bytes())
	}

	sum, err := fileDigest(tmp)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "mcp-fixture-"+sum[:16])
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	// The same content under the same name: whichever rename wins, readers
	// see a whole binary.
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return path, nil
}

// moduleRoot finds the berth module: from this file's location when the
// test binary was built with full paths, else by asking go.
func moduleRoot(goBin string) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return root, nil
		}
	}
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("cannot find the berth module: run the tests from within it")
	}
	return filepath.Dir(gomod), nil
}
