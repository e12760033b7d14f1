package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// serveHTTPTokenFile starts `berth serve --http` as the service does: its
// admin token in the state directory's token file, not on the command line.
func (e *env) serveHTTPTokenFile() *berthHTTP {
	e.t.Helper()
	cmd := exec.Command(berthBin, append([]string{"serve", "--http", "127.0.0.1:0"}, e.args()...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	b := &berthHTTP{cmd: cmd, done: make(chan struct{})}
	found := make(chan string, 1)
	logs := e.logWriter("berth-http")
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(logs, sc.Text())
			if m := urlPattern.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	go func() { cmd.Wait(); close(b.done) }()
	e.t.Cleanup(b.kill)
	select {
	case b.URL = <-found:
	case <-b.done:
		e.t.Fatalf("berth exited before serving: %v", cmd.ProcessState)
	case <-time.After(30 * time.Second):
		e.t.Fatal("berth did not start serving HTTP within 30s")
	}
	tok, err := os.ReadFile(filepath.Join(e.stateDir, "token"))
	if err != nil {
		e.t.Fatal(err)
	}
	b.Token = strings.TrimSpace(string(tok))
	return b
}

// TestBridgeStdioToHTTP: while a berth serves a namespace over HTTP (the
// service), `berth serve --stdio` on the same namespace, as the client
// configs start it, relays its session to that berth: both stdio clients
// see the tools, workspaces made either way are one set, exec streams its
// progress, a cancelled exec is killed, and --bot limits the session to
// that bot.
func TestBridgeStdioToHTTP(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTPTokenFile()
	h := e.httpMcpgo(b)
	s := e.stdioMcpgo()
	sdkc := e.stdioSDK()

	for name, c := range map[string]mcpClient{"mcp-go": s, "go-sdk": sdkc} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		names, err := c.toolNames(ctx)
		cancel()
		if err != nil || !slices.Contains(names, "exec") || !slices.Contains(names, "workspace_create") {
			t.Fatalf("tools/list over the %s bridge: %v %v", name, names, err)
		}
	}

	// One set of workspaces, whichever way they are made.
	mustCall(t, s, "workspace_create", map[string]any{"bot_id": "viastdio"})
	mustCall(t, h, "workspace_create", map[string]any{"bot_id": "viahttp"})
	for _, check := range []struct {
		c   mcpClient
		bot string
	}{{h, "viastdio"}, {sdkc, "viahttp"}, {s, "viahttp"}} {
		var ws workspaceOut
		mustCall(t, check.c, "workspace_get", map[string]any{"bot_id": check.bot}).decode(t, &ws)
		if ws.Status != "running" {
			t.Fatalf("workspace %s from the other side: %+v", check.bot, ws)
		}
	}

	// Progress: the command waits after its first line until the client
	// has seen it as a notification, so it ends well only if streamed.
	requireFirstLineStreamed(t, sdkc, s, "viastdio")

	// Cancelling the call in the stdio client kills the command.
	callCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.call(callCtx, "exec", map[string]any{"bot_id": "viastdio", "command": "sleep 300 & echo $! > /tmp/child; sleep 300"}, nil)
		done <- err
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := e.tryExec(t, "viastdio", "test", "-s", "/tmp/child"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command never started")
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	<-done
	e.waitGone(t, "viastdio", "/tmp/child")

	// --bot: the one-bot view of /mcp?bot=ID.
	pinned := *e
	pinned.extra = append(slices.Clone(e.extra), "--bot", "viastdio")
	p := pinned.stdioMcpgo()
	var list struct {
		Workspaces []workspaceOut `json:"workspaces"`
	}
	mustCall(t, p, "workspace_list", map[string]any{}).decode(t, &list)
	if len(list.Workspaces) != 1 || list.Workspaces[0].BotID != "viastdio" {
		t.Fatalf("workspace_list with --bot viastdio: %+v", list.Workspaces)
	}
	if res := mustCall(t, p, "exec", map[string]any{"bot_id": "viahttp", "command": "true"}); !res.IsError {
		t.Fatalf("exec on another bot with --bot viastdio: %+v", res)
	}
	if o := execute(t, p, "viastdio", map[string]any{"command": "echo pinned"}); o.Stdout != "pinned\n" {
		t.Fatalf("exec on its own bot: %+v", o)
	}
}

var bridgedSession = regexp.MustCompile(`bridged session started.*session=(\S+)`)

// TestBridgeEndsSessionOnEOF: when its client closes stdin, a bridging
// stdio berth ends its session on the HTTP berth (DELETE) and exits; one
// that cannot read the HTTP berth's token refuses to start, saying how to
// give it one.
func TestBridgeEndsSessionOnEOF(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTPTokenFile()

	cmd := exec.Command(berthBin, append([]string{"serve", "--stdio"}, e.args()...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	sessions := make(chan string, 1)
	logs := e.logWriter("berth-stdio")
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(logs, sc.Text())
			if m := bridgedSession.FindStringSubmatch(sc.Text()); m != nil {
				sessions <- m[1]
			}
		}
	}()
	lines := bufio.NewScanner(stdout)
	io.WriteString(stdin, `{"jsonrpc":"2.0","id":"a-1","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`+"\n")
	if !lines.Scan() || !strings.Contains(lines.Text(), `"id":"a-1"`) || !strings.Contains(lines.Text(), `"result"`) {
		t.Fatalf("initialize through the bridge: %q %v", lines.Text(), lines.Err())
	}
	io.WriteString(stdin, `{"jsonrpc":"2.0","method":"notifications/initialized"}`+"\n")
	var session string
	select {
	case session = <-sessions:
	case <-time.After(time.Minute):
		t.Fatal("the bridge did not log its session")
	}

	ping := func() int {
		req, _ := http.NewRequest(http.MethodPost, b.URL, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Authorization", "Bearer "+b.Token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Session-Id", session)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ping(); code != http.StatusOK {
		t.Fatalf("the bridged session %s before EOF: %d", session, code)
	}
	stdin.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the bridge after EOF: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the bridge did not exit after EOF")
	}
	if code := ping(); code != http.StatusNotFound {
		t.Fatalf("the bridged session %s after EOF: %d; want it ended (404)", session, code)
	}

	// A bridge that cannot read the service's token says what to do.
	if err := os.Remove(filepath.Join(e.stateDir, "token")); err != nil {
		t.Fatal(err)
	}
	refused := exec.Command(berthBin, append([]string{"serve", "--stdio"}, e.args()...)...)
	refused.Stdin = strings.NewReader("")
	msg, err := refused.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "cannot read the token file") || !strings.Contains(string(msg), "BERTH_TOKEN") ||
		!strings.Contains(string(msg), "berth token") {
		t.Fatalf("a bridge without the token: %v\n%s", err, msg)
	}
}
