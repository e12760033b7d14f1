package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// liveClient is a client that follows resources: its tools and reads go
// through mcpClient, and every notifications/resources/updated it gets
// lands in updates.
type liveClient struct {
	mcpClient
	subscribe   func(ctx context.Context, uri string) error
	unsubscribe func(ctx context.Context, uri string) error
	updates     chan string
}

func newUpdates() chan string { return make(chan string, 1024) }

// liveMcpgo connects mcp-go's client (already made for its transport) on
// the session protocol, whose resources/subscribe it uses.
func liveMcpgo(t *testing.T, c *mcpclient.Client) *liveClient {
	t.Helper()
	updates := newUpdates()
	c.OnNotification(func(n mcpgo.JSONRPCNotification) {
		if n.Method == string(mcpgo.MethodNotificationResourceUpdated) {
			updates <- fmt.Sprint(n.Params.AdditionalFields["uri"])
		}
	})
	// Start's context is the GET stream's: it lasts as long as the client.
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = mcpgo.LATEST_LEGACY_PROTOCOL_VERSION
	init.Params.ClientInfo = mcpgo.Implementation{Name: "berth-e2e-live", Version: "1"}
	res, err := c.Initialize(ctx, init)
	if err != nil {
		t.Fatal(err)
	}
	if res.Capabilities.Resources == nil || !res.Capabilities.Resources.Subscribe {
		t.Fatalf("berth does not declare resources.subscribe: %+v", res.Capabilities.Resources)
	}
	t.Cleanup(func() { c.Close() })
	return &liveClient{
		mcpClient: &mcpgoClient{c: c, progress: progressRouter{prefix: "p"}},
		subscribe: func(ctx context.Context, uri string) error {
			req := mcpgo.SubscribeRequest{}
			req.Params.URI = uri
			return c.Subscribe(ctx, req)
		},
		unsubscribe: func(ctx context.Context, uri string) error {
			req := mcpgo.UnsubscribeRequest{}
			req.Params.URI = uri
			return c.Unsubscribe(ctx, req)
		},
		updates: updates,
	}
}

// liveSDK connects the go-sdk client over tr on the session protocol
// 2025-11-25.
func liveSDK(t *testing.T, tr sdk.Transport) *liveClient {
	t.Helper()
	updates := newUpdates()
	c := sdk.NewClient(&sdk.Implementation{Name: "berth-e2e-live-sdk", Version: "1"}, &sdk.ClientOptions{
		ResourceUpdatedHandler: func(_ context.Context, req *sdk.ResourceUpdatedNotificationRequest) {
			updates <- req.Params.URI
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, tr, &sdk.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return &liveClient{
		mcpClient: &sdkClient{cs: cs, progress: progressRouter{prefix: "s"}},
		subscribe: func(ctx context.Context, uri string) error {
			return cs.Subscribe(ctx, &sdk.SubscribeParams{URI: uri})
		},
		unsubscribe: func(ctx context.Context, uri string) error {
			return cs.Unsubscribe(ctx, &sdk.UnsubscribeParams{URI: uri})
		},
		updates: updates,
	}
}

func (lc *liveClient) mustSubscribe(t *testing.T, uri string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := lc.subscribe(ctx, uri); err != nil {
		t.Fatalf("subscribe %s: %v", uri, err)
	}
}

// waitUpdate waits for a notification of uri and returns the others that
// came before it. The timeout only bounds a failing test.
func (lc *liveClient) waitUpdate(t *testing.T, uri string) []string {
	t.Helper()
	var before []string
	timeout := time.After(time.Minute)
	for {
		select {
		case got := <-lc.updates:
			if got == uri {
				return before
			}
			before = append(before, got)
		case <-timeout:
			t.Fatalf("no notifications/resources/updated for %s within a minute (got %v)", uri, before)
		}
	}
}

// fileSubscriptions: notified after fs_write and after a write by a
// process in the workspace; not after unsubscribe.
func fileSubscriptions(t *testing.T, lc *liveClient, bot string) {
	t.Helper()
	mustCall(t, lc, "workspace_create", map[string]any{"bot_id": bot})
	files := "berth://bots/" + bot + "/files/data/"
	for _, f := range []string{"a.txt", "b.txt", "c.txt", "d.txt"} {
		lc.mustSubscribe(t, files+f)
	}

	// fs_write (an atomic replace) of a file that did not exist.
	if res := mustCall(t, lc, "fs_write", map[string]any{"bot_id": bot, "path": "/data/a.txt", "content": "A"}); res.IsError {
		t.Fatal(res.Text)
	}
	lc.waitUpdate(t, files+"a.txt")

	// A process in the workspace writes c.txt, which nothing else touches.
	if res := mustCall(t, lc, "exec", map[string]any{"bot_id": bot, "command": "echo x > /data/c.txt"}); res.IsError {
		t.Fatal(res.Text)
	}
	lc.waitUpdate(t, files+"c.txt")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if text, err := lc.readResource(ctx, files+"c.txt"); err != nil || text != "x\n" {
		t.Fatalf("c.txt after the notification: %q, %v", text, err)
	}

	// Unsubscribed from d.txt, which has not been written yet: a write of
	// it, then of b.txt (still followed). b's notification comes; d's must
	// not have come before it.
	if err := lc.unsubscribe(ctx, files+"d.txt"); err != nil {
		t.Fatal(err)
	}
	if res := mustCall(t, lc, "exec", map[string]any{"bot_id": bot, "command": "echo d > /data/d.txt"}); res.IsError {
		t.Fatal(res.Text)
	}
	if res := mustCall(t, lc, "fs_write", map[string]any{"bot_id": bot, "path": "/data/b.txt", "content": "B"}); res.IsError {
		t.Fatal(res.Text)
	}
	if before := lc.waitUpdate(t, files+"b.txt"); slices.Contains(before, files+"d.txt") {
		t.Fatalf("notified of d.txt after unsubscribing: %v", before)
	}
}

// processSubscription: a background process's output is notified when the
// process writes.
func processSubscription(t *testing.T, lc *liveClient, bot string) {
	t.Helper()
	res := mustCall(t, lc, "exec", map[string]any{"bot_id": bot, "background": true,
		"command": "while [ ! -e /data/go ]; do sleep 0.05; done; echo out"})
	var started struct {
		ProcessID string `json:"process_id"`
	}
	res.decode(t, &started)
	uri := "berth://bots/" + bot + "/processes/" + started.ProcessID + "/stdout"
	lc.mustSubscribe(t, uri)
	if res := mustCall(t, lc, "fs_write", map[string]any{"bot_id": bot, "path": "/data/go", "content": ""}); res.IsError {
		t.Fatal(res.Text)
	}
	lc.waitUpdate(t, uri)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	text, err := lc.readResource(ctx, uri+"?offset=0")
	if err != nil {
		t.Fatal(err)
	}
	var chunk struct {
		Output     string `json:"output"`
		NextOffset int64  `json:"next_offset"`
	}
	if err := json.Unmarshal([]byte(text), &chunk); err != nil || chunk.Output != "out\n" || chunk.NextOffset != 4 {
		t.Fatalf("process output after the notification: %s (%v)", text, err)
	}
}

// terminalAndWorkspaceSubscriptions: a terminal's output and the
// workspace's state are notified when they change.
func terminalAndWorkspaceSubscriptions(t *testing.T, lc *liveClient, bot string) {
	t.Helper()
	var term struct {
		ID string `json:"id"`
	}
	mustCall(t, lc, "terminal_open", map[string]any{"bot_id": bot, "shell": "sh"}).decode(t, &term)
	uri := "berth://bots/" + bot + "/terminals/" + term.ID + "/output"
	lc.mustSubscribe(t, uri)
	mustCall(t, lc, "terminal_send", map[string]any{"bot_id": bot, "terminal_id": term.ID,
		"text": "echo mark-$((6*7))\n", "wait_pattern": "mark-42"}).decode(t, &struct{}{})
	lc.waitUpdate(t, uri)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if text, err := lc.readResource(ctx, uri); err != nil || !strings.Contains(text, "mark-42") {
		t.Fatalf("terminal output after the notification: %s, %v", text, err)
	}

	ws := "berth://bots/" + bot + "/workspace"
	lc.mustSubscribe(t, ws)
	mustCall(t, lc, "workspace_stop", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	lc.waitUpdate(t, ws)
	if text, err := lc.readResource(ctx, ws); err != nil || !strings.Contains(text, `"status": "stopped"`) {
		t.Fatalf("workspace after the notification: %s, %v", text, err)
	}
}

func TestSubscribeMcpgoHTTP(t *testing.T) {
	e := newEnv(t)
	tokens := filepath.Join(e.stateDir, "tokens.yaml")
	const intruder = "intruder-0123456789abcdef"
	if err := os.WriteFile(tokens, []byte("tokens:\n  - {name: intruder, token: "+intruder+", bots: [other], scopes: [read, write, exec, manage]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.extra = append(e.extra, "--tokens-file", tokens)
	b := e.serveHTTP()
	connect := func(token string) *liveClient {
		c, err := mcpclient.NewStreamableHttpClient(b.URL,
			transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}),
			// The session's own stream (GET), where notifications come.
			transport.WithContinuousListening())
		if err != nil {
			t.Fatal(err)
		}
		return liveMcpgo(t, c)
	}
	lc := connect(b.Token)
	fileSubscriptions(t, lc, "live-mcpgo")
	processSubscription(t, lc, "live-mcpgo")

	// Another tenant's token may follow none of it, and is told why.
	other := connect(intruder)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, uri := range []string{
		"berth://bots/live-mcpgo/files/data/a.txt",
		"berth://bots/live-mcpgo/processes/p1/stdout",
		"berth://bots/live-mcpgo/workspace",
	} {
		err := other.subscribe(ctx, uri)
		if err == nil || !strings.Contains(err.Error(), "may not use bot") {
			t.Errorf("another tenant's subscribe to %s: %v, want a refusal", uri, err)
		}
	}
	// Nor does an unknown kind of resource pass, nor a 65th subscription.
	if err := lc.subscribe(ctx, "berth://bots/live-mcpgo/snapshots"); err == nil || !strings.Contains(err.Error(), "can be subscribed to") {
		t.Errorf("subscribe to snapshots: %v", err)
	}
	fresh := connect(b.Token)
	for i := range 64 {
		fresh.mustSubscribe(t, fmt.Sprintf("berth://bots/cap-%d/workspace", i))
	}
	if err := fresh.subscribe(ctx, "berth://bots/cap-64/workspace"); err == nil || !strings.Contains(err.Error(), "64 resources already") {
		t.Errorf("65th subscription: %v", err)
	}
}

func TestSubscribeSDKStdio(t *testing.T) {
	e := newEnv(t)
	cmd := exec.Command(berthBin, append([]string{"serve", "--stdio"}, e.args()...)...)
	cmd.Stderr = e.logWriter("berth-stdio")
	lc := liveSDK(t, &sdk.CommandTransport{Command: cmd})
	fileSubscriptions(t, lc, "live-sdk")
	processSubscription(t, lc, "live-sdk")
	terminalAndWorkspaceSubscriptions(t, lc, "live-sdk")
}

func TestSubscribeSDKHTTP(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	lc := liveSDK(t, &sdk.StreamableClientTransport{Endpoint: b.URL, HTTPClient: &http.Client{Transport: bearer{token: b.Token}}})
	fileSubscriptions(t, lc, "live-sdk-http")
}

// TestSubscribeListen2026Stdio: on protocol 2026-07-28 (no
// resources/subscribe), a subscriptions/listen stream that asks for
// resources gets their notifications/resources/updated, tagged with the
// stream's id; a resource that cannot be followed is left out of the
// stream's acknowledgement.
func TestSubscribeListen2026Stdio(t *testing.T) {
	e := newEnv(t)
	args := append([]string{"serve", "--stdio"}, e.args()...)
	c, err := mcpclient.NewStdioMCPClientWithOptions(berthBin, nil, args, transport.WithCommandStderrWriter(e.logWriter("berth-stdio")))
	if err != nil {
		t.Fatal(err)
	}
	type note struct {
		uri string
		sub any
	}
	updates := make(chan note, 64)
	acks := make(chan map[string]any, 4)
	c.OnNotification(func(n mcpgo.JSONRPCNotification) {
		switch n.Method {
		case string(mcpgo.MethodNotificationResourceUpdated):
			var sub any
			if n.Params.Meta != nil {
				sub = n.Params.Meta[mcpgo.MetaKeySubscriptionID]
			}
			updates <- note{fmt.Sprint(n.Params.AdditionalFields["uri"]), sub}
		case string(mcpgo.MethodNotificationSubscriptionsAcknowledged):
			acks <- n.Params.AdditionalFields
		}
	})
	lc := newMcpgoClient(t, c) // negotiates 2026-07-28 over stdio
	mustCall(t, lc, "workspace_create", map[string]any{"bot_id": "live-2026"})
	uri := "berth://bots/live-2026/files/data/f.txt"
	stop, err := c.ListenAsync(context.Background(), mcpgo.SubscriptionFilter{
		ResourceSubscriptions: []string{uri, "berth://bots/live-2026/snapshots"},
	}, func(err error) { t.Errorf("listen: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	select {
	case ack := <-acks:
		data, _ := json.Marshal(ack)
		if !strings.Contains(string(data), uri) || strings.Contains(string(data), "snapshots") {
			t.Fatalf("acknowledged %s, want %s only", data, uri)
		}
	case <-time.After(time.Minute):
		t.Fatal("no subscriptions/acknowledged within a minute")
	}
	if res := mustCall(t, lc, "fs_write", map[string]any{"bot_id": "live-2026", "path": "/data/f.txt", "content": "new"}); res.IsError {
		t.Fatal(res.Text)
	}
	select {
	case n := <-updates:
		if n.uri != uri || n.sub == nil {
			t.Fatalf("notification %+v, want %s tagged with the stream's id", n, uri)
		}
	case <-time.After(time.Minute):
		t.Fatal("no notifications/resources/updated within a minute")
	}
}

// TestSubscribeMCPServerLogs: the log of one of the bot's MCP servers is
// notified when the server writes to it (here: it crashes).
func TestSubscribeMCPServerLogs(t *testing.T) {
	e := newMCPEnv(t)
	const bot = "live-logs"
	e.extra = append(e.extra, "--bot", bot)
	cmd := exec.Command(berthBin, append([]string{"serve", "--stdio"}, e.args()...)...)
	cmd.Stderr = e.logWriter("berth-stdio")
	lc := liveSDK(t, &sdk.CommandTransport{Command: cmd})
	mustCall(t, lc, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	var added struct {
		Server struct {
			State string `json:"state"`
		} `json:"server"`
	}
	mustCall(t, lc, "mcp_server_add", map[string]any{"bot_id": bot, "name": "fx", "command": testenv.MCPFixturePath}).decode(t, &added)
	if added.Server.State != "ready" {
		t.Fatalf("after mcp_server_add: %+v", added)
	}
	uri := "berth://bots/" + bot + "/mcp-servers/fx/logs"
	lc.mustSubscribe(t, uri)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The crash answers nothing: the call fails, the log says why.
	_, _ = lc.call(ctx, "fx__crash", map[string]any{"code": 7}, nil)
	lc.waitUpdate(t, uri)
	if text, err := lc.readResource(ctx, uri); err != nil || !strings.Contains(text, "crashing with 7") {
		t.Fatalf("log after the notification: %s, %v", text, err)
	}
}
