package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestHTTPAuth checks that /mcp needs the token and the probes do not.
func TestHTTPAuth(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	initBody := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	post := func(auth string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, b.URL, strings.NewReader(initBody))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := post(""); code != http.StatusUnauthorized || !strings.Contains(body, "bearer token") {
		t.Fatalf("no token: %d %s", code, body)
	}
	if code, body := post("Bearer wrong-token-wrong-token"); code != http.StatusUnauthorized || !strings.Contains(body, "invalid") {
		t.Fatalf("wrong token: %d %s", code, body)
	}
	if code, body := post("Basic " + b.Token); code != http.StatusUnauthorized {
		t.Fatalf("wrong scheme: %d %s", code, body)
	}
	if code, _ := post("Bearer " + b.Token); code != http.StatusOK {
		t.Fatalf("right token: %d", code)
	}

	// Real clients with a wrong token fail to connect.
	bad, err := mcpclient.NewStreamableHttpClient(b.URL, transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer nope-nope-nope-nope"}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = bad.Start(ctx)
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = mcpgo.LATEST_PROTOCOL_VERSION
	if _, err := bad.Initialize(ctx, init); err == nil {
		t.Fatal("mcp-go client with a wrong token initialized")
	}
	sdkClient := sdk.NewClient(&sdk.Implementation{Name: "bad", Version: "1"}, nil)
	if _, err := sdkClient.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: b.URL, HTTPClient: &http.Client{Transport: bearer{token: "nope-nope-nope-nope"}}}, nil); err == nil {
		t.Fatal("go-sdk client with a wrong token connected")
	}

	base := strings.TrimSuffix(b.URL, "/mcp")
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}

	// A browser page from another origin is refused even with the token.
	req, _ := http.NewRequest(http.MethodPost, b.URL, strings.NewReader(initBody))
	req.Header.Set("Authorization", "Bearer "+b.Token)
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", resp.StatusCode)
	}
}

// TestHTTPTokenFile starts berth without a token: it creates a private
// token file, says where, and accepts that token.
func TestHTTPTokenFile(t *testing.T) {
	e := newEnv(t)
	tokenFile := filepath.Join(e.stateDir, "secret", "token")
	b := e.serveHTTP("--token", "", "--token-file", tokenFile)
	data, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatalf("token file not created: %v", err)
	}
	st, _ := os.Stat(tokenFile)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, want 0600", st.Mode().Perm())
	}
	b.Token = strings.TrimSpace(string(data))
	c := e.httpSDK(b)
	if res := mustCall(t, c, "workspace_list", map[string]any{}); res.IsError {
		t.Fatalf("list with the token file's token: %s", res.Text)
	}
}

// TestNoAuthOnlyOnLoopback: --no-auth is refused on a public address.
func TestNoAuthOnlyOnLoopback(t *testing.T) {
	e := newEnv(t)
	out, err := exec.Command(berthBin, append([]string{"serve", "--http", "0.0.0.0:0", "--no-auth"}, e.args()...)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--no-auth is refused") {
		t.Fatalf("want a refusal, got %v: %s", err, out)
	}
	b := e.serveHTTP("--no-auth")
	b.Token = "" // any bearer (none) is fine on loopback
	c := e.httpMcpgo(b)
	if res := mustCall(t, c, "workspace_list", map[string]any{}); res.IsError {
		t.Fatalf("no-auth loopback: %s", res.Text)
	}
}

func httpGet(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestTokensFileNamesUnique: berth refuses to start when two scoped
// tokens share a name (the name is the caller in logs and the audit log),
// and says which lines.
func TestTokensFileNamesUnique(t *testing.T) {
	e := newEnv(t)
	tokens := filepath.Join(e.stateDir, "tokens.yaml")
	body := "tokens:\n  - {name: ops, token: ops-secret-0123456789}\n  - {name: bot, token: bot-secret-0123456789}\n  - {name: ops, token: ops-secret-9876543210}\n"
	if err := os.WriteFile(tokens, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "--http", "127.0.0.1:0", "--token", "test-token-0123456789abcdef", "--tokens-file", tokens}, e.args()...)
	// Bounded: a berth that accepted the file would serve on.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, berthBin, args...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `token "ops" (line 4) repeats the name of token "ops" (line 2)`) {
		t.Fatalf("want a refusal naming both lines, got %v: %s", err, out)
	}
}
