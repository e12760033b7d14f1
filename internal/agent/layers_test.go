// The agent lives in three packages, split by side: wire (the contract),
// client (the host's side) and server (the agent in the container). This
// directory holds no code, only the test that keeps them apart by imports.
package agent_test

import (
	"os/exec"
	"strings"
	"testing"
)

const (
	module = "github.com/berth-dev/berth"
	wire   = module + "/internal/agent/wire"
	client = module + "/internal/agent/client"
	server = module + "/internal/agent/server"
)

// TestLayers enforces the split of the agent by side: the wire contract
// depends on nothing of berth, the host's client only on the contract, the
// in-container server only on the contract and never on containerd, MCP,
// workspaces or the runtime, and no host package but the berth command
// (for its agent subcommand) reaches the server.
func TestLayers(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	out, err := exec.Command(goCmd, "list", "-deps=false", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		deps[f[0]] = f[1:]
	}
	for _, p := range []string{wire, client, server} {
		if _, ok := deps[p]; !ok {
			t.Fatalf("go list did not list %s", p)
		}
	}
	forbid := func(pkg string, why string, bad func(dep string) bool) {
		t.Helper()
		for _, d := range deps[pkg] {
			if bad(d) {
				t.Errorf("%s imports %s: %s", pkg, d, why)
			}
		}
	}
	own := func(d string) bool { return strings.HasPrefix(d, module+"/") }
	forbid(wire, "the wire contract depends on nothing of berth", own)
	forbid(client, "the client depends only on the wire contract", func(d string) bool { return own(d) && d != wire })
	forbid(server, "the agent knows nothing of containerd, MCP, workspaces or the host", func(d string) bool {
		return own(d) && d != wire ||
			strings.HasPrefix(d, "github.com/containerd/") ||
			strings.HasPrefix(d, "github.com/mark3labs/mcp-go")
	})
	for pkg, ds := range deps {
		if pkg == server || pkg == module+"/cmd/berth" {
			continue
		}
		for _, d := range ds {
			if d == server {
				t.Errorf("%s imports the in-container server; host code talks to the agent through %s", pkg, client)
			}
		}
	}
}
