package testenv

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// fixtureTools are the tools the fixture always has.
var fixtureTools = []string{"echo", "progress", "ask", "sample", "crash", "readfile", "pid", "add_tool", "log"}

const longFixtureTool = "a_tool_with_a_deliberately_long_name_to_test_shortening_xxxx"

// TestMCPFixture drives the fixture with mcp-go's client, which skips the
// banner, over the legacy handshake and over the stateless protocol.
func TestMCPFixture(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []client.ClientOption
		version string
	}{
		{"legacy", []client.ClientOption{client.WithProtocolVersion(mcp.ProtocolVersion20251125)}, mcp.ProtocolVersion20251125},
		{"latest", nil, mcp.LATEST_PROTOCOL_VERSION},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testMCPFixture(t, tc.opts, tc.version)
		})
	}
}

func testMCPFixture(t *testing.T, opts []client.ClientOption, version string) {
	bin := MCPFixtureBinary(t)
	cancelFile := filepath.Join(t.TempDir(), "cancelled")
	env := []string{"FIXTURE_EXTRA_TOOLS=2", "FIXTURE_LONG_TOOL=1", "FIXTURE_TAG=t1", "FIXTURE_CANCEL_FILE=" + cancelFile}
	tr := transport.NewStdioWithOptions(bin, env, []string{"--name", "x"})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	opts = append(opts,
		client.WithElicitationHandler(elicitFunc(func(_ context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
			if req.Params.Message != "meaning?" {
				return nil, errors.New("unexpected question " + req.Params.Message)
			}
			return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{
				Action: mcp.ElicitationResponseActionAccept, Content: map[string]any{"answer": "42"},
			}}, nil
		})),
		client.WithSamplingHandler(sampleFunc(func(_ context.Context, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			prompt := mcp.GetTextFromContent(req.Messages[0].Content)
			return &mcp.CreateMessageResult{
				SamplingMessage: mcp.SamplingMessage{Role: mcp.RoleAssistant, Content: mcp.NewTextContent("re: " + prompt)},
				Model:           "test",
			}, nil
		})),
	)
	c := client.NewClient(tr, opts...)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var notes notifications
	c.OnNotification(notes.add)

	init, err := c.Initialize(ctx, mcp.InitializeRequest{Params: mcp.InitializeParams{
		ClientInfo: mcp.Implementation{Name: "testenv", Version: "1"},
	}})
	if err != nil {
		t.Fatalf("initialize: %v", err)
	}
	if init.ServerInfo.Name != "mcp-fixture-x" || init.ServerInfo.Version != "1.0.0" {
		t.Errorf("server is %+v", init.ServerInfo)
	}
	if init.ProtocolVersion != version {
		t.Errorf("negotiated %s, want %s", init.ProtocolVersion, version)
	}
	if tools := init.Capabilities.Tools; tools == nil || !tools.ListChanged || init.Capabilities.Logging == nil {
		t.Errorf("capabilities %+v lack tools.listChanged or logging", init.Capabilities)
	}

	if len(longFixtureTool) != 60 {
		t.Fatalf("the long tool name has %d characters, want 60", len(longFixtureTool))
	}
	want := append(slices.Clone(fixtureTools), "extra_1", "extra_2", longFixtureTool)
	if got := toolNames(ctx, t, c); !sameSet(got, want) {
		t.Errorf("tools %v, want %v", got, want)
	}

	call := func(name string, args map[string]any) *mcp.CallToolResult {
		t.Helper()
		req := mcp.CallToolRequest{}
		req.Params.Name, req.Params.Arguments = name, args
		res, err := c.CallTool(ctx, req)
		if err != nil {
			t.Fatalf("call %s: %v", name, err)
		}
		return res
	}

	res := call("echo", map[string]any{"text": "hi there"})
	if got := resultText(res); got != "hi there" || res.IsError {
		t.Errorf("echo returned %q", got)
	}
	if sc, _ := json.Marshal(res.StructuredContent); string(sc) != `{"text":"hi there"}` {
		t.Errorf("echo's structured content is %s", sc)
	}

	// Progress: the notifications reach the client before the result.
	req := mcp.CallToolRequest{}
	req.Params.Name = "progress"
	req.Params.Arguments = map[string]any{"steps": 3, "interval_ms": 1}
	req.Params.Meta = &mcp.Meta{ProgressToken: "tok"}
	res, err = c.CallTool(ctx, req)
	if err != nil || resultText(res) != "done 3 steps" {
		t.Fatalf("progress: %v %v", resultText(res), err)
	}
	progress := notes.take("notifications/progress")
	if len(progress) != 3 {
		t.Fatalf("got %d progress notifications before the result, want 3", len(progress))
	}
	if p := progress[2].Params.AdditionalFields; p["progressToken"] != "tok" || p["progress"] != 3.0 ||
		p["total"] != 3.0 || p["message"] != "step 3" {
		t.Errorf("last progress notification: %v", p)
	}
	// Without a token it must not fail, nor send any.
	if got := resultText(call("progress", map[string]any{"steps": 2, "interval_ms": 1})); got != "done 2 steps" {
		t.Errorf("progress without a token returned %q", got)
	}
	if n := len(notes.take("notifications/progress")); n != 0 {
		t.Errorf("%d progress notifications without a progress token", n)
	}

	if got := resultText(call("ask", map[string]any{"question": "meaning?"})); got != `answer: accept {"answer":"42"}` {
		t.Errorf("ask returned %q", got)
	}
	if got := resultText(call("sample", map[string]any{"prompt": "hello"})); got != "answer: re: hello" {
		t.Errorf("sample returned %q", got)
	}

	pidText := resultText(call("pid", nil))
	pid, ok := strings.CutPrefix(pidText, "pid=")
	pid, tagged := strings.CutSuffix(pid, " tag=t1")
	if _, err := strconv.Atoi(pid); !ok || !tagged || err != nil {
		t.Errorf("pid returned %q", pidText)
	}

	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte("contents"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := resultText(call("readfile", map[string]any{"path": file})); got != "contents" {
		t.Errorf("readfile returned %q", got)
	}
	if res := call("readfile", map[string]any{"path": file + ".missing"}); !res.IsError {
		t.Errorf("readfile of a missing file returned %q", resultText(res))
	}

	if got := resultText(call("add_tool", map[string]any{"name": "late"})); got != "added late" {
		t.Errorf("add_tool returned %q", got)
	}
	if n := len(notes.take("notifications/tools/list_changed")); n != 1 {
		t.Errorf("got %d tools/list_changed before add_tool's result, want 1", n)
	}
	if got := toolNames(ctx, t, c); !slices.Contains(got, "late") {
		t.Errorf("tools after add_tool: %v", got)
	}
	if got := resultText(call("late", map[string]any{"text": "x"})); got != "x" {
		t.Errorf("added tool returned %q", got)
	}

	if got := resultText(call("log", map[string]any{"message": "note this"})); got != "logged" {
		t.Errorf("log returned %q", got)
	}
	if logs := notes.take("notifications/message"); len(logs) != 1 ||
		logs[0].Params.AdditionalFields["data"] != "note this" || logs[0].Params.AdditionalFields["level"] != "info" {
		t.Errorf("log notifications: %+v", logs)
	}

	// Cancellation: mcp-go's client sends notifications/cancelled when the
	// call's context ends, and the fixture records it.
	callCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = "progress"
		req.Params.Arguments = map[string]any{"steps": 3000, "interval_ms": 10}
		req.Params.Meta = &mcp.Meta{ProgressToken: 7}
		_, err := c.CallTool(callCtx, req)
		done <- err
	}()
	waitFor(t, func() bool { return len(notes.take("notifications/progress")) > 0 })
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled call returned %v", err)
	}
	waitFor(t, func() bool {
		b, _ := os.ReadFile(cancelFile)
		return string(b) == "cancelled "+pid+"\n"
	})
}

// TestMCPFixtureRaw talks JSON-RPC to the fixture by hand, to see the
// banner and the crash as a proxy would.
func TestMCPFixtureRaw(t *testing.T) {
	cmd := exec.Command(MCPFixtureBinary(t))
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewReader(stdout)
	readLine := func() string {
		t.Helper()
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("read from the fixture: %v (stderr: %s)", err, stderr.String())
		}
		return line
	}
	send := func(msg string) {
		t.Helper()
		if _, err := io.WriteString(stdin, msg+"\n"); err != nil {
			t.Fatal(err)
		}
	}

	if line := readLine(); line != "mcp-fixture starting (not JSON)\n" {
		t.Fatalf("first line %q, want the banner", line)
	}
	send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	var initResp struct {
		ID     int
		Result struct {
			ProtocolVersion string
			ServerInfo      struct{ Name, Version string }
		}
	}
	if err := json.Unmarshal([]byte(readLine()), &initResp); err != nil {
		t.Fatal(err)
	}
	if initResp.ID != 1 || initResp.Result.ProtocolVersion != "2025-06-18" || initResp.Result.ServerInfo.Name != "mcp-fixture" {
		t.Errorf("initialize answered %+v", initResp)
	}
	send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	send(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	var list struct {
		ID     int
		Result struct{ Tools []mcp.Tool }
	}
	if err := json.Unmarshal([]byte(readLine()), &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range list.Result.Tools {
		names = append(names, tool.Name)
		if tool.Description == "" {
			t.Errorf("tool %s has no description", tool.Name)
		}
	}
	if list.ID != 2 || !sameSet(names, fixtureTools) {
		t.Errorf("tools/list answered id %d, tools %v", list.ID, names)
	}

	send(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"crash","arguments":{}}}`)
	if rest, _ := io.ReadAll(lines); len(rest) != 0 {
		t.Errorf("the fixture answered the crash: %s", rest)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("fixture exited with %v, want code 3", err)
	}
	if s := stderr.String(); !strings.Contains(s, "mcp-fixture: started pid=") || !strings.Contains(s, "mcp-fixture: crashing with 3") {
		t.Errorf("fixture's stderr: %q", s)
	}
}

func TestMCPArchiveHoldsFixture(t *testing.T) {
	archive := MCPArchive(t)
	if again := MCPArchive(t); again != archive {
		t.Errorf("MCPArchive returned %s, then %s", archive, again)
	}
	fixture, err := os.ReadFile(MCPFixtureBinary(t))
	if err != nil {
		t.Fatal(err)
	}

	blobs := map[string][]byte{}
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if blobs[h.Name], err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
	type descriptor struct {
		Digest      string
		Annotations map[string]string
	}
	blob := func(d descriptor) []byte {
		t.Helper()
		b, ok := blobs["blobs/"+strings.Replace(d.Digest, ":", "/", 1)]
		if !ok {
			t.Fatalf("archive lacks blob %s", d.Digest)
		}
		return b
	}
	var index struct{ Manifests []descriptor }
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %s %v", blobs["index.json"], err)
	}
	if name := index.Manifests[0].Annotations["io.containerd.image.name"]; name != MCPFixtureRef {
		t.Errorf("archive names the image %q, want %q", name, MCPFixtureRef)
	}
	var manifest struct{ Layers []descriptor }
	if err := json.Unmarshal(blob(index.Manifests[0]), &manifest); err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("manifest: %v, %d layers", err, len(manifest.Layers))
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(manifest.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	layer := tar.NewReader(zr)
	found := map[string]*tar.Header{}
	for {
		h, err := layer.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := "/" + strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		found[name] = h
		if name == MCPFixturePath {
			b, err := io.ReadAll(layer)
			if err != nil || !bytes.Equal(b, fixture) {
				t.Errorf("%s in the image differs from the fixture binary (%v)", name, err)
			}
		}
	}
	h := found[MCPFixturePath]
	if h == nil {
		t.Fatalf("the image lacks %s", MCPFixturePath)
	}
	if h.Typeflag != tar.TypeReg || h.Mode&0o7777 != 0o755 {
		t.Errorf("%s: type %c mode %o, want a regular file with mode 755", MCPFixturePath, h.Typeflag, h.Mode)
	}
	for _, dir := range []string{"/usr/local", "/usr/local/bin"} {
		if d := found[dir]; d == nil || d.Typeflag != tar.TypeDir || d.Mode&0o7777 != 0o755 {
			t.Errorf("%s in the image: %+v, want a directory with mode 755", dir, d)
		}
	}
	if found["/bin/busybox"] == nil {
		t.Error("the image lacks busybox")
	}
}

type elicitFunc func(context.Context, mcp.ElicitationRequest) (*mcp.ElicitationResult, error)

func (f elicitFunc) Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	return f(ctx, req)
}

type sampleFunc func(context.Context, mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error)

func (f sampleFunc) CreateMessage(ctx context.Context, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	return f(ctx, req)
}

// notifications collects what the server notifies, by method.
type notifications struct {
	mu     sync.Mutex
	byName map[string][]mcp.JSONRPCNotification
}

func (n *notifications) add(note mcp.JSONRPCNotification) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byName == nil {
		n.byName = map[string][]mcp.JSONRPCNotification{}
	}
	n.byName[note.Method] = append(n.byName[note.Method], note)
}

// take returns and forgets the notifications of method received so far.
func (n *notifications) take(method string) []mcp.JSONRPCNotification {
	n.mu.Lock()
	defer n.mu.Unlock()
	got := n.byName[method]
	delete(n.byName, method)
	return got
}

func toolNames(ctx context.Context, t *testing.T, c *client.Client) []string {
	t.Helper()
	res, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	return names
}

func resultText(res *mcp.CallToolResult) string {
	if res == nil {
		return "<nil result>"
	}
	var texts []string
	for _, c := range res.Content {
		if tc, ok := mcp.AsTextContent(c); ok {
			texts = append(texts, tc.Text)
		}
	}
	return strings.Join(texts, "\n")
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
