package transports

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// syncBuffer is an audit log the test reads while the server writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) records(t *testing.T) []audit.Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []audit.Record
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

const (
	tokenA = "token-a-0123456789abcdef"
	tokenB = "token-b-0123456789abcdef"
)

// newSessionTestServer serves an MCP server with one tool, "whoami", over
// the HTTP handler, with two scoped tokens.
func newSessionTestServer(t *testing.T, log *syncBuffer) *httptest.Server {
	t.Helper()
	a := audit.New(log)
	s := mcpserver.New("test", tools.Deps{}, "", mcpserver.WithAudit(a))
	s.AddTool(mcp.NewTool("whoami"), func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if err := auth.FromContext(ctx).Allow(auth.ScopeRead, "bot-a"); err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		return mcp.NewToolResultText(auth.FromContext(ctx).ID), nil
	})
	h, shutdown := NewHTTPHandler(s, HTTPOptions{
		Addr: "127.0.0.1:0", Token: "admin-0123456789abcdef",
		ScopedTokens: []auth.ScopedToken{
			{Name: "a", Token: tokenA, Bots: []string{"bot-a"}},
			{Name: "b", Token: tokenB, Bots: []string{"bot-b"}},
		},
		Audit: a,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(func() { _ = shutdown(context.Background()); srv.Close() })
	return srv
}

func mcpRequest(t *testing.T, method, url, token, session, body string) (*http.Response, string) {
	t.Helper()
	// A bound: without the guard, a GET on another's session streams on.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

// TestSessionsBelongToTheirToken: another token's session id is unknown
// for POST, GET and DELETE, and the owner's session goes on working.
func TestSessionsBelongToTheirToken(t *testing.T) {
	var log syncBuffer
	srv := newSessionTestServer(t, &log)
	url := srv.URL + "/mcp"
	resp, body := mcpRequest(t, http.MethodPost, url, tokenA, "", initBody)
	sessA := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || sessA == "" {
		t.Fatalf("initialize: %d %q %s", resp.StatusCode, sessA, body)
	}
	mcpRequest(t, http.MethodPost, url, tokenA, sessA, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	call := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}`
	if resp, body := mcpRequest(t, http.MethodPost, url, tokenA, sessA, call); resp.StatusCode != http.StatusOK || !strings.Contains(body, "token:a") {
		t.Fatalf("owner's call: %d %s", resp.StatusCode, body)
	}

	for _, method := range []string{http.MethodPost, http.MethodGet, http.MethodDelete} {
		reqBody := ""
		if method == http.MethodPost {
			reqBody = call
		}
		if resp, body := mcpRequest(t, method, url, tokenB, sessA, reqBody); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s with another token's session: %d %s, want 404", method, resp.StatusCode, body)
		}
	}
	// The admin token is another credential too.
	if resp, _ := mcpRequest(t, http.MethodDelete, url, "admin-0123456789abcdef", sessA, ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE with the admin token: %d, want 404", resp.StatusCode)
	}
	// An id nobody was given is unknown as well, also on GET (where mcp-go
	// would otherwise adopt it).
	if resp, _ := mcpRequest(t, http.MethodGet, url, tokenB, "mcp-session-made-up", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET with a made-up session: %d, want 404", resp.StatusCode)
	}

	if resp, body := mcpRequest(t, http.MethodPost, url, tokenA, sessA, call); resp.StatusCode != http.StatusOK || !strings.Contains(body, "token:a") {
		t.Fatalf("owner's call after the attempts: %d %s", resp.StatusCode, body)
	}
	if resp, _ := mcpRequest(t, http.MethodDelete, url, tokenA, sessA, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("owner's DELETE: %d", resp.StatusCode)
	}
	if resp, _ := mcpRequest(t, http.MethodPost, url, tokenA, sessA, call); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("call on the ended session: %d", resp.StatusCode)
	}

	// Audit: the owner's calls allowed, each hijack attempt and a bad
	// token denied, and B's attempt names B.
	mcpRequest(t, http.MethodPost, url, "not-a-token-0123456789", "", initBody)
	var allowed, hijacks, badToken int
	for _, r := range log.records(t) {
		switch {
		case r.Kind == audit.KindTool && r.Tool == "whoami" && r.Outcome == audit.Allowed && r.Token == "token:a":
			allowed++
		case r.Kind == audit.KindHTTP && r.Outcome == audit.Denied && r.Reason == "session of another token":
			hijacks++
		case r.Kind == audit.KindHTTP && r.Outcome == audit.Denied && r.Token == "" && r.Status == http.StatusUnauthorized:
			badToken++
		}
	}
	if allowed != 2 || hijacks != 4 || badToken != 1 {
		t.Errorf("audit: %d allowed calls (want 2), %d hijacks (want 4), %d bad tokens (want 1):\n%+v", allowed, hijacks, badToken, log.records(t))
	}
}

// TestSessionsCappedPerToken: a token holds at most maxSessionsPerCaller
// sessions; past it a new one is refused with 429 until one ends, and
// other tokens are not affected.
func TestSessionsCappedPerToken(t *testing.T) {
	var log syncBuffer
	srv := newSessionTestServer(t, &log)
	url := srv.URL + "/mcp"
	open := func(token string) (*http.Response, string) {
		resp, _ := mcpRequest(t, http.MethodPost, url, token, "", initBody)
		return resp, resp.Header.Get("Mcp-Session-Id")
	}
	var first string
	for i := range maxSessionsPerCaller {
		resp, id := open(tokenA)
		if resp.StatusCode != http.StatusOK || id == "" {
			t.Fatalf("session %d: %d", i+1, resp.StatusCode)
		}
		if first == "" {
			first = id
		}
	}
	if resp, body := mcpRequest(t, http.MethodPost, url, tokenA, "", initBody); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "the most it may") {
		t.Fatalf("session past the cap: %d %s, want 429", resp.StatusCode, body)
	}
	if resp, id := open(tokenB); resp.StatusCode != http.StatusOK || id == "" {
		t.Fatalf("another token's session: %d", resp.StatusCode)
	}
	if resp, _ := mcpRequest(t, http.MethodDelete, url, tokenA, first, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	if resp, id := open(tokenA); resp.StatusCode != http.StatusOK || id == "" {
		t.Fatalf("a session after one ended: %d", resp.StatusCode)
	}
}
