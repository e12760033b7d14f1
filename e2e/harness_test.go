// Package e2e drives the built berth binary through real MCP clients
// (mcp-go's and the official go-sdk's) over stdio and streamable HTTP,
// against the real containerd that `make test` starts.
package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

var berthBin string

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

// run builds the static berth binary (or uses BERTH_TEST_BINARY) and runs the tests.
func run(m *testing.M) (int, error) {
	if bin := os.Getenv("BERTH_TEST_BINARY"); bin != "" {
		berthBin = bin
		return m.Run(), nil
	}
	dir, err := os.MkdirTemp("", "berth-e2e-bin")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	berthBin = filepath.Join(dir, "berth")
	build := exec.Command("go", "build", "-o", berthBin, "../cmd/berth")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return 0, fmt.Errorf("build berth: %w", err)
	}
	return m.Run(), nil
}

// env is one test's private world: a containerd namespace with the busybox
// test image, and a state directory.
type env struct {
	t         testing.TB
	address   string
	namespace string
	stateDir  string
	cdiDir    string
	image     string
	extra     []string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	stateDir := testenv.StateDir(t)
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	e := &env{
		t:         t,
		address:   testenv.ContainerdAddress(t),
		namespace: ns,
		stateDir:  stateDir,
		cdiDir:    filepath.Join(stateDir, "cdi"),
	}
	if err := os.MkdirAll(e.cdiDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.image = testenv.ImportArchive(t, e.address, ns, testenv.BusyboxArchive(t))
	return e
}

// useTokens gives the berth processes of e a tokens file (--tokens-file)
// with this YAML.
func (e *env) useTokens(yaml string) {
	e.t.Helper()
	path := filepath.Join(e.stateDir, "tokens.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.extra = append(e.extra, "--tokens-file", path)
}

// args are the berth flags that put it in this env.
func (e *env) args() []string {
	return append([]string{
		"--containerd", e.address,
		"--namespace", e.namespace,
		"--state-dir", e.stateDir,
		"--default-image", e.image,
		"--cdi-spec-dirs", e.cdiDir,
		"--agent-timeout", "20s",
		"--stop-grace", "2s",
		"--log-level", "debug",
		// No bridge unless a test asks for one (netEnv): parallel berths
		// would otherwise share berth0 and its tables.
		"--network-bridge", "",
	}, e.extra...)
}

// logWriter sends a berth process's stderr to the test log.
func (e *env) logWriter(name string) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			e.t.Logf("[%s] %s", name, sc.Text())
		}
	}()
	e.t.Cleanup(func() { pw.Close() })
	return pw
}

// berthHTTP is a berth serving streamable HTTP.
type berthHTTP struct {
	URL   string
	Token string
	cmd   *exec.Cmd
	done  chan struct{}
}

var urlPattern = regexp.MustCompile(`url=(http://\S+/mcp)`)

// serveHTTP starts `berth serve --http 127.0.0.1:0` and waits until it listens.
func (e *env) serveHTTP(extra ...string) *berthHTTP {
	e.t.Helper()
	token := "test-token-0123456789abcdef"
	args := append([]string{"serve", "--http", "127.0.0.1:0", "--token", token}, e.args()...)
	args = append(args, extra...)
	cmd := exec.Command(berthBin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	b := &berthHTTP{Token: token, cmd: cmd, done: make(chan struct{})}
	found := make(chan string, 1)
	logs := e.logWriter("berth-http")
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logs, line)
			if m := urlPattern.FindStringSubmatch(line); m != nil {
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
	return b
}

// kill stops berth abruptly (SIGKILL), as a crash would.
func (b *berthHTTP) kill() {
	if b.cmd.Process != nil {
		b.cmd.Process.Kill()
	}
	<-b.done
}

// toolResult is a tool call's answer, whatever client got it.
type toolResult struct {
	IsError    bool
	Text       string
	Structured json.RawMessage
}

func (r *toolResult) decode(t testing.TB, v any) {
	t.Helper()
	if r.IsError {
		t.Fatalf("tool failed: %s", r.Text)
	}
	if err := json.Unmarshal(r.Structured, v); err != nil {
		t.Fatalf("decode structured content %s: %v", r.Structured, err)
	}
}

// progressEvent is one notifications/progress a client received.
type progressEvent struct {
	Progress, Total float64
	Message         string
}

// mcpClient hides which MCP client library speaks to berth.
type mcpClient interface {
	call(ctx context.Context, tool string, args any, progress func(progressEvent)) (*toolResult, error)
	readResource(ctx context.Context, uri string) (string, error)
	toolNames(ctx context.Context) ([]string, error)
	// listChanges counts the notifications/tools/list_changed received.
	listChanges() int64
	close()
}

// mustCall calls a tool and fails the test on a protocol error.
func mustCall(t testing.TB, c mcpClient, tool string, args any) *toolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := c.call(ctx, tool, args, nil)
	if err != nil {
		t.Fatalf("%s: protocol error: %v", tool, err)
	}
	return res
}

// ---- mcp-go client ----

// progressRouter hands each progress notification to the call whose token it carries.
type progressRouter struct {
	prefix   string
	next     atomic.Int64
	mu       sync.Mutex
	handlers map[string]func(progressEvent)
}

// register returns a fresh token for fn and a func that forgets it.
func (r *progressRouter) register(fn func(progressEvent)) (token string, forget func()) {
	token = fmt.Sprintf("%s%d", r.prefix, r.next.Add(1))
	r.mu.Lock()
	if r.handlers == nil {
		r.handlers = map[string]func(progressEvent){}
	}
	r.handlers[token] = fn
	r.mu.Unlock()
	return token, func() { r.mu.Lock(); delete(r.handlers, token); r.mu.Unlock() }
}

func (r *progressRouter) dispatch(token any, ev progressEvent) {
	r.mu.Lock()
	h := r.handlers[fmt.Sprint(token)]
	r.mu.Unlock()
	if h != nil {
		h(ev)
	}
}

type mcpgoClient struct {
	c        *mcpclient.Client
	progress progressRouter
	changes  atomic.Int64
}

func newMcpgoClient(t testing.TB, c *mcpclient.Client) mcpClient {
	t.Helper()
	mc := &mcpgoClient{c: c, progress: progressRouter{prefix: "p"}}
	c.OnNotification(func(n mcpgo.JSONRPCNotification) {
		if n.Method == "notifications/tools/list_changed" {
			mc.changes.Add(1)
		}
		if n.Method != "notifications/progress" {
			return
		}
		f := n.Params.AdditionalFields
		ev := progressEvent{Message: fmt.Sprint(f["message"])}
		ev.Progress, _ = f["progress"].(float64)
		ev.Total, _ = f["total"].(float64)
		mc.progress.dispatch(f["progressToken"], ev)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("mcp-go client start: %v", err)
	}
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = mcpgo.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcpgo.Implementation{Name: "berth-e2e-mcpgo", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatalf("mcp-go initialize: %v", err)
	}
	t.Cleanup(mc.close)
	return mc
}

func (m *mcpgoClient) call(ctx context.Context, tool string, args any, progress func(progressEvent)) (*toolResult, error) {
	req := mcpgo.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = args
	if progress != nil {
		token, forget := m.progress.register(progress)
		defer forget()
		req.Params.Meta = &mcpgo.Meta{ProgressToken: token}
	}
	res, err := m.c.CallTool(ctx, req)
	if err != nil {
		return nil, err
	}
	out := &toolResult{IsError: res.IsError}
	for _, c := range res.Content {
		if tc, ok := c.(mcpgo.TextContent); ok {
			out.Text += tc.Text
		}
	}
	if res.StructuredContent != nil {
		out.Structured, _ = json.Marshal(res.StructuredContent)
	}
	return out, nil
}

func (m *mcpgoClient) readResource(ctx context.Context, uri string) (string, error) {
	req := mcpgo.ReadResourceRequest{}
	req.Params.URI = uri
	res, err := m.c.ReadResource(ctx, req)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, c := range res.Contents {
		switch c := c.(type) {
		case mcpgo.TextResourceContents:
			b.WriteString(c.Text)
		case mcpgo.BlobResourceContents:
			data, err := base64.StdEncoding.DecodeString(c.Blob)
			if err != nil {
				return "", err
			}
			b.Write(data)
		}
	}
	return b.String(), nil
}

func (m *mcpgoClient) toolNames(ctx context.Context) ([]string, error) {
	res, err := m.c.ListTools(ctx, mcpgo.ListToolsRequest{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	return names, nil
}

func (m *mcpgoClient) listChanges() int64 { return m.changes.Load() }

func (m *mcpgoClient) close() { m.c.Close() }

// stdioMcpgo runs `berth serve --stdio` under mcp-go's stdio client.
func (e *env) stdioMcpgo() mcpClient {
	e.t.Helper()
	args := append([]string{"serve", "--stdio"}, e.args()...)
	c, err := mcpclient.NewStdioMCPClientWithOptions(berthBin, nil, args,
		transport.WithCommandStderrWriter(e.logWriter("berth-stdio")))
	if err != nil {
		e.t.Fatal(err)
	}
	return newMcpgoClient(e.t, c)
}

// httpMcpgo connects mcp-go's streamable HTTP client to b.
func (e *env) httpMcpgo(b *berthHTTP) mcpClient {
	e.t.Helper()
	c, err := mcpclient.NewStreamableHttpClient(b.URL,
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + b.Token}))
	if err != nil {
		e.t.Fatal(err)
	}
	return newMcpgoClient(e.t, c)
}

// ---- official go-sdk client ----

type sdkClient struct {
	cs       *sdk.ClientSession
	progress progressRouter
	changes  atomic.Int64
}

// connectSDK connects the go-sdk client over tr; opts may add handlers.
func (e *env) connectSDK(tr sdk.Transport, opts ...func(*sdk.ClientOptions)) mcpClient {
	e.t.Helper()
	sc := &sdkClient{progress: progressRouter{prefix: "s"}}
	o := &sdk.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
			p := req.Params
			sc.progress.dispatch(p.ProgressToken, progressEvent{Progress: p.Progress, Total: p.Total, Message: p.Message})
		},
		ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) { sc.changes.Add(1) },
	}
	for _, opt := range opts {
		opt(o)
	}
	c := sdk.NewClient(&sdk.Implementation{Name: "berth-e2e-gosdk", Version: "1"}, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, tr, nil)
	if err != nil {
		e.t.Fatalf("go-sdk connect: %v", err)
	}
	sc.cs = cs
	e.t.Cleanup(sc.close)
	return sc
}

func (s *sdkClient) call(ctx context.Context, tool string, args any, progress func(progressEvent)) (*toolResult, error) {
	params := &sdk.CallToolParams{Name: tool, Arguments: args}
	if progress != nil {
		token, forget := s.progress.register(progress)
		defer forget()
		params.SetProgressToken(token)
	}
	res, err := s.cs.CallTool(ctx, params)
	if err != nil {
		return nil, err
	}
	out := &toolResult{IsError: res.IsError}
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			out.Text += tc.Text
		}
	}
	if res.StructuredContent != nil {
		out.Structured, _ = json.Marshal(res.StructuredContent)
	}
	return out, nil
}

func (s *sdkClient) readResource(ctx context.Context, uri string) (string, error) {
	res, err := s.cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: uri})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, c := range res.Contents {
		b.WriteString(c.Text)
		b.Write(c.Blob)
	}
	return b.String(), nil
}

func (s *sdkClient) toolNames(ctx context.Context) ([]string, error) {
	res, err := s.cs.ListTools(ctx, nil)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	return names, nil
}

func (s *sdkClient) listChanges() int64 { return s.changes.Load() }

func (s *sdkClient) close() { s.cs.Close() }

// stdioSDK runs `berth serve --stdio` under the go-sdk's command transport.
func (e *env) stdioSDK() mcpClient {
	e.t.Helper()
	cmd := exec.Command(berthBin, append([]string{"serve", "--stdio"}, e.args()...)...)
	cmd.Stderr = e.logWriter("berth-stdio")
	return e.connectSDK(&sdk.CommandTransport{Command: cmd})
}

// httpSDK connects the go-sdk's streamable HTTP client to b.
func (e *env) httpSDK(b *berthHTTP) mcpClient {
	e.t.Helper()
	return e.connectSDK(&sdk.StreamableClientTransport{
		Endpoint:   b.URL,
		HTTPClient: &http.Client{Transport: bearer{token: b.Token}},
	})
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// clients names the four ways of reaching berth, for table tests.
var clients = []struct {
	name    string
	connect func(e *env) mcpClient
}{
	{"stdio-mcpgo", func(e *env) mcpClient { return e.stdioMcpgo() }},
	{"stdio-gosdk", func(e *env) mcpClient { return e.stdioSDK() }},
	{"http-mcpgo", func(e *env) mcpClient { return e.httpMcpgo(e.serveHTTP()) }},
	{"http-gosdk", func(e *env) mcpClient { return e.httpSDK(e.serveHTTP()) }},
}
