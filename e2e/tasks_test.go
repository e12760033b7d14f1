package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Tasks live on the session protocols; 2025-11-25 is the one that has them.
const tasksProtocol = "2025-11-25"

const (
	taskTokenA = "tasks-a-0123456789abcdef" // every scope, bot tka only
	taskTokenB = "tasks-b-0123456789abcdef" // every scope, bot tkb only
)

// TestTasks drives long tool calls as tasks through the built binary:
// a task outlives the session that started it and is fetched from another
// session (mcp-go and go-sdk clients) of the same token; another token can
// neither see, read nor cancel it; tasks/cancel kills the command's whole
// process group; the cap per token; a restart forgets the tasks.
func TestTasks(t *testing.T) {
	e := newMCPEnv(t)
	tokens := fmt.Sprintf("tokens:\n  - {name: tk-a, token: %s, bots: [tka], scopes: [read, write, exec, manage]}\n"+
		"  - {name: tk-b, token: %s, bots: [tkb], scopes: [read, write, exec, manage]}\n", taskTokenA, taskTokenB)
	tokensFile := filepath.Join(e.stateDir, "tokens.yaml")
	if err := os.WriteFile(tokensFile, []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	// One call in flight per token: running tasks must not count (the cap
	// step runs two at once).
	e.extra = append(e.extra, "--tokens-file", tokensFile, "--max-tasks-per-token", "2", "--max-calls-per-token", "1")
	b := e.serveHTTP()

	a1 := taskMcpgo(t, b.URL, taskTokenA)
	tools, err := a1.ListTools(ctxT(t), mcpgo.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	capable := map[string]bool{}
	for _, tool := range tools.Tools {
		capable[tool.Name] = tool.Execution != nil && tool.Execution.TaskSupport == mcpgo.TaskSupportOptional
	}
	for _, name := range []string{"exec", "workspace_create", "snapshot_create", "snapshot_rollback", "data_export", "data_import", "fs_read"} {
		if want := name != "fs_read"; capable[name] != want {
			t.Fatalf("tool %s: task support %v, want %v", name, capable[name], want)
		}
	}

	// workspace_create as a task, its result fetched in the same session.
	created := startTask(t, a1, "workspace_create", map[string]any{"bot_id": "tka"})
	res, err := a1.TaskResult(ctxT(t), mcpgo.TaskResultRequest{Params: mcpgo.TaskResultParams{TaskId: created}})
	if err != nil || res.IsError {
		t.Fatalf("workspace_create task: %+v %v", res, err)
	}

	// A tool of the bot's own MCP server (its session is limited to tka,
	// so it sees them) as a task.
	if res, err := a1.CallTool(ctxT(t), mcpgo.CallToolRequest{Params: mcpgo.CallToolParams{Name: "mcp_server_add",
		Arguments: map[string]any{"bot_id": "tka", "name": "fx", "command": testenv.MCPFixturePath}}}); err != nil || res.IsError {
		t.Fatalf("mcp_server_add: %+v %v", res, err)
	}
	waitFor(t, "the federated tools", func() bool {
		tools, err := a1.ListTools(ctxT(t), mcpgo.ListToolsRequest{})
		return err == nil && slices.ContainsFunc(tools.Tools, func(tool mcpgo.Tool) bool {
			return tool.Name == "fx__echo" && tool.Execution != nil && tool.Execution.TaskSupport == mcpgo.TaskSupportOptional
		})
	})
	echo := startTask(t, a1, "fx__echo", map[string]any{"text": "federated via a task"})
	res, err = a1.TaskResult(ctxT(t), mcpgo.TaskResultRequest{Params: mcpgo.TaskResultParams{TaskId: echo}})
	if err != nil || res.IsError || !strings.Contains(fmt.Sprint(res.Content), "federated via a task") {
		t.Fatalf("federated task: %+v %v", res, err)
	}

	// A command that waits for the test, started in a session that then
	// ends.
	long := startTask(t, a1, "exec", map[string]any{"bot_id": "tka",
		"command": "echo $$ > /tmp/long.pid; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo answer-$((6*7))"})
	waitFile(t, e, "tka", "/tmp/long.pid")
	a1Session := a1.GetSessionId()
	a1.Close()
	if status := mcpRaw(t, http.MethodPost, b.URL, taskTokenA, a1Session, `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil); status != http.StatusNotFound {
		t.Fatalf("the closed session answers %d, want 404", status)
	}

	// Token B, in its own session: A's task does not exist for it.
	bSession := taskSDK(t, e, b, taskTokenB)
	if _, err := bSession.ListTools(ctxT(t), nil); err != nil {
		t.Fatalf("the go-sdk lists tools that declare task support: %v", err)
	}
	_, missing := rawTaskCall(t, b.URL, taskTokenB, bSession.ID(), "tasks/get", map[string]any{"taskId": "task-0000"})
	if missing == nil || !strings.Contains(missing.Message, "unknown task") {
		t.Fatalf("tasks/get of a missing task: %+v", missing)
	}
	for _, method := range []string{"tasks/get", "tasks/result", "tasks/cancel"} {
		_, rerr := rawTaskCall(t, b.URL, taskTokenB, bSession.ID(), method, map[string]any{"taskId": long})
		if rerr == nil || rerr.Code != missing.Code || rerr.Message != strings.Replace(missing.Message, "task-0000", long, 1) {
			t.Fatalf("%s of token A's task by token B: %+v, want the answer for a missing task", method, rerr)
		}
	}
	if list, rerr := rawTaskCall(t, b.URL, taskTokenB, bSession.ID(), "tasks/list", map[string]any{}); rerr != nil || strings.Contains(string(list), "task-") {
		t.Fatalf("token B lists %s %+v", list, rerr)
	}

	// Token A, from a go-sdk session: the task (not cancelled by B) ends
	// once the command may finish, and its result is there.
	aSDK := taskSDK(t, e, b, taskTokenA)
	e.execIn(t, "tka", "touch", "/tmp/go")
	out, rerr := rawTaskCall(t, b.URL, taskTokenA, aSDK.ID(), "tasks/result", map[string]any{"taskId": long})
	if rerr != nil || !strings.Contains(string(out), "answer-42") || !strings.Contains(string(out), mcpgo.RelatedTaskMetaKey) {
		t.Fatalf("tasks/result from another session: %s %+v", out, rerr)
	}
	// And from an mcp-go session.
	a2 := taskMcpgo(t, b.URL, taskTokenA)
	got, err := a2.GetTask(ctxT(t), mcpgo.GetTaskRequest{Params: mcpgo.GetTaskParams{TaskId: long}})
	if err != nil || got.Status != mcpgo.TaskStatusCompleted {
		t.Fatalf("tasks/get: %+v %v", got, err)
	}
	listed, err := a2.ListTasks(ctxT(t), mcpgo.ListTasksRequest{})
	if err != nil || !strings.Contains(fmt.Sprint(listed.Tasks), long) {
		t.Fatalf("tasks/list: %+v %v", listed, err)
	}

	// tasks/cancel kills the command's whole process group.
	doomed := startTask(t, a2, "exec", map[string]any{"bot_id": "tka", "command": "sleep 300 & echo $! > /tmp/child; sleep 300"})
	waitFile(t, e, "tka", "/tmp/child")
	cancelled, err := a2.CancelTask(ctxT(t), mcpgo.CancelTaskRequest{Params: mcpgo.CancelTaskParams{TaskId: doomed}})
	if err != nil || cancelled.Status != mcpgo.TaskStatusCancelled {
		t.Fatalf("tasks/cancel: %+v %v", cancelled, err)
	}
	e.waitGone(t, "tka", "/tmp/child")

	// The cap: two tasks running, a third is refused and says why.
	wait := map[string]any{"bot_id": "tka", "command": "while [ ! -e /tmp/go2 ]; do sleep 0.05; done; echo ok"}
	first, second := startTask(t, a2, "exec", wait), startTask(t, a2, "exec", wait)
	if _, rerr := sendTask(t, a2, "exec", wait); rerr == nil || !strings.Contains(rerr.Message, "2 tasks running") || !strings.Contains(rerr.Message, "--max-tasks-per-token") {
		t.Fatalf("a third task: %+v, want a refusal naming the cap", rerr)
	}
	e.execIn(t, "tka", "touch", "/tmp/go2")
	for _, id := range []string{first, second} {
		if res, err := a2.TaskResult(ctxT(t), mcpgo.TaskResultRequest{Params: mcpgo.TaskResultParams{TaskId: id}}); err != nil || res.IsError {
			t.Fatalf("capped task %s: %+v %v", id, res, err)
		}
	}

	// A snapshot as a task.
	snap := startTask(t, a2, "snapshot_create", map[string]any{"bot_id": "tka"})
	if res, err := a2.TaskResult(ctxT(t), mcpgo.TaskResultRequest{Params: mcpgo.TaskResultParams{TaskId: snap}}); err != nil || res.IsError {
		t.Fatalf("snapshot_create task: %+v %v", res, err)
	}

	// A restart forgets the tasks, and says so.
	b.kill()
	b = e.serveHTTP()
	a3 := taskMcpgo(t, b.URL, taskTokenA)
	if _, err := a3.GetTask(ctxT(t), mcpgo.GetTaskRequest{Params: mcpgo.GetTaskParams{TaskId: long}}); err == nil || !strings.Contains(err.Error(), "berth forgets them when it restarts") {
		t.Fatalf("tasks/get after a restart: %v", err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// taskMcpgo is an mcp-go client on the 2025-11-25 protocol.
func taskMcpgo(t *testing.T, url, token string) *mcpclient.Client {
	t.Helper()
	// The token goes in through the HTTP client: mcp-go v1.2.1 leaves
	// WithHTTPHeaders off the DELETE that ends a session.
	tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPBasicClient(&http.Client{Transport: bearer{token: token}}))
	if err != nil {
		t.Fatal(err)
	}
	c := mcpclient.NewClient(tr, mcpclient.WithProtocolVersion(tasksProtocol))
	if err := c.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = tasksProtocol
	init.Params.ClientInfo = mcpgo.Implementation{Name: "berth-e2e-tasks", Version: "1"}
	if _, err := c.Initialize(ctxT(t), init); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// taskSDK is a go-sdk session on the 2025-11-25 protocol. The go-sdk has
// no task methods: the test sends them in its session over plain HTTP.
func taskSDK(t *testing.T, e *env, b *berthHTTP, token string) *sdk.ClientSession {
	t.Helper()
	c := sdk.NewClient(&sdk.Implementation{Name: "berth-e2e-tasks-gosdk", Version: "1"}, nil)
	cs, err := c.Connect(ctxT(t), &sdk.StreamableClientTransport{Endpoint: b.URL, HTTPClient: &http.Client{Transport: bearer{token: token}}},
		&sdk.ClientSessionOptions{ProtocolVersion: tasksProtocol})
	if err != nil {
		t.Fatal(err)
	}
	if cs.ID() == "" {
		t.Fatal("the go-sdk session has no id")
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

var taskCalls atomic.Int64

type taskRPCError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// sendTask makes a task-augmented tools/call through the mcp-go client's
// transport (the client has no helper for it).
func sendTask(t *testing.T, c *mcpclient.Client, tool string, args any) (string, *taskRPCError) {
	t.Helper()
	resp, err := c.GetTransport().SendRequest(ctxT(t), transport.JSONRPCRequest{
		JSONRPC: "2.0", ID: mcpgo.NewRequestId(fmt.Sprintf("task-%s-%d", tool, taskCalls.Add(1))), Method: "tools/call",
		Params: map[string]any{"name": tool, "arguments": args, "task": map[string]any{"ttl": 600000}},
	})
	if err != nil {
		t.Fatalf("task-augmented %s: %v", tool, err)
	}
	if resp.Error != nil {
		return "", &taskRPCError{Code: resp.Error.Code, Message: resp.Error.Message}
	}
	var created mcpgo.CreateTaskResult
	if err := json.Unmarshal(resp.Result, &created); err != nil || created.Task.TaskId == "" || created.Task.Status != mcpgo.TaskStatusWorking {
		t.Fatalf("task-augmented %s answered %s (%v), want a working task", tool, resp.Result, err)
	}
	return created.Task.TaskId, nil
}

func startTask(t *testing.T, c *mcpclient.Client, tool string, args any) string {
	t.Helper()
	id, rerr := sendTask(t, c, tool, args)
	if rerr != nil {
		t.Fatalf("task-augmented %s: %+v", tool, rerr)
	}
	return id
}

// rawTaskCall sends a JSON-RPC request in session over plain HTTP.
func rawTaskCall(t *testing.T, url, token, session, method string, params any) (json.RawMessage, *taskRPCError) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", tasksProtocol)
	req.Header.Set("Mcp-Session-Id", session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	var reply struct {
		Result json.RawMessage `json:"result"`
		Error  *taskRPCError   `json:"error"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &reply) != nil {
		t.Fatalf("%s: HTTP %d %q", method, resp.StatusCode, data)
	}
	return reply.Result, reply.Error
}

// waitFile waits until path exists in bot's workspace: the command got
// that far.
func waitFile(t *testing.T, e *env, bot, path string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := e.tryExec(t, bot, "test", "-s", path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared in %s", path, bot)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
