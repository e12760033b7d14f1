package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The two protocol eras berth serves over HTTP: 2026-07-28 (no sessions:
// every request carries its token, its version and, with ?bot=, its bot)
// and 2025-11-25 (sessions bound to the token that opened them).
const (
	era2026 = "2026-07-28"
	era2025 = "2025-11-25"
)

var eras = []string{era2026, era2025}

// wireLog is an HTTP transport that adds a bearer token and records what
// the client put on the wire: the protocol versions it declared and
// whether it ever sent a session id.
type wireLog struct {
	token    string
	mu       sync.Mutex
	versions map[string]bool
	sessions atomic.Bool
}

func (w *wireLog) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+w.token)
	w.mu.Lock()
	if w.versions == nil {
		w.versions = map[string]bool{}
	}
	if v := r.Header.Get("Mcp-Protocol-Version"); v != "" {
		w.versions[v] = true
	}
	w.mu.Unlock()
	if r.Header.Get("Mcp-Session-Id") != "" {
		w.sessions.Store(true)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// check fails t unless every request after the handshake spoke era, with
// sessions exactly in the 2025 era.
func (w *wireLog) check(t *testing.T, era string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.versions) != 1 || !w.versions[era] {
		t.Errorf("client declared versions %v on the wire, want only %s", w.versions, era)
	}
	if sessions := w.sessions.Load(); sessions != (era == era2025) {
		t.Errorf("era %s: client sent a session id: %v", era, sessions)
	}
}

// modernClient is a client of one library speaking one era.
type modernClient struct {
	mcpClient
	wire *wireLog
	// listen, for mcp-go on 2026-07-28, opens its subscriptions/listen
	// stream (the go-sdk opens its own on connect) and waits for the ack.
	listen func(t *testing.T)
}

// connectEra connects client lib ("mcp-go" or "go-sdk") to url with token,
// speaking era.
func (e *env) connectEra(lib, era, url, token string) modernClient {
	e.t.Helper()
	w := &wireLog{token: token}
	hc := &http.Client{Transport: w}
	if lib == "mcp-go" {
		tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPBasicClient(hc))
		if err != nil {
			e.t.Fatal(err)
		}
		c := mcpclient.NewClient(tr, mcpclient.WithProtocolVersion(era))
		acked := make(chan struct{}, 1)
		c.OnNotification(func(n mcpgo.JSONRPCNotification) {
			if n.Method == string(mcpgo.MethodNotificationSubscriptionsAcknowledged) {
				select {
				case acked <- struct{}{}:
				default:
				}
			}
		})
		mc := modernClient{mcpClient: newMcpgoClient(e.t, c), wire: w}
		mc.listen = func(t *testing.T) {
			if era != era2026 {
				return
			}
			stop, err := c.ListenAsync(context.Background(), mcpgo.SubscriptionFilter{ToolsListChanged: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			select {
			case <-acked:
			case <-time.After(time.Minute):
				t.Fatal("no subscriptions/acknowledged on the listen stream")
			}
		}
		return mc
	}
	// connectSDK connects without session options; the era is one.
	sc := &sdkClient{progress: progressRouter{prefix: "s"}}
	c := sdk.NewClient(&sdk.Implementation{Name: "berth-e2e-gosdk", Version: "1"}, &sdk.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
			p := req.Params
			sc.progress.dispatch(p.ProgressToken, progressEvent{Progress: p.Progress, Total: p.Total, Message: p.Message})
		},
		ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) { sc.changes.Add(1) },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: url, HTTPClient: hc}, &sdk.ClientSessionOptions{ProtocolVersion: era})
	if err != nil {
		e.t.Fatalf("go-sdk connect (%s): %v", era, err)
	}
	if got := cs.InitializeResult().ProtocolVersion; got != era {
		e.t.Fatalf("go-sdk negotiated %s, want %s", got, era)
	}
	sc.cs = cs
	e.t.Cleanup(sc.close)
	return modernClient{mcpClient: sc, wire: w, listen: func(*testing.T) {}}
}

var libs = []string{"mcp-go", "go-sdk"}

// TestModernLifecycle: the workspace lifecycle through both clients in
// both eras, on one berth; clients that can be asked stay on 2025-11-25.
func TestModernLifecycle(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	for _, era := range eras {
		for _, lib := range libs {
			t.Run(era+"/"+lib, func(t *testing.T) {
				c := e.connectEra(lib, era, b.URL, b.Token)
				bot := "life-" + strings.ReplaceAll(era, "-", "") + "-" + strings.ReplaceAll(lib, "-", "")
				var created createOut
				mustCall(t, c, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &created)
				if created.Workspace.Status != "running" {
					t.Fatalf("workspace_create: %+v", created)
				}
				if o := execute(t, c, bot, map[string]any{"command": "echo hello $((6*7))"}); o.ExitCode != 0 || o.Stdout != "hello 42\n" {
					t.Fatalf("exec: %+v", o)
				}
				mustCall(t, c, "fs_write", map[string]any{"bot_id": bot, "path": "notes.txt", "content": "from " + era}).decode(t, &struct{}{})
				var read readOut
				mustCall(t, c, "fs_read", map[string]any{"bot_id": bot, "path": "notes.txt"}).decode(t, &read)
				if read.Text != "from "+era {
					t.Fatalf("fs_read: %+v", read)
				}
				mustCall(t, c, "workspace_delete", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
				if res := mustCall(t, c, "workspace_get", map[string]any{"bot_id": bot}); !res.IsError {
					t.Fatalf("workspace_get after delete: %s", res.Text)
				}
				c.wire.check(t, era)
			})
		}
	}
	// berth asks with server-initiated requests, which 2026-07-28 has not:
	// a client that declares it can be asked keeps them on 2025-11-25.
	t.Run("clients that can be asked", func(t *testing.T) {
		if v := e.mcpgoAt(b.URL, b.Token, "yes").(*mcpgoClient).c.ProtocolVersion(); v != era2025 {
			t.Errorf("mcp-go with an elicitation handler negotiated %s", v)
		}
		if v := e.sdkAt(b.URL, b.Token, "yes").(*sdkClient).cs.InitializeResult().ProtocolVersion; v != era2025 {
			t.Errorf("go-sdk with an elicitation handler negotiated %s", v)
		}
	})
}

// TestModernCancel cancels a running exec and a pull midway through both
// clients in both eras: the command's process group ends, and the pull
// leaves nothing behind.
func TestModernCancel(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ref := reg.PushRandomImage(t, "berth/pull:modern-cancel", 2, 4<<20)
	for _, era := range eras {
		for _, lib := range libs {
			t.Run(era+"/"+lib, func(t *testing.T) {
				e := newEnv(t)
				b := e.serveHTTP()
				c := e.connectEra(lib, era, b.URL, b.Token)
				// A pull, cancelled once bytes flow (the registry holds it); first, so
				// that the env holds nothing else a leftover could be.
				cancelPullMidway(t, e, c, reg, ref, "pulled")
				mustCall(t, c, "workspace_create", map[string]any{"bot_id": "cx"}).decode(t, &struct{}{})

				// exec, after: a child in the background and a foreground sleep.
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := make(chan error, 1)
				go func() {
					_, err := c.call(ctx, "exec", map[string]any{"bot_id": "cx", "command": "sleep 300 & echo $! > /tmp/child; sleep 300"}, nil)
					done <- err
				}()
				waitFor(t, "the command to start", func() bool {
					_, err := e.tryExec(t, "cx", "test", "-s", "/tmp/child")
					return err == nil
				})
				cancel()
				if err := <-done; err == nil {
					t.Fatal("a cancelled exec returned no error")
				}
				e.waitGone(t, "cx", "/tmp/child")

				c.wire.check(t, era)
			})
		}
	}
}

// TestModernFederationAndTenants: a session limited to one bot (by its
// token, or by ?bot=) lists and calls that bot's own MCP servers' tools,
// with their progress, in both eras, and hears list_changed (2026-07-28: on its
// subscriptions/listen stream) when a server is added. Another token's
// clients see none of it.
func TestModernFederationAndTenants(t *testing.T) {
	e := newMCPEnv(t)
	const tokenA, tokenB = "modern-a-token-0123456789", "modern-b-token-0123456789"
	tokens := filepath.Join(e.stateDir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("tokens:\n"+
		"  - name: a\n    token: "+tokenA+"\n    bots: [ma]\n    scopes: [read, write, exec]\n"+
		"  - name: b\n    token: "+tokenB+"\n    bots: [mb]\n    scopes: [read, write, exec]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.extra = append(e.extra, "--tokens-file", tokens)
	b := e.serveHTTP()
	admin := e.connectEra("go-sdk", era2026, b.URL, b.Token)
	for _, bot := range []string{"ma", "mb"} {
		mustCall(t, admin, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	}

	type named struct {
		name string
		c    modernClient
	}
	var mine, theirs []named
	for _, era := range eras {
		for _, lib := range libs {
			mine = append(mine,
				named{era + "/" + lib + "/token", e.connectEra(lib, era, b.URL, tokenA)},
				named{era + "/" + lib + "/?bot=", e.connectEra(lib, era, b.botURL("ma"), b.Token)})
			theirs = append(theirs, named{era + "/" + lib + "/other token", e.connectEra(lib, era, b.URL, tokenB)})
		}
	}
	before := map[string]int64{}
	for _, n := range append(slices.Clone(mine), theirs...) {
		n.c.listen(t)
		// A 2025 session hears of its own bot's tools when a session of
		// that bot opens; a client without a GET stream on its next
		// request's response. Hear those first.
		if _, err := n.c.toolNames(context.Background()); err != nil {
			t.Fatal(err)
		}
		before[n.name] = n.c.listChanges()
	}

	mustCall(t, admin, "mcp_server_add", map[string]any{"bot_id": "ma", "name": "fx", "command": testenv.MCPFixturePath}).decode(t, &struct{}{})
	for _, n := range mine {
		t.Run(n.name, func(t *testing.T) {
			// A 2025 mcp-go session without a GET stream hears list_changed
			// on its next request's response.
			waitTools(t, n.c, func(names []string) bool { return slices.Contains(names, "fx__echo") })
			waitFor(t, "tools/list_changed", func() bool { return n.c.listChanges() > before[n.name] })
			res := mustCall(t, n.c, "fx__echo", map[string]any{"text": "hi " + n.name})
			if res.IsError || !strings.Contains(res.Text, "hi "+n.name) {
				t.Fatalf("fx__echo: %+v", res)
			}
			// The server's progress reaches the client of the call.
			var events []progressEvent
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := n.c.call(ctx, "fx__progress", map[string]any{"steps": 3, "interval_ms": 10}, func(ev progressEvent) { events = append(events, ev) })
			if err != nil || res.IsError || res.Text != "done 3 steps" {
				t.Fatalf("fx__progress: %+v %v", res, err)
			}
			if len(events) != 3 || events[2].Progress != 3 || events[2].Message != "step 3" {
				t.Errorf("progress through federation: %+v", events)
			}
		})
	}
	for _, n := range theirs {
		t.Run(n.name, func(t *testing.T) {
			if names, _ := n.c.toolNames(context.Background()); slices.ContainsFunc(names, func(s string) bool { return strings.HasPrefix(s, "fx__") }) {
				t.Fatalf("token B lists bot ma's tools: %v", names)
			}
			if res, err := n.c.call(context.Background(), "fx__echo", map[string]any{"text": "x"}, nil); err == nil && !res.IsError {
				t.Fatalf("token B called bot ma's tool: %s", res.Text)
			}
			if res := mustCall(t, n.c, "fs_read", map[string]any{"bot_id": "ma", "path": "/etc/hostname"}); !res.IsError {
				t.Fatalf("token B read bot ma's files: %s", res.Text)
			}
			// Every list_changed went out in the same pass as token A's.
			if got := n.c.listChanges(); got != before[n.name] {
				t.Fatalf("token B heard %d list_changed of bot ma", got-before[n.name])
			}
		})
	}
}

// rawModern posts one 2026-07-28 message as token and returns the HTTP
// status and the JSON-RPC message answering id (none for a notification).
func rawModern(url, token string, id any, method, name string, params map[string]any, withMeta bool) (int, map[string]any, error) {
	params = maps.Clone(params) // the caller's map stays as it was
	if params == nil {
		params = map[string]any{}
	}
	if withMeta {
		params["_meta"] = map[string]any{
			mcpgo.MetaKeyProtocolVersion:    era2026,
			mcpgo.MetaKeyClientCapabilities: map[string]any{},
		}
	}
	msg := map[string]any{"jsonrpc": "2.0", "method": method, "params": params}
	if id != nil {
		msg["id"] = id
	}
	body, _ := json.Marshal(msg)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", era2026)
	req.Header.Set("Mcp-Method", method)
	if name != "" {
		req.Header.Set("Mcp-Name", name)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if id == nil {
		return resp.StatusCode, nil, nil
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimPrefix(sc.Text(), "data: ")
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["id"] != nil && fmt.Sprint(m["id"]) == fmt.Sprint(id) {
			return resp.StatusCode, m, nil
		}
	}
	return resp.StatusCode, nil, fmt.Errorf("no answer to %s %v (HTTP %d)", method, id, resp.StatusCode)
}

// TestModernCancelledIsTheCallersOwn: a 2026-07-28 notifications/cancelled
// reaches only calls of its own token (JSON-RPC ids are easy to guess),
// the go-sdk's, which lacks the protocol version in _meta, cancels, and an
// id two calls of the token share cancels neither.
func TestModernCancelledIsTheCallersOwn(t *testing.T) {
	e := newEnv(t)
	const tokenB = "modern-b-token-0123456789"
	tokens := filepath.Join(e.stateDir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("tokens:\n  - name: b\n    token: "+tokenB+"\n    bots: [other]\n    scopes: [read, write, exec]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.extra = append(e.extra, "--tokens-file", tokens)
	b := e.serveHTTP()
	c := e.connectEra("go-sdk", era2026, b.URL, b.Token)
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "cc"}).decode(t, &struct{}{})

	const id = 7
	type answer struct {
		m   map[string]any
		err error
	}
	call := func(marker string) <-chan answer {
		out := make(chan answer, 1)
		go func() {
			_, m, err := rawModern(b.URL, b.Token, id, "tools/call", "exec", map[string]any{"name": "exec", "arguments": map[string]any{
				"bot_id": "cc", "command": "echo $$ > /tmp/" + marker + "; while [ ! -e /tmp/go-" + marker + " ]; do sleep 0.05; done; echo finished"}}, true)
			out <- answer{m, err}
		}()
		waitFor(t, "the command to start", func() bool {
			_, err := e.tryExec(t, "cc", "test", "-s", "/tmp/"+marker)
			return err == nil
		})
		return out
	}
	cancelled := map[string]any{"requestId": id, "reason": "test"}

	// Token B cancels "request 7": not its own, so the call runs on and
	// finishes when told to.
	running := call("one")
	if status, _, err := rawModern(b.URL, tokenB, nil, "notifications/cancelled", "", cancelled, true); err != nil || status != http.StatusAccepted {
		t.Fatalf("token B's notifications/cancelled: HTTP %d %v", status, err)
	}
	e.execIn(t, "cc", "touch", "/tmp/go-one")
	a := <-running
	if res, _ := a.m["result"].(map[string]any); a.err != nil || res == nil || res["isError"] == true || !strings.Contains(fmt.Sprint(res["content"]), "finished") {
		t.Fatalf("token B's cancel reached token A's call: %v %v", a.m, a.err)
	}

	// Token A cancels as the go-sdk does, without _meta: the call ends
	// and its process with it, though nothing tells the command to stop.
	running = call("two")
	if status, _, err := rawModern(b.URL, b.Token, nil, "notifications/cancelled", "", cancelled, false); err != nil || status != http.StatusAccepted {
		t.Fatalf("notifications/cancelled without _meta: HTTP %d %v", status, err)
	}
	select {
	case <-running:
	case <-time.After(time.Minute):
		t.Fatal("the cancelled call did not end")
	}
	e.waitGone(t, "cc", "/tmp/two")

	// Two calls of the token with the same id (two clients that both count
	// from 1): the id names neither for certain, so neither is cancelled.
	first, second := call("three"), call("four")
	if status, _, err := rawModern(b.URL, b.Token, nil, "notifications/cancelled", "", cancelled, true); err != nil || status != http.StatusAccepted {
		t.Fatalf("notifications/cancelled: HTTP %d %v", status, err)
	}
	e.execIn(t, "cc", "touch", "/tmp/go-three", "/tmp/go-four")
	for _, running := range []<-chan answer{first, second} {
		a := <-running
		if res, _ := a.m["result"].(map[string]any); a.err != nil || res == nil || res["isError"] == true || !strings.Contains(fmt.Sprint(res["content"]), "finished") {
			t.Fatalf("an ambiguous cancel ended a call: %v %v", a.m, a.err)
		}
	}
}
