// Command mcp-fixture is a test fixture for berth's stdio MCP proxy: a small
// MCP server, built on mcp-go, that speaks JSON-RPC over stdin and stdout and
// has a tool for each behaviour the proxy must carry through: plain results,
// progress, cancellation, server-to-client requests (elicitation, sampling),
// logging, tool list changes, a crash, and reads of the workspace's files.
//
// It deliberately misbehaves in one small way: it prints a non-JSON banner on
// stdout before serving, as real servers sometimes do, so the proxy must skip
// lines that are not JSON-RPC.
//
// Environment:
//
//	FIXTURE_EXTRA_TOOLS=N  also register N trivial tools extra_1 .. extra_N
//	FIXTURE_LONG_TOOL=1    also register a tool with a 60-character name
//	FIXTURE_TAG=x          reported by the pid tool, to tell instances apart
//	FIXTURE_CANCEL_FILE=p  where cancellations are recorded
//	                       (default /tmp/mcp-fixture-cancelled)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// longToolName is exactly 60 characters, to test how the proxy shortens
// names that would exceed a client's limit once prefixed.
const longToolName = "a_tool_with_a_deliberately_long_name_to_test_shortening_xxxx"

const defaultCancelFile = "/tmp/mcp-fixture-cancelled"

// readLimit caps what readfile returns.
const readLimit = 64 << 10

// flushTimeout bounds the wait for a notification to reach stdout; it only
// matters if mcp-go dropped the notification, which should not happen.
const flushTimeout = 2 * time.Second

var logger = log.New(os.Stderr, "mcp-fixture: ", 0)

func main() {
	name := flag.String("name", "", "suffix for the server name (mcp-fixture-NAME)")
	flag.Parse()

	// The banner comes first, before any JSON-RPC, to test that the proxy
	// skips non-JSON lines on the server's stdout.
	fmt.Fprintln(os.Stdout, "mcp-fixture starting (not JSON)")
	logger.Printf("started pid=%d", os.Getpid())

	serverName := "mcp-fixture"
	if *name != "" {
		serverName += "-" + *name
	}
	f := &fixture{out: newOutput(os.Stdout)}
	f.srv = server.NewMCPServer(serverName, "1.0.0",
		server.WithToolCapabilities(true),
		server.WithLogging(),
		// Clients speaking protocol 2026-07-28 or later make mcp-go refuse
		// server-initiated requests by default. The fixture exists to send
		// them (ask, sample), so it sends them whatever the client speaks.
		//lint:ignore SA1019 the fixture tests exactly these requests
		server.WithLegacyServerInitiatedRequests(),
	)
	f.addTools()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Listen rather than ServeStdio: every write, including those mcp-go's
	// session makes for server-to-client requests, goes through f.out.
	stdio := server.NewStdioServer(f.srv)
	// mcp-go runs 5 tool calls at a time by default; tests that hold several
	// calls open (progress, ask) should not find the sixth queued.
	server.WithWorkerPoolSize(32)(stdio)
	err := stdio.Listen(ctx, os.Stdin, f.out)
	if err != nil && !errors.Is(err, context.Canceled) {
		logger.Printf("serve: %v", err)
		os.Exit(1)
	}
}

type fixture struct {
	srv *server.MCPServer
	out *output
	// notifyMu makes "send a notification, wait for it to be written" one
	// step, so that concurrent calls cannot satisfy each other's waits.
	notifyMu sync.Mutex
}

func (f *fixture) addTools() {
	f.srv.AddTool(mcp.NewTool("echo",
		mcp.WithDescription("Returns its text, as text content and as structured content {\"text\": text}."),
		mcp.WithString("text", mcp.Required(), mcp.Description("The text to return.")),
		mcp.WithRawOutputSchema(json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`)),
	), f.echo)

	f.srv.AddTool(mcp.NewTool("progress",
		mcp.WithDescription("Sends a progress notification per step to the request's progress token, "+
			"sleeping interval_ms between steps, then returns \"done N steps\". "+
			"Records a cancellation in the cancel file and stops."),
		mcp.WithInteger("steps", mcp.DefaultNumber(5), mcp.Min(0), mcp.Description("How many steps to report.")),
		mcp.WithInteger("interval_ms", mcp.DefaultNumber(50), mcp.Min(0), mcp.Description("Milliseconds between steps.")),
	), f.progress)

	f.srv.AddTool(mcp.NewTool("ask",
		mcp.WithDescription("Asks the client the question through elicitation/create and returns "+
			"\"answer: ACTION CONTENT-JSON\"."),
		mcp.WithString("question", mcp.Required(), mcp.Description("The question put to the user.")),
	), f.ask)

	f.srv.AddTool(mcp.NewTool("sample",
		mcp.WithDescription("Sends the prompt to the client through sampling/createMessage and returns "+
			"\"answer: TEXT\"."),
		mcp.WithString("prompt", mcp.Required(), mcp.Description("The user message to sample a reply to.")),
	), f.sample)

	f.srv.AddTool(mcp.NewTool("crash",
		mcp.WithDescription("Exits the server at once with the given code, without answering."),
		mcp.WithInteger("code", mcp.DefaultNumber(3), mcp.Min(0), mcp.Max(255), mcp.Description("The exit code.")),
	), f.crash)

	f.srv.AddTool(mcp.NewTool("readfile",
		mcp.WithDescription("Returns the content of a file (at most 64 KiB) as text."),
		mcp.WithString("path", mcp.Required(), mcp.Description("Absolute path of the file to read.")),
		mcp.WithReadOnlyHintAnnotation(true),
	), f.readfile)

	f.srv.AddTool(mcp.NewTool("pid",
		mcp.WithDescription("Returns \"pid=PID\", plus \" tag=TAG\" when FIXTURE_TAG is set."),
		mcp.WithReadOnlyHintAnnotation(true),
	), f.pid)

	f.srv.AddTool(mcp.NewTool("add_tool",
		mcp.WithDescription("Adds an echo-like tool at runtime, which makes the server send notifications/tools/list_changed."),
		mcp.WithString("name", mcp.Required(), mcp.MinLength(1), mcp.Description("Name of the tool to add.")),
	), f.addTool)

	f.srv.AddTool(mcp.NewTool("log",
		mcp.WithDescription("Sends the message to the client as a notifications/message at level info, then returns \"logged\"."),
		mcp.WithString("message", mcp.Required(), mcp.Description("The message to log.")),
	), f.log)

	if n, _ := strconv.Atoi(os.Getenv("FIXTURE_EXTRA_TOOLS")); n > 0 {
		tools := make([]server.ServerTool, 0, n)
		for i := 1; i <= n; i++ {
			tools = append(tools, constantTool(fmt.Sprintf("extra_%d", i)))
		}
		f.srv.AddTools(tools...)
	}
	if os.Getenv("FIXTURE_LONG_TOOL") == "1" {
		f.srv.AddTools(constantTool(longToolName))
	}
}

// constantTool returns a tool that takes nothing and returns its own name.
func constantTool(name string) server.ServerTool {
	return server.ServerTool{
		Tool: mcp.NewTool(name, mcp.WithDescription("Returns its own name.")),
		Handler: func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText(name), nil
		},
	}
}

func (f *fixture) echo(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	text, err := req.RequireString("text")
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	return mcp.NewToolResultStructured(map[string]any{"text": text}, text), nil
}

func (f *fixture) progress(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	steps := req.GetInt("steps", 5)
	interval := time.Duration(req.GetInt("interval_ms", 50)) * time.Millisecond
	var token mcp.ProgressToken
	if req.Params.Meta != nil {
		token = req.Params.Meta.ProgressToken
	}
	for i := 1; i <= steps; i++ {
		// mcp-go cancels ctx on notifications/cancelled for this request
		// (and when stdin closes).
		if ctx.Err() != nil {
			return f.cancelled(i - 1), nil
		}
		if token != nil {
			err := f.notify(ctx, "notifications/progress", map[string]any{
				"progressToken": token,
				"progress":      i,
				"total":         steps,
				"message":       fmt.Sprintf("step %d", i),
			})
			if err != nil {
				logger.Printf("progress notification: %v", err)
			}
		}
		select {
		case <-ctx.Done():
			return f.cancelled(i), nil
		case <-time.After(interval):
		}
	}
	return mcp.NewToolResultText(fmt.Sprintf("done %d steps", steps)), nil
}

// cancelled records a cancelled progress call where a test can see it,
// since the client never reads the result: mcp-go still writes one, though.
func (f *fixture) cancelled(done int) *mcp.CallToolResult {
	logger.Printf("cancelled after %d steps", done)
	path := os.Getenv("FIXTURE_CANCEL_FILE")
	if path == "" {
		path = defaultCancelFile
	}
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o666)
	if err == nil {
		_, err = fmt.Fprintf(file, "cancelled %d\n", os.Getpid())
		if cerr := file.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		logger.Printf("record cancellation: %v", err)
	}
	return mcp.NewToolResultError(fmt.Sprintf("cancelled after %d steps", done))
}

func (f *fixture) ask(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	question, err := req.RequireString("question")
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	res, err := f.srv.RequestElicitation(ctx, mcp.ElicitationRequest{
		Params: mcp.ElicitationParams{
			Message: question,
			RequestedSchema: map[string]any{
				"type": "object",
				"properties": map[string]any{
					"answer": map[string]any{"type": "string", "description": "Your answer."},
				},
				"required": []string{"answer"},
			},
		},
	})
	if err != nil {
		return mcp.NewToolResultError("elicitation: " + err.Error()), nil
	}
	if res.Content == nil {
		return mcp.NewToolResultText(fmt.Sprintf("answer: %s", res.Action)), nil
	}
	content, err := json.Marshal(res.Content)
	if err != nil {
		return mcp.NewToolResultError("elicitation content: " + err.Error()), nil
	}
	return mcp.NewToolResultText(fmt.Sprintf("answer: %s %s", res.Action, content)), nil
}

func (f *fixture) sample(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	prompt, err := req.RequireString("prompt")
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	//lint:ignore SA1019 bots' servers still sample; the proxy must carry it
	res, err := f.srv.RequestSampling(ctx, mcp.CreateMessageRequest{
		CreateMessageParams: mcp.CreateMessageParams{
			Messages:  []mcp.SamplingMessage{{Role: mcp.RoleUser, Content: mcp.NewTextContent(prompt)}},
			MaxTokens: 100,
		},
	})
	if err != nil {
		return mcp.NewToolResultError("sampling: " + err.Error()), nil
	}
	text := mcp.GetTextFromContent(res.Content)
	if tc, ok := mcp.AsTextContent(res.Content); ok {
		text = tc.Text
	}
	return mcp.NewToolResultText("answer: " + text), nil
}

func (f *fixture) crash(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	code := req.GetInt("code", 3)
	logger.Printf("crashing with %d", code)
	os.Exit(code)
	return nil, nil
}

func (f *fixture) readfile(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	path, err := req.RequireString("path")
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	file, err := os.Open(path)
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	defer file.Close()
	b, err := io.ReadAll(io.LimitReader(file, readLimit))
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	return mcp.NewToolResultText(string(b)), nil
}

func (f *fixture) pid(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	text := fmt.Sprintf("pid=%d", os.Getpid())
	if tag := os.Getenv("FIXTURE_TAG"); tag != "" {
		text += " tag=" + tag
	}
	return mcp.NewToolResultText(text), nil
}

func (f *fixture) addTool(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	name, err := req.RequireString("name")
	if err != nil || name == "" {
		return mcp.NewToolResultError("name is required"), nil
	}
	tool := mcp.NewTool(name,
		mcp.WithDescription("Added at runtime by add_tool; returns its text."),
		mcp.WithString("text", mcp.Description("The text to return.")),
	)
	// AddTool queues notifications/tools/list_changed for every initialized
	// session; wait for it so that it reaches the client before our result.
	f.flushed(mcp.MethodNotificationToolsListChanged, func() error {
		f.srv.AddTool(tool, func(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText(req.GetString("text", "")), nil
		})
		return nil
	})
	return mcp.NewToolResultText("added " + name), nil
}

func (f *fixture) log(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	message, err := req.RequireString("message")
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	// Sent directly rather than with SendLogMessageToClient, which filters
	// by the session's level, and mcp-go's stdio session defaults to error:
	// the message would go nowhere unless the client first set a level.
	err = f.notify(ctx, "notifications/message", map[string]any{
		"level":  mcp.LoggingLevelInfo,
		"logger": "mcp-fixture",
		"data":   message,
	})
	if err != nil {
		return mcp.NewToolResultError("log: " + err.Error()), nil
	}
	return mcp.NewToolResultText("logged"), nil
}

// notify sends a notification to the calling client and waits until it is
// on stdout.
func (f *fixture) notify(ctx context.Context, method string, params map[string]any) error {
	return f.flushed(method, func() error {
		return f.srv.SendNotificationToClient(ctx, method, params)
	})
}

// flushed runs send, which queues one notification of method, and waits until
// it has been written. mcp-go queues notifications on a channel that another
// goroutine writes out, while the tool's result is written by the worker that
// ran the tool, so without the wait a notification could follow the result
// it belongs to, which a real server would not do and tests would trip on.
func (f *fixture) flushed(method string, send func() error) error {
	f.notifyMu.Lock()
	defer f.notifyMu.Unlock()
	before := f.out.count(method)
	if err := send(); err != nil {
		return err
	}
	if !f.out.wait(method, before+1, flushTimeout) {
		logger.Printf("%s not written within %v", method, flushTimeout)
	}
	return nil
}

// output is the server's stdout. It serialises writes: mcp-go's stdio session
// writes its server-to-client requests without the lock it takes for
// responses and notifications. It also counts the notifications written, by
// method, for flushed.
type output struct {
	w       io.Writer
	mu      sync.Mutex
	counts  map[string]int
	changed chan struct{} // closed and replaced when a count changes
}

func newOutput(w io.Writer) *output {
	return &output{w: w, counts: map[string]int{}, changed: make(chan struct{})}
}

// Write takes one whole message: mcp-go writes each in a single call.
func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, err := o.w.Write(p)
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if err == nil && json.Unmarshal(p, &msg) == nil && msg.ID == nil && msg.Method != "" {
		o.counts[msg.Method]++
		close(o.changed)
		o.changed = make(chan struct{})
	}
	return n, err
}

func (o *output) count(method string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[method]
}

// wait waits until n notifications of method have been written, and reports
// whether they were before the timeout.
func (o *output) wait(method string, n int, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		o.mu.Lock()
		done, changed := o.counts[method] >= n, o.changed
		o.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		}
	}
}
