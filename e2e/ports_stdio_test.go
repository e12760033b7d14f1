package e2e

import (
	"strings"
	"testing"
)

// TestPortToolsOverStdio: the port tools work for a local client over
// stdio with both client libraries: expose, list (never a token), refuse bad
// input without changing anything, unexpose (idempotent).
func TestPortToolsOverStdio(t *testing.T) {
	for _, cl := range []struct {
		name    string
		connect func(e *env) mcpClient
	}{{"mcpgo", (*env).stdioMcpgo}, {"gosdk", (*env).stdioSDK}} {
		t.Run(cl.name, func(t *testing.T) {
			e := newEnv(t)
			c := cl.connect(e)
			defer c.close()
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": "sp"})

			var exp exposeOut
			mustCall(t, c, "port_expose", map[string]any{"bot_id": "sp", "port": 8080}).decode(t, &exp)
			if exp.Port.Port != 8080 || !strings.HasSuffix(exp.Port.URL, "/bots/sp/ports/8080/") || exp.Link == "" {
				t.Fatalf("port_expose: %+v", exp)
			}
			for _, bad := range []map[string]any{{"port": 0}, {"port": 70000}, {"port": 8081, "protocol": "udp"}} {
				bad["bot_id"] = "sp"
				if res := mustCall(t, c, "port_expose", bad); !res.IsError {
					t.Fatalf("port_expose %v was accepted: %s", bad, res.Text)
				}
			}
			var list struct {
				Ports []struct {
					Port int `json:"port"`
				} `json:"ports"`
			}
			res := mustCall(t, c, "port_list", map[string]any{"bot_id": "sp"})
			res.decode(t, &list)
			if len(list.Ports) != 1 || list.Ports[0].Port != 8080 {
				t.Fatalf("port_list after refused exposes: %s", res.Structured)
			}
			token := exp.Link[strings.LastIndex(exp.Link, "=")+1:]
			if strings.Contains(string(res.Structured)+res.Text, token) {
				t.Fatal("port_list shows a link's token")
			}
			for range 2 {
				if res := mustCall(t, c, "port_unexpose", map[string]any{"bot_id": "sp", "port": 8080}); res.IsError {
					t.Fatalf("port_unexpose: %s", res.Text)
				}
			}
			mustCall(t, c, "port_list", map[string]any{"bot_id": "sp"}).decode(t, &list)
			if len(list.Ports) != 0 {
				t.Fatalf("port_list after unexpose: %+v", list)
			}
		})
	}
}
