package stdiobridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/nslock"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// upstream is an mcp-go streamable HTTP server behind a bearer check that
// records the HTTP methods and sessions it sees; restart swaps in a fresh
// server, which knows none of the old sessions.
type upstream struct {
	t        *testing.T
	srv      *httptest.Server
	handler  atomic.Pointer[http.Handler]
	mcp      atomic.Pointer[server.MCPServer]
	cancels  chan string
	mu       sync.Mutex
	requests []string        // "METHOD session query"
	sessions map[string]bool // minted by the current server
}

const testToken = "secret-token-0123456789"

func newUpstream(t *testing.T) *upstream {
	u := &upstream{t: t, cancels: make(chan string, 4)}
	u.restart()
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			http.Error(w, "invalid bearer token", http.StatusUnauthorized)
			return
		}
		session := r.Header.Get("Mcp-Session-Id")
		u.mu.Lock()
		u.requests = append(u.requests, r.Method+" "+session+" "+r.URL.RawQuery)
		known := u.sessions[session]
		u.mu.Unlock()
		if session != "" && !known {
			// As berth does: mcp-go alone takes any well-formed id.
			http.Error(w, "session not found", http.StatusNotFound)
			return
		}
		(*u.handler.Load()).ServeHTTP(&sessionRecorder{ResponseWriter: w, u: u}, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// sessionRecorder notes the sessions the current server mints.
type sessionRecorder struct {
	http.ResponseWriter
	u *upstream
}

func (s *sessionRecorder) WriteHeader(code int) {
	if id := s.Header().Get("Mcp-Session-Id"); id != "" {
		s.u.mu.Lock()
		s.u.sessions[id] = true
		s.u.mu.Unlock()
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *sessionRecorder) Flush() { s.ResponseWriter.(http.Flusher).Flush() }

func (u *upstream) restart() {
	u.mu.Lock()
	u.sessions = map[string]bool{}
	u.mu.Unlock()
	s := server.NewMCPServer("up", "1", server.WithToolCapabilities(true))
	s.EnableSampling()
	s.AddTool(mcp.NewTool("ask"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		srv := server.ServerFromContext(ctx)
		if err := srv.SendNotificationToClient(ctx, "notifications/progress", map[string]any{
			"progressToken": req.Params.Meta.ProgressToken, "progress": 1, "total": 2, "message": "half way",
		}); err != nil {
			return nil, err
		}
		res, err := srv.RequestSampling(ctx, mcp.CreateMessageRequest{CreateMessageParams: mcp.CreateMessageParams{
			Messages: []mcp.SamplingMessage{{Role: mcp.RoleUser, Content: mcp.NewTextContent("say hi")}}, MaxTokens: 10,
		}})
		if err != nil {
			return nil, err
		}
		return mcp.NewToolResultText("client said: " + res.Content.(mcp.TextContent).Text), nil
	})
	s.AddTool(mcp.NewTool("block"), func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		u.cancels <- "started"
		<-ctx.Done()
		u.cancels <- "cancelled"
		return nil, ctx.Err()
	})
	var h http.Handler = server.NewStreamableHTTPServer(s, server.WithEndpointPath("/mcp"))
	u.handler.Store(&h)
	u.mcp.Store(s)
}

func (u *upstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.requests...)
}

// stdioClient is the client side of a relay: it writes raw lines and reads
// the messages the relay writes.
type stdioClient struct {
	t    *testing.T
	in   *io.PipeWriter
	msgs chan map[string]json.RawMessage
	raw  chan string
}

func startRelay(t *testing.T, r *Relay) (*stdioClient, chan error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &stdioClient{t: t, in: inW, msgs: make(chan map[string]json.RawMessage, 64), raw: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(outR)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("relay wrote a line that is not a JSON object: %q", sc.Text())
				continue
			}
			c.raw <- sc.Text()
			c.msgs <- m
		}
	}()
	done := make(chan error, 1)
	ended := make(chan struct{})
	go func() { done <- r.Run(context.Background(), inR, outW); outW.Close(); close(ended) }()
	t.Cleanup(func() { inW.Close(); <-ended })
	return c, done
}

func (c *stdioClient) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next message the relay wrote that matches.
func (c *stdioClient) next(what string, match func(m map[string]json.RawMessage) bool) map[string]json.RawMessage {
	c.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m := <-c.msgs:
			<-c.raw
			if match(m) {
				return m
			}
		case <-timeout:
			c.t.Fatalf("no %s from the relay", what)
		}
	}
}

func isResponse(id string) func(m map[string]json.RawMessage) bool {
	return func(m map[string]json.RawMessage) bool {
		_, hasMethod := m["method"]
		return !hasMethod && string(m["id"]) == id
	}
}

func isMethod(method string) func(m map[string]json.RawMessage) bool {
	return func(m map[string]json.RawMessage) bool { return string(m["method"]) == `"`+method+`"` }
}

const initialize = `{"jsonrpc":"2.0","id":"init-1","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{}},"clientInfo":{"name":"t","version":"1"}}}`

// TestRelaySession: a session relayed end to end keeps the client's ids,
// carries progress and a sampling request with the client's answer, the
// server's own notifications (GET stream) and a cancellation, survives the
// server forgetting the session, and is ended with a DELETE when stdin ends.
func TestRelaySession(t *testing.T) {
	u := newUpstream(t)
	r := &Relay{URL: u.srv.URL + "/mcp?bot=b1", Token: testToken}
	c, done := startRelay(t, r)

	c.send(initialize)
	res := c.next("initialize answer", isResponse(`"init-1"`))
	if !bytes.Contains(res["result"], []byte(`"protocolVersion":"2025-06-18"`)) {
		t.Fatalf("initialize result: %s", res["result"])
	}
	c.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)

	// Progress, then a sampling request the client answers; the ids are the client's.
	c.send(`{"jsonrpc":"2.0","id":1234567,"method":"tools/call","params":{"name":"ask","_meta":{"progressToken":"tok-1"}}}`)
	p := c.next("progress", isMethod("notifications/progress"))
	if !bytes.Contains(p["params"], []byte(`"progressToken":"tok-1"`)) || !bytes.Contains(p["params"], []byte(`half way`)) {
		t.Fatalf("progress: %s", p["params"])
	}
	sampling := c.next("sampling request", isMethod("sampling/createMessage"))
	c.send(`{"jsonrpc":"2.0","id":` + string(sampling["id"]) + `,"result":{"role":"assistant","content":{"type":"text","text":"hi there"},"model":"m"}}`)
	call := c.next("tool answer", isResponse(`1234567`))
	if !bytes.Contains(call["result"], []byte("client said: hi there")) {
		t.Fatalf("tool result: %s", call)
	}

	// The server's own notification, outside any request.
	u.mcp.Load().AddTool(mcp.NewTool("late"), func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) { return nil, nil })
	c.next("tools/list_changed", isMethod("notifications/tools/list_changed"))

	// Cancellation reaches the call it names.
	c.send(`{"jsonrpc":"2.0","id":"blk","method":"tools/call","params":{"name":"block"}}`)
	if got := <-u.cancels; got != "started" {
		t.Fatal(got)
	}
	c.send(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"blk","reason":"test"}}`)
	select {
	case got := <-u.cancels:
		if got != "cancelled" {
			t.Fatal(got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the cancellation did not reach the server's call")
	}

	// A server that forgot the session (restarted) gets a new one, from
	// the client's own initialize; the client sees only its answer.
	r.mu.Lock()
	old := r.session
	r.mu.Unlock()
	u.restart()
	c.send(`{"jsonrpc":"2.0","id":8,"method":"tools/list"}`)
	list := c.next("tools/list answer", func(m map[string]json.RawMessage) bool {
		if isResponse(`"init-1"`)(m) {
			t.Errorf("the replayed initialize's answer reached the client: %s", m)
		}
		return isResponse(`8`)(m)
	})
	if !bytes.Contains(list["result"], []byte(`"ask"`)) {
		t.Fatalf("tools/list after the restart: %s", list)
	}
	r.mu.Lock()
	session := r.session
	r.mu.Unlock()
	if session == old || session == "" {
		t.Fatalf("session after the restart: %q (was %q)", session, old)
	}

	c.in.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the relay did not end when stdin did")
	}
	seen := u.seen()
	if last := seen[len(seen)-1]; last != "DELETE "+session+" bot=b1" {
		t.Fatalf("last request %q; want the session's DELETE (all: %q)", last, seen)
	}
	for _, s := range seen {
		if !strings.HasSuffix(s, " bot=b1") {
			t.Errorf("request %q lost the bot", s)
		}
	}
}

// TestRelayFailures: a request the server refuses gets a JSON-RPC error for
// its id, so the client does not hang; a line that is not JSON gets a parse
// error.
func TestRelayFailures(t *testing.T) {
	u := newUpstream(t)
	c, done := startRelay(t, &Relay{URL: u.srv.URL + "/mcp", Token: "wrong-token"})
	c.send(initialize)
	res := c.next("error answer", isResponse(`"init-1"`))
	if !bytes.Contains(res["error"], []byte("401")) {
		t.Fatalf("refused initialize: %s", res)
	}
	c.send(`{not json`)
	res = c.next("parse error", isResponse(`null`))
	if !bytes.Contains(res["error"], []byte("-32700")) {
		t.Fatalf("bad line: %s", res)
	}
	c.in.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, s := range u.seen() {
		if strings.HasPrefix(s, "DELETE") {
			t.Errorf("a session never opened was deleted: %q", s)
		}
	}
}

func TestReadSSE(t *testing.T) {
	stream := ": keep-alive\n\nevent: message\nid: 1\ndata: {\"a\":\ndata: 1}\n\nevent: other\ndata: x\n\ndata: {\"b\":2}\r\nid: 7\r\n\r\n"
	var got []string
	last, err := readSSE(strings.NewReader(stream), func(d []byte) { got = append(got, string(d)) })
	if !errors.Is(err, io.EOF) || last != "7" {
		t.Fatalf("last id %q, err %v", last, err)
	}
	if want := []string{"{\"a\":\n1}", `{"b":2}`}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestReadLine(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader("short\n"+strings.Repeat("x", 100)+"\nnext\nlast"), 16)
	for _, want := range []string{"short\n", "too long", "next\n", "last"} {
		line, err := readLine(br, 50)
		got := string(line)
		if errors.Is(err, errTooLong) {
			got = "too long"
		} else if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if _, err := readLine(br, 50); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
}

// TestWriteCompacts: a message spread over lines reaches stdout on one.
func TestWriteCompacts(t *testing.T) {
	var out bytes.Buffer
	r := &Relay{out: &out}
	r.write([]byte("{\n  \"id\": 1,\n  \"result\": {}\n}"))
	r.write([]byte(`{"id":"x"}`))
	if out.String() != "{\"id\":1,\"result\":{}}\n{\"id\":\"x\"}\n" {
		t.Fatalf("%q", out.String())
	}
}

func TestSameID(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{{`1`, `1`, true}, {`1000`, `1e3`, true}, {`"1"`, `1`, false}, {`"a"`, `"a"`, true}, {`"a"`, `"b"`, false}} {
		if got := sameID(json.RawMessage(c.a), json.RawMessage(c.b)); got != c.same {
			t.Errorf("sameID(%s, %s) = %v", c.a, c.b, got)
		}
	}
}

func TestEndpoint(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:8080": "http://127.0.0.1:8080/mcp",
		"0.0.0.0:8080":   "http://localhost:8080/mcp",
		"[::]:9":         "http://localhost:9/mcp",
		"[::1]:9":        "http://[::1]:9/mcp",
	} {
		if got, err := Endpoint(addr, ""); err != nil || got != want {
			t.Errorf("Endpoint(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	if got, _ := Endpoint("127.0.0.1:1", "bot-1"); got != "http://127.0.0.1:1/mcp?bot=bot-1" {
		t.Errorf("with a bot: %q", got)
	}
}

func TestToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-file-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := nslock.Holder{Transport: "http", TokenFile: file}
	if tok, err := Token(h, "", "u"); err != nil || tok != "from-file-0123456789" {
		t.Errorf("from the file: %q %v", tok, err)
	}
	if tok, err := Token(h, "own-token", "u"); err != nil || tok != "own-token" {
		t.Errorf("own token first: %q %v", tok, err)
	}
	if tok, err := Token(nslock.Holder{NoAuth: true}, "", "u"); err != nil || tok != "" {
		t.Errorf("no auth: %q %v", tok, err)
	}
	if _, err := Token(nslock.Holder{Transport: "http"}, "", "http://x/mcp"); err == nil || !strings.Contains(err.Error(), "BERTH_TOKEN") {
		t.Errorf("holder with a flag token: %v", err)
	}
	h.TokenFile = filepath.Join(t.TempDir(), "missing")
	if _, err := Token(h, "", "http://x/mcp"); err == nil || !strings.Contains(err.Error(), "berth token") || !strings.Contains(err.Error(), h.TokenFile) {
		t.Errorf("unreadable token file: %v", err)
	}
}
