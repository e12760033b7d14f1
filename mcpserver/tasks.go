package mcpserver

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Long work as MCP tasks (protocol 2025-11-25): a task-augmented tools/call
// answers at once with a task, the work goes on without the call, and
// tasks/get, tasks/result, tasks/list and tasks/cancel reach it from any
// session of the same credential, so a client can start a long build,
// disconnect, and fetch the result later.
//
// mcp-go has tasks of its own, but they belong to the session that made
// them, run on the request's context (which a streamable HTTP POST ends when
// it is answered) and announce every task's status to every client. So
// berth answers the task methods itself, in front of mcp-go on /mcp, and
// runs each task's call through mcp-go (middleware, audit and limits
// included) on a context of its own.
//
// Tasks live in berth's memory: they end with it, and after a restart
// their ids answer "unknown task".

// Defaults of TaskOptions.
const (
	DefaultMaxTasksPerToken = 16
	DefaultTaskTTL          = time.Hour
)

// Limits of the tasks.
const (
	// maxTaskResultBytes bounds a finished task's result kept in memory:
	// a bigger one is replaced by an error saying so.
	maxTaskResultBytes = 4 << 20
	// maxTaskPeekBytes is the most of a request body read to tell whether
	// it concerns tasks; task requests are small, bigger bodies (a large
	// fs_write) go to mcp-go untouched.
	maxTaskPeekBytes = 1 << 20
	// cancelWait bounds how long tasks/cancel waits for the work to stop
	// (an exec's process group to be killed) before it answers.
	cancelWait = 10 * time.Second
)

// taskTools are berth's tools that accept task-augmented calls: the long
// ones. The tools of bots' own MCP servers (federated, "server__tool") do
// too.
var taskTools = []string{"exec", "workspace_create", "snapshot_create", "snapshot_rollback", "data_export", "data_import"}

func taskCapable(tool string) bool {
	return slices.Contains(taskTools, tool) || strings.Contains(tool, "__")
}

// TaskOptions bound the tasks.
type TaskOptions struct {
	// MaxPerToken is how many tasks one credential may hold, running or
	// finished; a new one pushes out the oldest finished one, and is
	// refused while all are running.
	MaxPerToken int
	// TTL is how long a finished task's result is kept, and the longest a
	// client may ask for.
	TTL time.Duration
}

// Tasks runs task-augmented calls and answers the task methods. Build it
// with NewTasks, give it to New (WithTasks) and put Handler in front of the
// streamable HTTP handler, after authentication.
type Tasks struct {
	opts TaskOptions
	s    *server.MCPServer
	d    tools.Deps

	mu    sync.Mutex
	tasks map[string]*task // id → task
	held  map[string]int   // credential ID → tasks held
}

type task struct {
	id, owner string
	created   time.Time
	ttl       time.Duration
	cancel    context.CancelFunc
	done      chan struct{} // closed when the work has returned

	// Guarded by Tasks.mu.
	status  mcp.TaskStatus
	message string
	updated time.Time
	result  json.RawMessage // the call's result, when completed
	rpcErr  *rpcError       // the call's error, when failed
}

// NewTasks returns an empty task store bounded by o (zero values: the
// defaults).
func NewTasks(o TaskOptions) *Tasks {
	if o.MaxPerToken <= 0 {
		o.MaxPerToken = DefaultMaxTasksPerToken
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTaskTTL
	}
	return &Tasks{opts: o, tasks: map[string]*task{}, held: map[string]int{}}
}

// WithTasks serves task-augmented calls of the long tools through t. Only
// for the HTTP transport: a stdio client's tasks would end with it anyway.
func WithTasks(t *Tasks) Option {
	return func(o *options) { o.tasks = t }
}

// serverOptions declare the tasks capability and show the task-capable
// tools with execution.taskSupport to the requests Handler serves.
func (t *Tasks) serverOptions() []server.ServerOption {
	return []server.ServerOption{
		server.WithTaskCapabilities(true, true, true),
		server.WithToolFilter(func(ctx context.Context, list []mcp.Tool) []mcp.Tool {
			if ctx.Value(tasksServedKey{}) == nil {
				return list
			}
			list = slices.Clone(list) // the tools themselves stay as registered
			for i, tool := range list {
				if taskCapable(tool.Name) {
					list[i].Execution = &mcp.ToolExecution{TaskSupport: mcp.TaskSupportOptional}
				}
			}
			return list
		}),
	}
}

// attach binds t to the server it runs calls on.
func (t *Tasks) attach(s *server.MCPServer, d tools.Deps) {
	t.s, t.d = s, d
}

// tasksServedKey marks the requests Handler looks at: those of a session
// on the session protocols. The tools listed to them declare task support;
// other requests (stdio, 2026-07-28 without sessions) see none.
type tasksServedKey struct{}

// taskRunKey marks the context a task's call runs on.
type taskRunKey struct{}

// isTaskRun says whether ctx is a task's call, which --max-tasks-per-token
// bounds instead of the per-caller limit of calls in flight.
func isTaskRun(ctx context.Context) bool { return ctx.Value(taskRunKey{}) != nil }

// rpcMessage is the part of a JSON-RPC request Handler needs.
type rpcMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
}

type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Handler answers the task methods and task-augmented calls of the long
// tools on a session's POST to /mcp, and passes every other request on to
// next with its body intact.
func (t *Tasks) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(server.HeaderKeySessionID) == "" {
			next.ServeHTTP(w, r)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), tasksServedKey{}, true))
		if r.Method != http.MethodPost || r.Body == nil {
			next.ServeHTTP(w, r)
			return
		}
		head, err := io.ReadAll(io.LimitReader(r.Body, maxTaskPeekBytes+1))
		if err != nil {
			var tooBig *http.MaxBytesError
			status := http.StatusBadRequest
			if errors.As(err, &tooBig) {
				status = http.StatusRequestEntityTooLarge
			}
			http.Error(w, "reading the request: "+err.Error(), status)
			return
		}
		if len(head) > maxTaskPeekBytes {
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(head), r.Body))
			next.ServeHTTP(w, r)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(head))
		var msg rpcMessage
		if json.Unmarshal(head, &msg) != nil || msg.JSONRPC != mcp.JSONRPC_VERSION || len(msg.ID) == 0 || string(msg.ID) == "null" {
			next.ServeHTTP(w, r)
			return
		}
		owner := principalID(auth.FromContext(r.Context()))
		var result any
		var rerr *rpcError
		switch mcp.MCPMethod(msg.Method) {
		case mcp.MethodTasksGet:
			result, rerr = t.get(owner, head)
		case mcp.MethodTasksList:
			result, rerr = t.list(owner), nil
		case mcp.MethodTasksResult:
			result, rerr = t.result(r.Context(), owner, head)
		case mcp.MethodTasksCancel:
			result, rerr = t.cancelTask(owner, head)
		case mcp.MethodToolsCall:
			var call struct {
				Params struct {
					Name string          `json:"name"`
					Task json.RawMessage `json:"task"`
				} `json:"params"`
			}
			if json.Unmarshal(head, &call) != nil || len(call.Params.Task) == 0 || string(call.Params.Task) == "null" || !taskCapable(call.Params.Name) {
				next.ServeHTTP(w, r)
				return
			}
			result, rerr = t.start(r.Context(), owner, call.Params.Name, call.Params.Task, head)
		default:
			next.ServeHTTP(w, r)
			return
		}
		reply := map[string]any{"jsonrpc": mcp.JSONRPC_VERSION, "id": msg.ID}
		if rerr != nil {
			reply["error"] = rerr
		} else {
			reply["result"] = result
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(reply)
	})
}

func invalidParams(format string, args ...any) *rpcError {
	return &rpcError{Code: mcp.INVALID_PARAMS, Message: fmt.Sprintf(format, args...)}
}

// taskIDParam is the taskId of a tasks/get, tasks/result or tasks/cancel.
func taskIDParam(body []byte) (string, *rpcError) {
	var req struct {
		Params struct {
			TaskID string `json:"taskId"`
		} `json:"params"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Params.TaskID == "" {
		return "", invalidParams("params.taskId is required: the id a task-augmented tools/call answered")
	}
	return req.Params.TaskID, nil
}

// lookup finds owner's task id. Another credential's task is answered
// exactly like one that does not exist. Callers hold t.mu.
func (t *Tasks) lookup(owner, id string) (*task, *rpcError) {
	tk, ok := t.tasks[id]
	if !ok || tk.owner != owner {
		return nil, invalidParams("unknown task %q: tasks are kept for --task-ttl (%s) after they finish, only for the token that started them, and berth forgets them when it restarts", id, t.opts.TTL)
	}
	return tk, nil
}

// view is tk as the protocol shows it. Callers hold t.mu.
func (tk *task) view() mcp.Task {
	ttl := tk.ttl.Milliseconds()
	poll := int64(2000)
	return mcp.Task{
		TaskId: tk.id, Status: tk.status, StatusMessage: tk.message,
		CreatedAt: tk.created.UTC().Format(time.RFC3339Nano), LastUpdatedAt: tk.updated.UTC().Format(time.RFC3339Nano),
		TTL: &ttl, PollInterval: &poll,
	}
}

func (t *Tasks) get(owner string, body []byte) (any, *rpcError) {
	id, rerr := taskIDParam(body)
	if rerr != nil {
		return nil, rerr
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	tk, rerr := t.lookup(owner, id)
	if rerr != nil {
		return nil, rerr
	}
	return mcp.NewGetTaskResult(tk.view()), nil
}

// list is owner's tasks, oldest first; at most MaxPerToken, so one page.
func (t *Tasks) list(owner string) any {
	t.mu.Lock()
	defer t.mu.Unlock()
	var own []*task
	for _, tk := range t.tasks {
		if tk.owner == owner {
			own = append(own, tk)
		}
	}
	slices.SortFunc(own, func(a, b *task) int { return a.created.Compare(b.created) })
	res := mcp.ListTasksResult{Tasks: make([]mcp.Task, 0, len(own))}
	for _, tk := range own {
		res.Tasks = append(res.Tasks, tk.view())
	}
	return res
}

// result waits for the task to end and answers what its call answered,
// marked as related to the task.
func (t *Tasks) result(ctx context.Context, owner string, body []byte) (any, *rpcError) {
	id, rerr := taskIDParam(body)
	if rerr != nil {
		return nil, rerr
	}
	t.mu.Lock()
	tk, rerr := t.lookup(owner, id)
	t.mu.Unlock()
	if rerr != nil {
		return nil, rerr
	}
	select {
	case <-tk.done:
	case <-ctx.Done():
		return nil, &rpcError{Code: mcp.REQUEST_INTERRUPTED, Message: "the request ended before the task did; ask again"}
	}
	t.mu.Lock()
	status, result, failure := tk.status, tk.result, tk.rpcErr
	t.mu.Unlock()
	switch {
	case status == mcp.TaskStatusCancelled:
		return nil, &rpcError{Code: mcp.INVALID_PARAMS, Message: fmt.Sprintf("task %q was cancelled: it has no result", id)}
	case failure != nil:
		return nil, failure
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(result, &fields); err != nil {
		return nil, &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the task's result is not an object"}
	}
	var meta map[string]any
	if raw, ok := fields["_meta"]; ok {
		_ = json.Unmarshal(raw, &meta)
	}
	if meta == nil {
		meta = map[string]any{}
	}
	meta[mcp.RelatedTaskMetaKey] = mcp.RelatedTaskMeta(id)
	fields["_meta"], _ = json.Marshal(meta)
	return fields, nil
}

func (t *Tasks) cancelTask(owner string, body []byte) (any, *rpcError) {
	id, rerr := taskIDParam(body)
	if rerr != nil {
		return nil, rerr
	}
	t.mu.Lock()
	tk, rerr := t.lookup(owner, id)
	if rerr == nil && tk.status.IsTerminal() {
		rerr = invalidParams("task %q has already ended (%s): there is nothing to cancel", id, tk.status)
	}
	if rerr != nil {
		t.mu.Unlock()
		return nil, rerr
	}
	tk.status, tk.message, tk.updated = mcp.TaskStatusCancelled, "cancelled by tasks/cancel", time.Now()
	t.mu.Unlock()
	tk.cancel()
	// Answer once the work has stopped (an exec's processes are killed),
	// so that "cancelled" is true when the client reads it.
	select {
	case <-tk.done:
	case <-time.After(cancelWait):
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return mcp.NewCancelTaskResult(tk.view()), nil
}

// start makes owner a task running the tools/call in body (without its
// task field), and answers the task.
func (t *Tasks) start(ctx context.Context, owner, tool string, taskParams json.RawMessage, body []byte) (any, *rpcError) {
	var tp mcp.TaskParams
	if err := json.Unmarshal(taskParams, &tp); err != nil {
		return nil, invalidParams("params.task must be an object like {\"ttl\": 60000}: %v", err)
	}
	ttl := t.opts.TTL
	if tp.TTL != nil && *tp.TTL > 0 {
		ttl = min(ttl, time.Duration(*tp.TTL)*time.Millisecond)
	}
	call, err := plainCall(body)
	if err != nil {
		return nil, invalidParams("%v", err)
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	id := "task-" + hex.EncodeToString(b)

	// The work outlives the request and its session; it keeps the
	// caller's principal and sees the federated tools the session saw.
	run := &taskSession{id: id}
	if bot := sessionBot(auth.FromContext(ctx)); bot != "" && t.d.MCP != nil {
		run.tools = map[string]server.ServerTool{}
		for _, st := range tools.FederatedTools(t.d, bot) {
			run.tools[st.Tool.Name] = st
		}
	}
	runCtx, cancel := context.WithCancel(context.WithValue(context.WithoutCancel(ctx), taskRunKey{}, true))
	runCtx = t.s.WithContext(runCtx, run)
	now := time.Now()
	tk := &task{
		id: id, owner: owner, created: now, ttl: ttl, cancel: cancel, done: make(chan struct{}),
		status: mcp.TaskStatusWorking, updated: now,
	}
	t.mu.Lock()
	if t.held[owner] >= t.opts.MaxPerToken && !t.evictFinished(owner) {
		t.mu.Unlock()
		cancel()
		return nil, &rpcError{Code: mcp.INVALID_REQUEST, Message: fmt.Sprintf(
			"this token has %d tasks running, the most --max-tasks-per-token allows: wait for one to end or cancel one (tasks/cancel)", t.opts.MaxPerToken)}
	}
	t.tasks[tk.id] = tk
	t.held[owner]++
	view := tk.view()
	t.mu.Unlock()

	log := cmp.Or(t.d.Logger, slog.Default())
	log.Info("task started", "task", tk.id, "tool", tool, "token", owner)
	go func() {
		defer close(tk.done)
		defer cancel()
		status := t.finish(tk, t.s.HandleMessage(runCtx, call))
		log.Info("task ended", "task", tk.id, "tool", tool, "token", owner, "status", status)
	}()
	return mcp.NewCreateTaskResult(view), nil
}

// evictFinished forgets owner's oldest finished task to make room, and
// says whether there was one. Callers hold t.mu.
func (t *Tasks) evictFinished(owner string) bool {
	var oldest *task
	for _, tk := range t.tasks {
		if tk.owner == owner && tk.status.IsTerminal() && (oldest == nil || tk.created.Before(oldest.created)) {
			oldest = tk
		}
	}
	if oldest == nil {
		return false
	}
	t.forget(oldest)
	return true
}

// forget removes tk. Callers hold t.mu.
func (t *Tasks) forget(tk *task) {
	if t.tasks[tk.id] != tk {
		return
	}
	delete(t.tasks, tk.id)
	if t.held[tk.owner]--; t.held[tk.owner] <= 0 {
		delete(t.held, tk.owner)
	}
}

// finish records what the call answered and forgets the task once its TTL
// has passed since it ended. It returns the task's status.
func (t *Tasks) finish(tk *task, resp mcp.JSONRPCMessage) mcp.TaskStatus {
	var answer struct {
		Result json.RawMessage `json:"result"`
		Error  *rpcError       `json:"error"`
	}
	raw, err := json.Marshal(resp)
	if err == nil {
		err = json.Unmarshal(raw, &answer)
	}
	if err == nil && answer.Error == nil && len(answer.Result) == 0 {
		err = errors.New("the call answered nothing")
	}
	if err != nil {
		answer.Error = &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the task's call failed: " + err.Error()}
	}
	if n := len(answer.Result); n > maxTaskResultBytes {
		answer.Result, _ = json.Marshal(mcp.NewToolResultError(fmt.Sprintf(
			"the result (%d bytes) is larger than the %d bytes a task keeps: run the call without a task, or have it write its output to a file and read that in parts", n, maxTaskResultBytes)))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tk.status == mcp.TaskStatusWorking {
		tk.updated = time.Now()
		if answer.Error != nil {
			tk.status, tk.message, tk.rpcErr = mcp.TaskStatusFailed, answer.Error.Message, answer.Error
		} else {
			tk.status, tk.result = mcp.TaskStatusCompleted, answer.Result
		}
	}
	time.AfterFunc(tk.ttl, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.forget(tk)
	})
	return tk.status
}

// plainCall is the tools/call in body without its task field and progress
// token: the task's call runs as an ordinary one, and the session that
// asked for progress may be gone.
func plainCall(body []byte) (json.RawMessage, error) {
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(body, &msg); err != nil {
		return nil, err
	}
	var params map[string]json.RawMessage
	if err := json.Unmarshal(msg["params"], &params); err != nil {
		return nil, fmt.Errorf("params must be an object: %v", err)
	}
	delete(params, "task")
	if raw, ok := params["_meta"]; ok {
		var meta map[string]json.RawMessage
		if json.Unmarshal(raw, &meta) == nil {
			delete(meta, "progressToken")
			params["_meta"], _ = json.Marshal(meta)
		}
	}
	var err error
	if msg["params"], err = json.Marshal(params); err != nil {
		return nil, err
	}
	return json.Marshal(msg)
}

// taskSession is the session a task's call runs in: it has the federated
// tools of the session that started it, and takes no notifications (there
// may be no client to send them to).
type taskSession struct {
	id    string
	tools map[string]server.ServerTool
}

func (s *taskSession) Initialize()       {}
func (s *taskSession) Initialized() bool { return true }
func (s *taskSession) SessionID() string { return s.id }
func (s *taskSession) NotificationChannel() chan<- mcp.JSONRPCNotification {
	return nil // a send on it never proceeds: mcp-go drops the notification
}
func (s *taskSession) GetSessionTools() map[string]server.ServerTool { return s.tools }
func (s *taskSession) SetSessionTools(map[string]server.ServerTool)  {}
