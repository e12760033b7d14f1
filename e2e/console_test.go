package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// consoleBrowser is Debian's chromium, which scripts/test.sh installs.
const consoleBrowser = "/usr/bin/chromium"

// consolePage drives one headless chromium tab on berth's console.
type consolePage struct {
	t     *testing.T
	ctx   context.Context
	base  string // berth's address, http://127.0.0.1:port
	shots string // where screenshots go

	mu     sync.Mutex
	thrown []string // the page's uncaught exceptions
}

// newConsolePage starts chromium with a fresh profile and nothing that talks to
// the outside (updates, sync, field trials).
func newConsolePage(t *testing.T, base string) *consolePage {
	t.Helper()
	if _, err := os.Stat(consoleBrowser); err != nil {
		t.Fatalf("the console tests need Debian's chromium (apt-get install chromium; scripts/test.sh does): %v", err)
	}
	shots := os.Getenv("BERTH_TEST_ARTIFACTS")
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(consoleBrowser),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	// Start the browser on this context: one started by a step's shorter
	// context would end with that step.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	p := &consolePage{t: t, ctx: ctx, base: base, shots: shots}
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			p.mu.Lock()
			p.thrown = append(p.thrown, msg)
			p.mu.Unlock()
		}
	}()
	return p
}

// mcpStreams counts the page's /mcp answers that came as an event stream
// (a call with progress), from now on.
func (p *consolePage) mcpStreams() *atomic.Int64 {
	p.t.Helper()
	var n atomic.Int64
	responses := chromedp.Events(p.ctx, network.ResponseReceived)
	if _, err := chromedp.Call(p.ctx, network.Enable, network.EnableParams{}); err != nil {
		p.t.Fatal(err)
	}
	go func() {
		for ev, err := range responses {
			if err != nil {
				return
			}
			if strings.HasSuffix(ev.Response.URL, "/mcp") && strings.HasPrefix(ev.Response.MimeType, "text/event-stream") {
				n.Add(1)
			}
		}
	}()
	return &n
}

// noExceptions fails the test if a script of the page threw and nothing
// caught it.
func (p *consolePage) noExceptions() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.thrown) > 0 {
		p.t.Fatalf("the page threw: %q", p.thrown)
	}
}

// do runs steps with a deadline; on failure it saves a screenshot of the
// page as it was and fails the test.
func (p *consolePage) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.shot("failed")
		p.t.Fatalf("%s: %v (screenshot in %s)", what, err, p.shots)
	}
}

// consoleEval runs JavaScript in the page (awaiting a promise) and returns its value.
func consoleEval[T any](p *consolePage, what, js string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 45*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		p.shot("failed")
		p.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// until waits for a JavaScript condition to hold.
func (p *consolePage) until(what, cond string) {
	p.t.Helper()
	p.do(what, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(40*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))(ctx, t)
		return err
	}))
}

// open goes to one of the page's own routes (a hash change: no load).
func (p *consolePage) open(route string) {
	p.t.Helper()
	consoleEval[bool](p, "open "+route, fmt.Sprintf("location.hash = %q, true", route))
}

// none fails when any element matches sel: the controls a token may not use.
func (p *consolePage) none(what, sel string) {
	p.t.Helper()
	if n := consoleEval[int](p, what, fmt.Sprintf("document.querySelectorAll(%q).length", sel)); n != 0 {
		p.shot("failed")
		p.t.Fatalf("%s: %d element(s) match %s", what, n, sel)
	}
}

// named fails when a control of the page has no accessible name (text,
// aria-label, a label or a title): what a screen reader would announce.
func (p *consolePage) named(what string) {
	p.t.Helper()
	nameless := consoleEval[[]string](p, what, `[...document.querySelectorAll('button, a[href], input, select, textarea')].filter(el =>
		!((el.getAttribute('aria-label') || el.textContent || el.title || '').trim() ||
			(el.id && document.querySelector('label[for="' + el.id + '"]')) || el.closest('label'))
	).map(el => el.outerHTML.slice(0, 120))`)
	if len(nameless) > 0 {
		p.t.Fatalf("%s: controls without a name: %q", what, nameless)
	}
}

func (p *consolePage) shot(name string) {
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(p.shots, "console-"+name+".png"), png, 0o644); err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
	}
}

func (p *consolePage) login(token string) {
	p.t.Helper()
	p.do("log in",
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`form.login button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-bot="web"]`)))
}

// consolePress is one press of a key that types no text (Tab, Enter, Space,
// Escape), as a raw key down and up: CDP's key events with text reach a
// page twice.
func consolePress(key, code string, vk int64) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
			if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, input.DispatchKeyEventParams{Type: typ, Key: key, Code: code, WindowsVirtualKeyCode: vk}); err != nil {
				return err
			}
		}
		return nil
	})
}

// confirm presses the OK button of the confirmation dialog.
func (p *consolePage) confirm(what string) {
	p.t.Helper()
	p.do(what, chromedp.Click(chromedp.CSS(`dialog.modal[open] button[value="ok"]`)))
}

// TestConsole drives the web console in a real browser: log in, the
// workspace list, a terminal, upload and download, snapshots and rollback,
// approving a network request, what a read-only token sees and may do, and
// a cross-site form post.
func TestConsole(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	const readToken = "console-read-0123456789abcdef"
	tokens := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("tokens:\n  - {name: viewer, token: "+readToken+", bots: [web], scopes: [read]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.extra = append(e.extra, "--tokens-file", tokens, "--audit-log", filepath.Join(dir, "audit.log"))
	b := e.serveHTTP()
	admin := e.httpMcpgo(b)
	mustCall(t, admin, "workspace_create", map[string]any{"bot_id": "web"})
	mustCall(t, admin, "workspace_create", map[string]any{"bot_id": "idle"})
	base := strings.TrimSuffix(b.URL, "/mcp")
	var ws struct {
		Status string `json:"status"`
	}

	p := newConsolePage(t, base)
	if res, err := http.Get(base + "/ui"); err != nil {
		t.Fatal(err)
	} else if res.Body.Close(); res.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui: %s; a berth built without the console bundle answers 503: build it with make build (scripts/build-console.sh, then go build)", res.Status)
	}
	p.do("open the console", chromedp.Navigate(base+"/ui"), chromedp.WaitVisible(chromedp.ID("token")))
	p.shot("login")
	p.named("controls of the login page")

	// A wrong token is refused on the page.
	p.do("bad token",
		chromedp.SendKeys(chromedp.ID("token"), "not-a-token"),
		chromedp.Click(chromedp.CSS(`form.login button[type="submit"]`)))
	p.until("the refusal", `document.getElementById('login-error').textContent.includes('not valid')`)
	consoleEval[bool](p, "clear the field", `document.getElementById('token').value = '', true`)

	p.login(b.Token)
	p.until("live figures", `document.querySelector('tr[data-bot="web"] td.c-status').textContent === 'running' && document.querySelectorAll('tr[data-bot="web"] svg.spark polyline').length === 2`)
	// Stop asks first, saying what is lost.
	p.do("stop idle", chromedp.Click(chromedp.CSS(`tr[data-bot="idle"] .act-stop`)))
	p.until("the confirmation", `document.querySelector('dialog.modal[open]').textContent.includes('Open terminals and background processes end')`)
	p.confirm("confirm the stop")
	p.until("idle stopped", `document.querySelector('tr[data-bot="idle"] td.c-status').textContent === 'stopped' && !!document.querySelector('tr[data-bot="idle"] .act-start')`)
	p.shot("overview")
	p.named("controls of the overview page")
	// The keyboard alone: Tab from the filter to web's Stop, Space opens
	// the confirmation, Escape cancels it and nothing stops.
	consoleEval[bool](p, "focus the filter", `document.getElementById('filter').focus(), true`)
	for i := 0; !consoleEval[bool](p, "focus", `document.activeElement.matches('tr[data-bot="web"] .act-stop')`); i++ {
		if i == 30 {
			t.Fatalf("Tab did not reach web's Stop button; focus is on %s", consoleEval[string](p, "focus", `document.activeElement.outerHTML.slice(0, 120)`))
		}
		p.do("Tab", consolePress("Tab", "Tab", 9))
	}
	p.do("Space", consolePress(" ", "Space", 32))
	p.until("the confirmation, focused", `!!document.querySelector('dialog.modal[open]') && document.querySelector('dialog.modal[open]').contains(document.activeElement)`)
	p.do("Escape", consolePress("Escape", "Escape", 27))
	p.until("the confirmation gone", `!document.querySelector('dialog.modal[open]')`)
	mustCall(t, admin, "workspace_get", map[string]any{"bot_id": "web"}).decode(t, &ws)
	if ws.Status != "running" {
		t.Fatalf("after Escape on the stop confirmation the workspace is %q", ws.Status)
	}
	p.do("filter", chromedp.SendKeys(chromedp.ID("filter"), "stopp"))
	p.until("only the stopped one", `!document.querySelector('tr[data-bot="web"]') && !!document.querySelector('tr[data-bot="idle"]')`)
	consoleEval[bool](p, "clear the filter", `(f => (f.value = '', f.dispatchEvent(new Event('input')), true))(document.getElementById('filter'))`)
	p.until("both again", `!!document.querySelector('tr[data-bot="web"]') && !!document.querySelector('tr[data-bot="idle"]')`)

	// A terminal: open one, type, see the output.
	p.open("#/w/web/terminal")
	p.do("open a terminal", chromedp.Click(chromedp.ID("term-new")), chromedp.WaitVisible(chromedp.CSS("#terminal[data-attached]")))
	consoleEval[bool](p, "focus the terminal", `document.querySelector('#terminal .xterm-helper-textarea').focus(), true`)
	// The text as text input and Enter as one raw key press: CDP's
	// ordinary key events reach xterm twice (keydown with text, then char).
	p.do("type", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, input.InsertText, input.InsertTextParams{Text: "echo hi"}); err != nil {
			return err
		}
		return nil
	}), consolePress("Enter", "Enter", 13))
	p.until("hi in the terminal", `[...document.querySelectorAll('#terminal .xterm-rows > div')].some(r => r.textContent.trim() === 'hi')`)
	p.shot("terminal")
	p.named("controls of the terminal page")
	// Coming back reattaches to the running terminal and shows its past.
	p.open("#/w/web/files")
	p.open("#/w/web/terminal")
	p.do("reattach", chromedp.WaitVisible(chromedp.CSS("#terminal[data-attached]")))
	p.until("hi again", `[...document.querySelectorAll('#terminal .xterm-rows > div')].some(r => r.textContent.trim() === 'hi')`)
	// Closing it, after saying what ends, leaves none to come back to.
	p.do("close the terminal", chromedp.Click(chromedp.ID("term-close")))
	p.until("what closing ends", `document.querySelector('dialog.modal[open]').textContent.includes('every program started in it end')`)
	p.confirm("close it")
	const noTerminal = `document.querySelector('.term-state').textContent === 'No terminal open.' && !document.querySelector('#terminal .xterm') && !document.getElementById('term-close')`
	p.until("no terminal open", noTerminal)
	p.open("#/w/web/files")
	p.open("#/w/web/terminal")
	p.until("none after coming back", noTerminal)

	// A snapshot of the workspace before the upload.
	p.open("#/w/web/snapshots")
	streams := p.mcpStreams()
	p.do("take a snapshot",
		chromedp.WaitVisible(chromedp.ID("snap-name")),
		chromedp.SendKeys(chromedp.ID("snap-name"), "clean"),
		chromedp.Click(chromedp.ID("snap-create")),
		chromedp.WaitVisible(chromedp.CSS(`#timeline li[data-version="1"]`)))
	// The page asks for progress, so berth answered with an event stream:
	// the page's stream parser read the new version.
	if streams.Load() == 0 {
		t.Fatal("snapshot_create was not answered as an event stream")
	}

	// Upload a file and download it back.
	payload := make([]byte, 300<<10)
	rand.Read(payload)
	src := filepath.Join(dir, "up.bin")
	if err := os.WriteFile(src, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	code := filepath.Join(dir, "hello.go")
	if err := os.WriteFile(code, []byte("package main\n\nfunc main() { println(\"hello\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.open("#/w/web/files")
	p.do("upload",
		chromedp.WaitVisible(chromedp.CSS(`label[for="upload"]`)),
		chromedp.SetUploadFiles(chromedp.ID("upload"), []string{src, code}, chromedp.NodeReady),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-path="/data/up.bin"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-path="/data/hello.go"]`)),
		chromedp.Click(chromedp.CSS(`tr[data-path="/data/hello.go"] button.file`)))
	p.until("the code, coloured", `!!document.querySelector('.viewer code.hljs .hljs-keyword') && document.querySelector('.viewer code').textContent.includes('println("hello")')`)
	downloads := filepath.Join(dir, "downloads")
	downloadEvents := true
	if _, err := chromedp.CallBrowser(p.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads, EventsEnabled: &downloadEvents,
	}); err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(p.ctx, 30*time.Second)
	progress := chromedp.BrowserEvents(dctx, browser.DownloadProgress)
	p.do("download", chromedp.Click(chromedp.CSS(`a[aria-label="Download up.bin"]`)))
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("download canceled")
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			break
		}
	}
	dcancel()
	if got, err := os.ReadFile(filepath.Join(downloads, "up.bin")); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("downloaded file differs from the upload (%d bytes, %v)", len(got), err)
	}
	p.shot("files")
	p.named("controls of the files page")
	// New folder, rename and delete, each through its dialog.
	p.do("new folder", chromedp.Click(chromedp.ID("mkdir")), chromedp.WaitVisible(chromedp.CSS(`dialog.modal[open] input`)),
		chromedp.SendKeys(chromedp.CSS(`dialog.modal[open] input`), "notes"))
	p.confirm("create the folder")
	p.do("the folder", chromedp.WaitVisible(chromedp.CSS(`tr[data-path="/data/notes"]`)),
		chromedp.Click(chromedp.CSS(`button[aria-label="Rename hello.go"]`)), chromedp.WaitVisible(chromedp.CSS(`dialog.modal[open] input`)))
	consoleEval[bool](p, "the new name", `document.querySelector('dialog.modal[open] input').value = 'hi.go', true`)
	p.confirm("rename")
	p.do("renamed", chromedp.WaitVisible(chromedp.CSS(`tr[data-path="/data/hi.go"]`)), chromedp.Click(chromedp.CSS(`button[aria-label="Delete notes"]`)))
	p.confirm("delete the folder")
	p.until("the folder gone", `!document.querySelector('tr[data-path="/data/notes"]') && !document.querySelector('tr[data-path="/data/hello.go"]')`)

	// A background process and its output.
	mustCall(t, admin, "exec", map[string]any{"bot_id": "web", "command": "echo out-$((6*7))", "background": true})
	p.open("#/w/web/processes")
	p.do("a process", chromedp.Click(chromedp.CSS(`#panel table.list tbody th button`)))
	p.until("its output", `document.querySelector('#panel pre.output').textContent.includes('out-42')`)
	p.shot("processes")
	p.named("controls of the processes page")
	p.open("#/w/web/mcp")
	p.until("no MCP servers", `[...document.querySelectorAll('#panel p.empty')].some(e => e.textContent === 'No MCP servers in this workspace.')`)
	// A workspace with a server of its own: its state, tools and logs.
	mcpImage := testenv.ImportArchive(t, e.address, e.namespace, testenv.MCPArchive(t))
	mustCall(t, admin, "workspace_create", map[string]any{"bot_id": "tools", "image": mcpImage}).decode(t, &struct{}{})
	mustCall(t, admin, "mcp_server_add", map[string]any{"bot_id": "tools", "name": "fx", "command": testenv.MCPFixturePath}).decode(t, &struct{}{})
	p.open("#/w/tools/mcp")
	// The page's last event predates the workspace: it waits for the next
	// one rather than saying there is no such workspace.
	if consoleEval[bool](p, "the header of a workspace newer than the last event", `document.querySelector('p.summary').textContent.startsWith('No such')`) {
		t.Error("a workspace created after the page's last event was shown as missing")
	}
	p.until("its live state", `!!document.querySelector('p.summary .badge.s-running')`)
	p.until("the server, ready, with its tools", `[...document.querySelectorAll('#panel article.card')].some(c => c.querySelector('h3').textContent.startsWith('fx') && !!c.querySelector('.badge.m-ready') && c.querySelectorAll('details li').length >= 9)`)
	p.do("its logs", chromedp.Click(chromedp.CSS(`#panel article.card button`)))
	p.until("the server's own log lines", `document.querySelector('#panel h2').textContent === 'Logs of fx' && document.querySelector('#panel pre.output').textContent.includes('mcp-fixture: started pid=')`)
	p.shot("mcp")
	p.named("controls of the MCP servers page")

	// The diff shows the upload; rolling back to the snapshot removes it.
	p.open("#/w/web/snapshots")
	p.do("diff", chromedp.WaitVisible(chromedp.CSS(`#timeline li[data-version="1"]`)), chromedp.Click(chromedp.ID("diff-run")))
	p.until("the upload in the diff", `[...document.querySelectorAll('#diff tr.k-added th')].some(c => c.textContent === '/data/up.bin')`)
	p.do("roll back", chromedp.Click(chromedp.CSS(`#timeline li[data-version="1"] .act-rollback`)))
	p.confirm("confirm the rollback")
	p.do("the pre-rollback version", chromedp.WaitVisible(chromedp.CSS(`#timeline li[data-version="2"].src-pre_rollback`)))
	p.shot("snapshots")
	p.named("controls of the snapshots page")
	p.do("export", chromedp.Click(chromedp.CSS(`#timeline li[data-version="1"] .act-export`)))
	p.confirm("confirm the export")
	p.until("exported", `document.getElementById('notice').textContent === 'exported berth.local/snapshots/web:v1'`)
	p.open("#/w/web/files")
	p.until("the files gone", `!document.querySelector('#files tr[data-path="/data/up.bin"], #files tr[data-path="/data/hi.go"]') && !!(document.querySelector('#files') || document.querySelector('#panel .empty'))`)

	// A network access request, approved on the page.
	var asked struct {
		Request struct {
			ID string `json:"id"`
		} `json:"request"`
	}
	// The request arrives while the tab is open: it shows up by itself.
	p.open("#/w/web/network")
	p.until("the network tab", `[...document.querySelectorAll('#panel p.empty')].some(e => e.textContent === 'No pending requests.')`)
	mustCall(t, admin, "network_access_request", map[string]any{"bot_id": "web", "domain": "docs.example.com", "ports": []string{"443"}, "reason": "read the docs"}).decode(t, &asked)
	p.do("approve", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#requests tr[data-request=%q] .act-approve`, asked.Request.ID))))
	p.until("approved", `[...document.querySelectorAll('#decided td')].some(c => c.textContent.startsWith('approved')) && [...document.querySelectorAll('#policy td')].some(c => c.textContent.startsWith('docs.example.com'))`)
	p.shot("network")
	p.named("controls of the network page")
	var net struct {
		Policy struct {
			Allow []struct {
				Domain string `json:"domain"`
			} `json:"allow"`
		} `json:"policy"`
	}
	mustCall(t, admin, "network_get", map[string]any{"bot_id": "web"}).decode(t, &net)
	if len(net.Policy.Allow) != 1 || net.Policy.Allow[0].Domain != "docs.example.com" {
		t.Fatalf("policy after the approval: %+v", net.Policy)
	}

	// Exposed ports with their links.
	mustCall(t, admin, "port_expose", map[string]any{"bot_id": "web", "port": 8080, "name": "docs preview"})
	p.open("#/w/web/ports")
	p.until("the port", `!!document.querySelector('#ports a[href$="/bots/web/ports/8080/"]')`)
	p.shot("ports")
	p.named("controls of the ports page")

	// The audit lines of the bot, from --audit-log.
	p.open("#/w/web/audit")
	p.until("audit records", `[...document.querySelectorAll('#audit td')].some(c => c.textContent === 'network_request_decide')`)
	p.shot("audit")

	// A cross-site form (another origin on the same site, so the browser
	// sends the session cookie) cannot call a tool: no CSRF header.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/mcp" enctype="text/plain">`+
			`<input name='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"workspace_delete","arguments":{"bot_id":"web"}},"x":"' value='"}'></form>`+
			`<script>document.getElementById("f").submit()</script>`, base)
	}))
	defer evil.Close()
	p.do("the cross-site form", chromedp.Navigate(evil.URL))
	p.until("its answer", fmt.Sprintf(`location.href.startsWith(%q) && document.readyState === 'complete'`, base+"/mcp"))
	if body := consoleEval[string](p, "its answer", `document.body ? document.body.innerText : ''`); strings.Contains(body, `"result"`) {
		t.Fatalf("a cross-site form post was answered: %s", body)
	} else if !strings.Contains(body, "not allowed") && !strings.Contains(body, "CSRF") {
		t.Fatalf("a cross-site form post got: %s", body)
	}
	mustCall(t, admin, "workspace_get", map[string]any{"bot_id": "web"}).decode(t, &ws)
	if ws.Status != "running" {
		t.Fatalf("after the cross-site post the workspace is %q", ws.Status)
	}

	// Delete asks first too, then the workspace leaves the list.
	p.do("back to the console", chromedp.Navigate(base+"/ui"), chromedp.WaitVisible(chromedp.CSS(`tr[data-bot="idle"] .act-delete`)))
	p.do("delete idle", chromedp.Click(chromedp.CSS(`tr[data-bot="idle"] .act-delete`)))
	p.until("the confirmation", `document.querySelector('dialog.modal[open]').textContent.includes('cannot be undone')`)
	p.confirm("confirm the delete")
	p.until("idle gone", `!document.querySelector('tr[data-bot="idle"]') && !!document.querySelector('tr[data-bot="web"]')`)

	// A read-only token: no mutating controls, and its own requests to
	// mutate are refused by the server.
	mustCall(t, admin, "network_access_request", map[string]any{"bot_id": "web", "domain": "pending.example.com", "reason": "stays pending"})
	p.do("log out", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	p.login(readToken)
	p.none("overview of a read-only token", `.act-start, .act-stop, .act-delete, td.c-actions`)
	p.shot("readonly")
	p.do("phone width", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
	p.shot("phone")
	p.open("#/w/web/files")
	p.until("the listing", `!!(document.querySelector('#files') || document.querySelector('#panel .empty'))`)
	p.shot("phone-files")
	p.do("desktop width", chromedp.EmulateReset())
	p.none("files of a read-only token", `#upload, #mkdir, #files button.danger, .ws-head .actions button`)
	p.open("#/w/web/snapshots")
	p.until("the timeline", `!!document.querySelector('#timeline li[data-version="2"]')`)
	p.none("snapshots of a read-only token", `#snap-create, .act-rollback, .act-export`)
	p.open("#/w/web/network")
	p.until("the pending request", `[...document.querySelectorAll('#requests th')].some(c => c.textContent === 'pending.example.com')`)
	p.none("network of a read-only token", `.act-approve, .act-deny`)
	p.open("#/w/web/terminal")
	p.until("no terminal", `!!document.querySelector('#panel .empty') && !document.querySelector('#terminal')`)

	refused := consoleEval[map[string]any](p, "mutating requests of a read-only token", `(async () => {
		const me = await (await fetch('/ui/api/me')).json();
		const h = {'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', 'X-Berth-CSRF': me.csrf};
		const init = await fetch('/mcp', {method: 'POST', headers: h, body: JSON.stringify({jsonrpc: '2.0', id: 1, method: 'initialize',
			params: {protocolVersion: '2025-11-25', capabilities: {}, clientInfo: {name: 'probe', version: '1'}}})});
		await init.text();
		const sid = init.headers.get('Mcp-Session-Id');
		const stop = await fetch('/mcp', {method: 'POST', headers: {...h, 'Mcp-Session-Id': sid}, body: JSON.stringify({jsonrpc: '2.0', id: 2,
			method: 'tools/call', params: {name: 'workspace_stop', arguments: {bot_id: 'web'}}})});
		const put = await fetch('/bots/web/files?path=/data/ro.txt', {method: 'PUT', headers: {'X-Berth-CSRF': me.csrf}, body: 'x'});
		return {scopes: me.scopes.join(','), init: init.status, stop: await stop.text(), put: put.status};
	})()`)
	if refused["scopes"] != "read" || refused["init"] != float64(200) || !strings.Contains(fmt.Sprint(refused["stop"]), `"isError":true`) || refused["put"] != float64(http.StatusForbidden) {
		t.Fatalf("a read-only token's mutations: %v", refused)
	}
	mustCall(t, admin, "workspace_get", map[string]any{"bot_id": "web"}).decode(t, &ws)
	if ws.Status != "running" {
		t.Fatalf("after the read-only token's stop the workspace is %q", ws.Status)
	}

	// A session that ends under the page (here: logged out elsewhere) sends
	// the page back to its login at the next call.
	p.open("#/w/web/ports")
	p.do("the ports tab", chromedp.WaitVisible(chromedp.ID("ports")))
	if status := consoleEval[int](p, "log out behind the page", `(async () => {
		const me = await (await fetch('/ui/api/me')).json();
		return (await fetch('/ui/logout', {method: 'POST', headers: {'X-Berth-CSRF': me.csrf}})).status;
	})()`); status != http.StatusNoContent {
		t.Fatalf("logout: %d", status)
	}
	p.do("refresh", chromedp.Click(chromedp.CSS(`#panel .toolbar button`)))
	p.until("the login again", `!!document.getElementById('token') && document.getElementById('login-error').textContent.includes('session ended')`)
	p.noExceptions()
}
