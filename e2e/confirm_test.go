package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// confirmer is the person behind a client asked to confirm destructive
// work: it answers "yes", "no" (accepts the form with confirm=false),
// "decline" or "cancel" (or "approve" to a network access request), and
// keeps the last question.
type confirmer struct {
	mu      sync.Mutex
	answer  string
	message string
	asked   atomic.Int32
}

func (c *confirmer) set(answer string) {
	c.mu.Lock()
	c.answer = answer
	c.mu.Unlock()
}

// respond records a question and returns the action and content to answer.
func (c *confirmer) respond(message string) (string, map[string]any) {
	c.asked.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.message = message
	switch c.answer {
	case "yes":
		return "accept", map[string]any{"confirm": true}
	case "no":
		return "accept", map[string]any{"confirm": false}
	case "approve": // a network access request
		return "accept", map[string]any{"approve": true, "note": "fine"}
	}
	return c.answer, nil
}

func (c *confirmer) lastMessage() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.message
}

func (c *confirmer) Elicit(_ context.Context, req mcpgo.ElicitationRequest) (*mcpgo.ElicitationResult, error) {
	action, content := c.respond(req.Params.Message)
	return &mcpgo.ElicitationResult{ElicitationResponse: mcpgo.ElicitationResponse{
		Action: mcpgo.ElicitationResponseAction(action), Content: content,
	}}, nil
}

// stdioConfirm runs `berth serve --stdio` with extra flags under the kind
// of client; a non-nil c makes the client declare elicitation and answer.
func (e *env) stdioConfirm(kind string, c *confirmer, extra ...string) mcpClient {
	e.t.Helper()
	args := append(append([]string{"serve", "--stdio"}, e.args()...), extra...)
	if kind == "mcpgo" {
		tr := transport.NewStdioWithOptions(berthBin, nil, args, transport.WithCommandStderrWriter(e.logWriter("berth-stdio")))
		if err := tr.Start(context.Background()); err != nil {
			e.t.Fatal(err)
		}
		var opts []mcpclient.ClientOption
		if c != nil {
			opts = append(opts, mcpclient.WithElicitationHandler(c))
		}
		return newMcpgoClient(e.t, mcpclient.NewClient(tr, opts...))
	}
	cmd := exec.Command(berthBin, args...)
	cmd.Stderr = e.logWriter("berth-stdio")
	return e.connectSDK(&sdk.CommandTransport{Command: cmd}, func(o *sdk.ClientOptions) {
		if c == nil {
			return
		}
		o.ElicitationHandler = func(_ context.Context, req *sdk.ElicitRequest) (*sdk.ElicitResult, error) {
			action, content := c.respond(req.Params.Message)
			return &sdk.ElicitResult{Action: action, Content: content}, nil
		}
	})
}

// httpConfirm connects the kind of client to b, declaring elicitation
// answered by c.
func (e *env) httpConfirm(kind string, b *berthHTTP, c *confirmer) mcpClient {
	e.t.Helper()
	hc := &http.Client{Transport: bearer{token: b.Token}}
	if kind == "mcpgo" {
		tr, err := transport.NewStreamableHTTP(b.URL, transport.WithHTTPBasicClient(hc))
		if err != nil {
			e.t.Fatal(err)
		}
		return newMcpgoClient(e.t, mcpclient.NewClient(tr, mcpclient.WithElicitationHandler(c)))
	}
	return e.connectSDK(&sdk.StreamableClientTransport{Endpoint: b.URL, HTTPClient: hc}, func(o *sdk.ClientOptions) {
		o.ElicitationHandler = func(_ context.Context, req *sdk.ElicitRequest) (*sdk.ElicitResult, error) {
			action, content := c.respond(req.Params.Message)
			return &sdk.ElicitResult{Action: action, Content: content}, nil
		}
	})
}

func tarOf(t *testing.T, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

// TestConfirmDestructive: with --confirm-destructive=ask, each of the five
// destructive calls asks the client's user what it is about to destroy;
// declined or cancelled, nothing changes and the result says so;
// accepted, it happens. A client without elicitation gets the old
// behaviour under ask and a refusal under require.
func TestConfirmDestructive(t *testing.T) {
	e := newEnv(t)
	for _, kind := range []string{"mcpgo", "gosdk"} {
		t.Run(kind, func(t *testing.T) {
			bot := "confirm-" + kind
			who := &confirmer{}
			c := e.stdioConfirm(kind, who, "--confirm-destructive", "ask")
			defer c.close()
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": bot})
			write := func(path, content string) {
				t.Helper()
				if res := mustCall(t, c, "fs_write", map[string]any{"bot_id": bot, "path": path, "content": content}); res.IsError {
					t.Fatalf("fs_write: %s", res.Text)
				}
			}
			read := func(path string) string {
				t.Helper()
				res := mustCall(t, c, "fs_read", map[string]any{"bot_id": bot, "path": path})
				if res.IsError {
					return "<" + res.Text + ">"
				}
				var out struct {
					Text string `json:"text"`
				}
				res.decode(t, &out)
				return out.Text
			}
			versions := func() int {
				t.Helper()
				var l struct {
					Versions []struct{} `json:"versions"`
				}
				mustCall(t, c, "snapshot_list", map[string]any{"bot_id": bot}).decode(t, &l)
				return len(l.Versions)
			}
			write("/data/dir/a.txt", "old a\n")
			mustCall(t, c, "snapshot_create", map[string]any{"bot_id": bot})
			write("/data/dir/b.txt", "b\n")
			archive := tarOf(t, map[string]string{"dir/a.txt": "new a\n"})

			// Declined (form accepted with confirm=false) or cancelled:
			// nothing changes, the result is no error and says so.
			wantDeclined := func(tool string, args map[string]any, answer, question string) {
				t.Helper()
				who.set(answer)
				before := who.asked.Load()
				res := mustCall(t, c, tool, args)
				var out struct {
					Declined bool `json:"declined"`
				}
				res.decode(t, &out)
				if !out.Declined || !strings.Contains(res.Text, "the user declined; nothing was changed") {
					t.Errorf("%s declined (%s): %+v", tool, answer, res)
				}
				if who.asked.Load() != before+1 || !strings.Contains(who.lastMessage(), question) {
					t.Errorf("%s asked %q, want it to say %q", tool, who.lastMessage(), question)
				}
			}
			wantDeclined("fs_delete", map[string]any{"bot_id": bot, "path": "/data/dir", "recursive": true}, "no", "Delete directory /data/dir")
			wantDeclined("snapshot_rollback", map[string]any{"bot_id": bot, "version": 1}, "cancel", "The live workspace differs from it in")
			wantDeclined("snapshot_delete", map[string]any{"bot_id": bot, "version": 1}, "decline", "Delete snapshot version 1")
			wantDeclined("data_import", map[string]any{"bot_id": bot, "archive_base64": archive}, "no", "replaces 1 existing file(s): /data/dir/a.txt")
			wantDeclined("workspace_delete", map[string]any{"bot_id": bot}, "cancel", "/data included")
			if a, b, n := read("/data/dir/a.txt"), read("/data/dir/b.txt"), versions(); a != "old a\n" || b != "b\n" || n != 1 {
				t.Fatalf("after declining: a=%q b=%q versions=%d", a, b, n)
			}

			// Calls that destroy nothing ask nothing.
			who.set("no")
			asked := who.asked.Load()
			write("/data/single.txt", "x")
			if res := mustCall(t, c, "fs_delete", map[string]any{"bot_id": bot, "path": "/data/single.txt"}); res.IsError || !strings.Contains(res.Text, "deleted") {
				t.Errorf("plain fs_delete: %+v", res)
			}
			mustCall(t, c, "data_import", map[string]any{"bot_id": bot, "archive_base64": tarOf(t, map[string]string{"fresh.txt": "f"})})
			if who.asked.Load() != asked {
				t.Errorf("a delete of one file and an import that replaces nothing asked the user: %q", who.lastMessage())
			}

			// Accepted: it happens.
			who.set("yes")
			if res := mustCall(t, c, "data_import", map[string]any{"bot_id": bot, "archive_base64": archive}); res.IsError || read("/data/dir/a.txt") != "new a\n" {
				t.Errorf("confirmed import: %+v", res)
			}
			if res := mustCall(t, c, "snapshot_rollback", map[string]any{"bot_id": bot, "version": 1}); res.IsError || read("/data/dir/a.txt") != "old a\n" || !strings.HasPrefix(read("/data/dir/b.txt"), "<") {
				t.Errorf("confirmed rollback: %+v", res)
			}
			if res := mustCall(t, c, "fs_delete", map[string]any{"bot_id": bot, "path": "/data/dir", "recursive": true}); res.IsError || !strings.HasPrefix(read("/data/dir/a.txt"), "<") {
				t.Errorf("confirmed recursive delete: %+v", res)
			}
			if res := mustCall(t, c, "snapshot_delete", map[string]any{"bot_id": bot, "version": 2}); res.IsError || versions() != 1 {
				t.Errorf("confirmed snapshot delete: %+v", res)
			}
			if res := mustCall(t, c, "workspace_delete", map[string]any{"bot_id": bot}); res.IsError || !strings.Contains(res.Text, "deleted workspace") {
				t.Errorf("confirmed workspace delete: %+v", res)
			}
		})
	}

	// Over HTTP berth keeps clients that can be asked on 2025-11-25, where
	// the question goes out as elicitation/create.
	b := e.serveHTTP("--confirm-destructive", "ask")
	for _, kind := range []string{"mcpgo", "gosdk"} {
		t.Run("http-"+kind, func(t *testing.T) {
			bot := "http-" + kind
			who := &confirmer{}
			c := e.httpConfirm(kind, b, who)
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": bot})
			mustCall(t, c, "fs_write", map[string]any{"bot_id": bot, "path": "/data/d/x", "content": "x"})
			who.set("no")
			if res := mustCall(t, c, "fs_delete", map[string]any{"bot_id": bot, "path": "/data/d", "recursive": true}); res.IsError || !strings.Contains(res.Text, "nothing was changed") {
				t.Errorf("declined: %+v", res)
			}
			if res := mustCall(t, c, "fs_stat", map[string]any{"bot_id": bot, "path": "/data/d/x"}); res.IsError {
				t.Errorf("declined delete removed the file: %s", res.Text)
			}
			who.set("yes")
			if res := mustCall(t, c, "fs_delete", map[string]any{"bot_id": bot, "path": "/data/d", "recursive": true}); res.IsError || res.Text != "deleted /data/d" {
				t.Errorf("confirmed: %+v", res)
			}
			if who.asked.Load() != 2 || !strings.Contains(who.lastMessage(), "Delete directory /data/d") {
				t.Errorf("asked %d times, last %q", who.asked.Load(), who.lastMessage())
			}
		})
	}
	b.kill()

	// Clients that cannot be asked: the old behaviour under ask, a refusal
	// that changes nothing under require.
	for _, kind := range []string{"mcpgo", "gosdk"} {
		t.Run("unsupported-"+kind, func(t *testing.T) {
			bot := "plain-" + kind
			c := e.stdioConfirm(kind, nil, "--confirm-destructive", "require")
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": bot})
			mustCall(t, c, "fs_write", map[string]any{"bot_id": bot, "path": "/data/keep/x", "content": "x"})
			res := mustCall(t, c, "fs_delete", map[string]any{"bot_id": bot, "path": "/data/keep", "recursive": true})
			wantToolError(t, res, "nothing was changed")
			wantToolError(t, res, "elicitation")
			if res := mustCall(t, c, "fs_stat", map[string]any{"bot_id": bot, "path": "/data/keep/x"}); res.IsError {
				t.Errorf("refused delete removed the file: %s", res.Text)
			}
			c.close()

			c = e.stdioConfirm(kind, nil, "--confirm-destructive", "ask")
			defer c.close()
			if res := mustCall(t, c, "fs_delete", map[string]any{"bot_id": bot, "path": "/data/keep", "recursive": true}); res.IsError || !strings.Contains(res.Text, "deleted") {
				t.Errorf("ask with a client that cannot be asked: %+v", res)
			}
			if res := mustCall(t, c, "workspace_delete", map[string]any{"bot_id": bot}); res.IsError {
				t.Errorf("workspace_delete: %s", res.Text)
			}
		})
	}
}

// TestNetworkDecisionOnStdio: on stdio both clients speak 2026-07-28, where
// berth asks as a multi round-trip request: network_request_decide without
// a decision asks the operator there too.
func TestNetworkDecisionOnStdio(t *testing.T) {
	e := newEnv(t)
	for _, kind := range []string{"mcpgo", "gosdk"} {
		t.Run(kind, func(t *testing.T) {
			bot := "ask-net-" + kind
			who := &confirmer{}
			who.set("approve")
			c := e.stdioConfirm(kind, who)
			defer c.close()
			mustCall(t, c, "workspace_create", map[string]any{"bot_id": bot, "network": "none"}).decode(t, &struct{}{})
			var req struct {
				Request struct {
					ID string `json:"id"`
				} `json:"request"`
			}
			mustCall(t, c, "network_access_request", map[string]any{"bot_id": bot, "domain": "example.com", "reason": "docs"}).decode(t, &req)
			var dec struct {
				Decided bool `json:"decided"`
				Asked   bool `json:"asked"`
				Request struct {
					Status string `json:"status"`
					Note   string `json:"note"`
				} `json:"request"`
			}
			mustCall(t, c, "network_request_decide", map[string]any{"bot_id": bot, "request_id": req.Request.ID}).decode(t, &dec)
			if !dec.Decided || !dec.Asked || dec.Request.Status != "approved" || dec.Request.Note != "fine" || !strings.Contains(who.lastMessage(), "example.com") {
				t.Errorf("decision asked on stdio: %+v (asked %q)", dec, who.lastMessage())
			}
		})
	}
}
