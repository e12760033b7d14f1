package mcpserver

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// taskRig is a Tasks in front of an mcp-go server whose "exec" tool waits
// for its release channel (or its context) and answers its argument.
type taskRig struct {
	h        http.Handler
	release  chan struct{}
	stopped  chan struct{} // a cancelled call reports here
	passedOn int
	lastBody int // bytes of the last request passed on
}

func newTaskRig(t *testing.T, max int, ttl time.Duration) *taskRig {
	t.Helper()
	rig := &taskRig{release: make(chan struct{}), stopped: make(chan struct{}, 8)}
	tasks := NewTasks(TaskOptions{MaxPerToken: max, TTL: ttl})
	s := server.NewMCPServer("t", "1", append(tasks.serverOptions(), server.WithToolCapabilities(true))...)
	s.AddTool(mcp.NewTool("exec"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		select {
		case <-rig.release:
			return mcp.NewToolResultText("ran " + req.GetString("say", "")), nil
		case <-ctx.Done():
			rig.stopped <- struct{}{}
			return nil, ctx.Err()
		}
	})
	s.AddTool(mcp.NewTool("srv__big"), func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText(strings.Repeat("x", maxTaskResultBytes)), nil
	})
	s.AddTool(mcp.NewTool("fs_read"), func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("read"), nil
	})
	tasks.attach(s, tools.Deps{})
	rig.h = tasks.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rig.passedOn++
		body, _ := io.ReadAll(r.Body)
		rig.lastBody = len(body)
		w.WriteHeader(http.StatusTeapot)
	}))
	return rig
}

// post sends a JSON-RPC request as token's session and decodes the answer
// (nil when the request was passed on).
func (rig *taskRig) post(t *testing.T, token, method string, params any) (result json.RawMessage, rerr *rpcError) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(string(body)))
	r.Header.Set(server.HeaderKeySessionID, "session-of-"+token)
	p := &auth.Principal{Name: token, ID: "token:" + token}
	r = r.WithContext(auth.WithPrincipal(r.Context(), p))
	w := httptest.NewRecorder()
	rig.h.ServeHTTP(w, r)
	if w.Code == http.StatusTeapot {
		return nil, nil
	}
	var reply struct {
		ID     json.RawMessage `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  *rpcError       `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &reply); err != nil || string(reply.ID) != "7" {
		t.Fatalf("%s: bad reply %q: %v", method, w.Body.String(), err)
	}
	return reply.Result, reply.Error
}

func (rig *taskRig) start(t *testing.T, token, say string) (string, *rpcError) {
	t.Helper()
	res, rerr := rig.post(t, token, "tools/call", map[string]any{"name": "exec", "arguments": map[string]any{"say": say}, "task": map[string]any{}})
	if rerr != nil {
		return "", rerr
	}
	var created mcp.CreateTaskResult
	if err := json.Unmarshal(res, &created); err != nil || created.Task.TaskId == "" || created.Task.Status != mcp.TaskStatusWorking {
		t.Fatalf("want a working task, got %s (%v)", res, err)
	}
	return created.Task.TaskId, nil
}

func TestTasksBelongToTheirToken(t *testing.T) {
	rig := newTaskRig(t, 4, time.Minute)
	id, rerr := rig.start(t, "a", "hello")
	if rerr != nil {
		t.Fatal(rerr.Message)
	}
	// Another token: the task does not exist, whatever it asks.
	_, missing := rig.post(t, "b", "tasks/get", map[string]any{"taskId": "task-nonexistent"})
	for _, m := range []string{"tasks/get", "tasks/result", "tasks/cancel"} {
		_, rerr := rig.post(t, "b", m, map[string]any{"taskId": id})
		if rerr == nil || rerr.Code != missing.Code || rerr.Message != strings.Replace(missing.Message, "task-nonexistent", id, 1) {
			t.Fatalf("%s of another token's task: %+v, want the answer for a missing task %+v", m, rerr, missing)
		}
	}
	res, _ := rig.post(t, "b", "tasks/list", map[string]any{})
	if !strings.Contains(string(res), `"tasks":[]`) {
		t.Fatalf("token b lists %s", res)
	}
	res, _ = rig.post(t, "a", "tasks/list", map[string]any{})
	if !strings.Contains(string(res), id) {
		t.Fatalf("token a does not list its task: %s", res)
	}
	close(rig.release)
	res, rerr = rig.post(t, "a", "tasks/result", map[string]any{"taskId": id})
	if rerr != nil || !strings.Contains(string(res), "ran hello") || !strings.Contains(string(res), mcp.RelatedTaskMetaKey) {
		t.Fatalf("result: %s %+v", res, rerr)
	}
	res, _ = rig.post(t, "a", "tasks/get", map[string]any{"taskId": id})
	if !strings.Contains(string(res), `"status":"completed"`) {
		t.Fatalf("get after the result: %s", res)
	}
}

func TestTasksCapAndCancel(t *testing.T) {
	rig := newTaskRig(t, 2, time.Minute)
	first, _ := rig.start(t, "a", "1")
	if _, rerr := rig.start(t, "a", "2"); rerr != nil {
		t.Fatal(rerr.Message)
	}
	_, rerr := rig.start(t, "a", "3")
	if rerr == nil || !strings.Contains(rerr.Message, "2 tasks running") || !strings.Contains(rerr.Message, "--max-tasks-per-token") {
		t.Fatalf("a third task: %+v, want a refusal naming the cap", rerr)
	}
	if _, rerr := rig.start(t, "b", "other token"); rerr != nil {
		t.Fatalf("the cap is per token: %s", rerr.Message)
	}
	res, rerr := rig.post(t, "a", "tasks/cancel", map[string]any{"taskId": first})
	if rerr != nil || !strings.Contains(string(res), `"status":"cancelled"`) {
		t.Fatalf("cancel: %s %+v", res, rerr)
	}
	select {
	case <-rig.stopped:
	default:
		t.Fatal("tasks/cancel answered before the call stopped")
	}
	if _, rerr := rig.post(t, "a", "tasks/cancel", map[string]any{"taskId": first}); rerr == nil || !strings.Contains(rerr.Message, "already ended") {
		t.Fatalf("cancelling twice: %+v", rerr)
	}
	if _, rerr := rig.post(t, "a", "tasks/result", map[string]any{"taskId": first}); rerr == nil || !strings.Contains(rerr.Message, "cancelled") {
		t.Fatalf("result of a cancelled task: %+v", rerr)
	}
	// The cancelled task makes room: it is forgotten for the new one.
	if _, rerr := rig.start(t, "a", "4"); rerr != nil {
		t.Fatalf("after a cancel: %s", rerr.Message)
	}
	if _, rerr := rig.post(t, "a", "tasks/get", map[string]any{"taskId": first}); rerr == nil {
		t.Fatal("the oldest finished task should have made room")
	}
}

func TestTasksPassOnWhatIsNotTheirs(t *testing.T) {
	rig := newTaskRig(t, 2, time.Minute)
	for i, params := range []any{
		map[string]any{"name": "exec", "arguments": map[string]any{}},                        // no task
		map[string]any{"name": "fs_read", "arguments": map[string]any{}, "task": struct{}{}}, // not a long tool
	} {
		if res, rerr := rig.post(t, "a", "tools/call", params); res != nil || rerr != nil {
			t.Fatalf("call %d was answered by the tasks: %s %+v", i, res, rerr)
		}
	}
	// A body too big to be about tasks passes on whole, unparsed.
	big := map[string]any{"name": "exec", "arguments": map[string]any{"say": strings.Repeat("x", 2*maxTaskPeekBytes)}, "task": struct{}{}}
	if res, rerr := rig.post(t, "a", "tools/call", big); res != nil || rerr != nil {
		t.Fatalf("a big call was answered by the tasks: %.200s %+v", res, rerr)
	}
	if rig.passedOn != 3 || rig.lastBody < 2*maxTaskPeekBytes {
		t.Fatalf("passed on %d requests (the last %d bytes), want 3 and the whole big one", rig.passedOn, rig.lastBody)
	}
}

func TestTaskToolFilterAndPlainCall(t *testing.T) {
	filter := NewTasks(TaskOptions{}).serverOptions()
	s := server.NewMCPServer("t", "1", append(filter, server.WithToolCapabilities(true))...)
	for _, name := range []string{"exec", "fs_read", "srv__build"} {
		s.AddTool(mcp.NewTool(name), func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) { return nil, nil })
	}
	list := func(ctx context.Context) string {
		resp := s.HandleMessage(ctx, json.RawMessage(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		b, _ := json.Marshal(resp)
		return string(b)
	}
	if got := list(context.Background()); strings.Contains(got, "taskSupport") {
		t.Fatalf("a request outside a session sees task support: %s", got)
	}
	got := list(context.WithValue(context.Background(), tasksServedKey{}, true))
	if n := strings.Count(got, `"taskSupport":"optional"`); n != 2 {
		t.Fatalf("want exec and the federated tool task-capable, got %d in %s", n, got)
	}

	call, err := plainCall([]byte(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"exec","task":{"ttl":5},"_meta":{"progressToken":"p","x":1},"arguments":{"a":1}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if s := string(call); strings.Contains(s, "task") || strings.Contains(s, "progressToken") || !strings.Contains(s, `"x":1`) || !strings.Contains(s, `"arguments":{"a":1}`) {
		t.Fatalf("plain call: %s", s)
	}
	if _, err := plainCall([]byte(`{"params":[1]}`)); err == nil {
		t.Fatal("params that are no object must be refused")
	}
}

func TestTaskResultCapAndTTL(t *testing.T) {
	rig := newTaskRig(t, 4, 50*time.Millisecond)
	res, rerr := rig.post(t, "a", "tools/call", map[string]any{"name": "srv__big", "task": map[string]any{"ttl": 60000}})
	var created mcp.CreateTaskResult
	if rerr != nil || json.Unmarshal(res, &created) != nil || *created.Task.TTL != 50 {
		t.Fatalf("a task asking a longer ttl than --task-ttl: %s %+v", res, rerr)
	}
	res, rerr = rig.post(t, "a", "tasks/result", map[string]any{"taskId": created.Task.TaskId})
	if rerr != nil || len(res) > 4096 || !strings.Contains(string(res), "larger than") || !strings.Contains(string(res), `"isError":true`) {
		t.Fatalf("an oversized result: %.300s %+v", res, rerr)
	}
	// Forgotten once its TTL has passed since it ended.
	deadline := time.Now().Add(time.Minute)
	for {
		if _, rerr := rig.post(t, "a", "tasks/get", map[string]any{"taskId": created.Task.TaskId}); rerr != nil {
			if !strings.Contains(rerr.Message, "unknown task") {
				t.Fatalf("an expired task: %+v", rerr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the task outlived its TTL")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
