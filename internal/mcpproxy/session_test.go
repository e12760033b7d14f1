package mcpproxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// msg parses a line the test knows to be valid.
func msg(t *testing.T, line string) *message {
	t.Helper()
	m, err := parseMessage([]byte(line))
	if err != nil {
		t.Fatalf("parseMessage(%s): %v", line, err)
	}
	return m
}

// routeLine routes a line of the server, as proc.read would.
func routeLine(t *testing.T, s *session, line string) {
	t.Helper()
	s.route(msg(t, line), []byte(line+"\n"))
}

// receive takes the next line queued on st.
func receive(t *testing.T, st *stream) string {
	t.Helper()
	select {
	case line := <-st.ch:
		return strings.TrimSpace(string(line))
	case <-time.After(5 * time.Second):
		t.Fatal("no message on the stream")
		return ""
	}
}

// nothingOn asserts that st has no message queued.
func nothingOn(t *testing.T, st *stream, what string) {
	t.Helper()
	select {
	case line := <-st.ch:
		t.Fatalf("%s got %s", what, line)
	default:
	}
}

func isFinished(st *stream) bool {
	select {
	case <-st.finished:
		return true
	default:
		return false
	}
}

func waitFinished(t *testing.T, st *stream) {
	t.Helper()
	select {
	case <-st.finished:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not finish")
	}
}

func TestSessionRoutesAnswers(t *testing.T) {
	s := newSession("sid", Target{Bot: "bot", Server: "srv"})
	a, b := newStream(), newStream()
	s.track(a, []*message{
		msg(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"p1"}}}`),
		msg(t, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":0}}`), // not tracked
		msg(t, `{"jsonrpc":"2.0","id":"1","method":"tools/list"}`),
	})
	s.track(b, []*message{msg(t, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":{"progressToken":7}}}`)})
	if a.waiting != 2 || b.waiting != 1 {
		t.Fatalf("waiting %d and %d, want 2 and 1", a.waiting, b.waiting)
	}

	// Progress goes to the stream of the request with its token.
	routeLine(t, s, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":1}}`)
	if got := receive(t, b); !strings.Contains(got, `"progress":1`) {
		t.Errorf("b got %s", got)
	}
	routeLine(t, s, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p1","progress":2}}`)
	if got := receive(t, a); !strings.Contains(got, `"progress":2`) {
		t.Errorf("a got %s", got)
	}
	nothingOn(t, b, "b")

	// An answer goes to its request's stream; 1 and "1" are different.
	routeLine(t, s, `{"jsonrpc":"2.0","id":"1","result":{"tools":[]}}`)
	if got := receive(t, a); got != `{"jsonrpc":"2.0","id":"1","result":{"tools":[]}}` {
		t.Errorf("a got %s", got)
	}
	if isFinished(a) {
		t.Fatal("a finished with an answer still due")
	}
	routeLine(t, s, `{"jsonrpc":"2.0", "id": 1 ,"result":{"content":[]}}`) // spelt differently
	if got := receive(t, a); !strings.Contains(got, `"content":[]`) {
		t.Errorf("a got %s", got)
	}
	if !isFinished(a) {
		t.Error("a did not finish after its last answer")
	}
	nothingOn(t, b, "b")
	if isFinished(b) {
		t.Error("b finished without its answer")
	}

	// An answer for an id nobody waits for (again, or never asked) is
	// dropped.
	routeLine(t, s, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	routeLine(t, s, `{"jsonrpc":"2.0","id":99,"error":{"code":1,"message":"x"}}`)
	nothingOn(t, a, "a")
	nothingOn(t, b, "b")
	if len(s.backlog) != 0 {
		t.Errorf("answers went to the backlog: %q", s.backlog)
	}

	routeLine(t, s, `{"jsonrpc":"2.0","id":2,"error":{"code":-32000,"message":"failed"}}`)
	if got := receive(t, b); !strings.Contains(got, `"failed"`) {
		t.Errorf("b got %s", got)
	}
	waitFinished(t, b)
	if len(s.byID) != 0 {
		t.Errorf("ids left after every answer: %v", s.byID)
	}
}

func TestSessionRoutesServerMessages(t *testing.T) {
	const elicit = `{"jsonrpc":"2.0","id":"e1","method":"elicitation/create","params":{"message":"ok?"}}`
	const logMsg = `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}`
	const listChanged = `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`
	const strayProgress = `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"unknown","progress":1}}`

	t.Run("backlog", func(t *testing.T) {
		s := newSession("sid", Target{Bot: "bot", Server: "srv"})
		routeLine(t, s, elicit)
		routeLine(t, s, logMsg)
		if len(s.backlog) != 2 {
			t.Fatalf("backlog of %d, want 2", len(s.backlog))
		}
		get := newStream()
		if !s.attachStandalone(get) {
			t.Fatal("attachStandalone refused the first GET stream")
		}
		if got := receive(t, get); got != elicit {
			t.Errorf("first from the backlog: %s", got)
		}
		if got := receive(t, get); got != logMsg {
			t.Errorf("second from the backlog: %s", got)
		}
		if s.backlog != nil {
			t.Error("the backlog was not emptied")
		}
		if s.attachStandalone(newStream()) {
			t.Error("a second GET stream was attached")
		}
	})

	t.Run("backlog to a POST", func(t *testing.T) {
		s := newSession("sid", Target{Bot: "bot", Server: "srv"})
		routeLine(t, s, listChanged)
		post := newStream()
		s.track(post, []*message{msg(t, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)})
		if got := receive(t, post); got != listChanged {
			t.Errorf("POST stream got %s", got)
		}
	})

	t.Run("backlog cap", func(t *testing.T) {
		s := newSession("sid", Target{Bot: "bot", Server: "srv"})
		for range maxBacklog + 10 {
			routeLine(t, s, logMsg)
		}
		if len(s.backlog) != maxBacklog {
			t.Errorf("backlog of %d, want the cap %d", len(s.backlog), maxBacklog)
		}
	})

	t.Run("newest POST, then GET", func(t *testing.T) {
		s := newSession("sid", Target{Bot: "bot", Server: "srv"})
		older, newer := newStream(), newStream()
		s.track(older, []*message{msg(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"t1"}}}`)})
		s.track(newer, []*message{msg(t, `{"jsonrpc":"2.0","id":2,"method":"tools/call"}`)})
		routeLine(t, s, elicit)
		if got := receive(t, newer); got != elicit {
			t.Errorf("newest POST got %s", got)
		}
		routeLine(t, s, strayProgress) // a token nobody holds: like any other server message
		if got := receive(t, newer); got != strayProgress {
			t.Errorf("newest POST got %s", got)
		}
		nothingOn(t, older, "the older POST")

		get := newStream()
		if !s.attachStandalone(get) {
			t.Fatal("attachStandalone refused")
		}
		routeLine(t, s, elicit)
		if got := receive(t, get); got != elicit {
			t.Errorf("GET got %s", got)
		}
		nothingOn(t, newer, "the newest POST")
		// Progress with a known token still goes to its request.
		routeLine(t, s, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t1","progress":1}}`)
		receive(t, older)
		nothingOn(t, get, "GET")

		// The GET stream goes: back to the newest POST.
		s.untrack(get)
		if s.standalone != nil {
			t.Fatal("the GET stream stayed attached")
		}
		routeLine(t, s, logMsg)
		if got := receive(t, newer); got != logMsg {
			t.Errorf("newest POST got %s", got)
		}
		// The newest POST goes: to the one before.
		s.untrack(newer)
		routeLine(t, s, logMsg)
		if got := receive(t, older); got != logMsg {
			t.Errorf("older POST got %s", got)
		}
		// None left: the backlog.
		s.untrack(older)
		routeLine(t, s, logMsg)
		if len(s.backlog) != 1 || len(s.posts) != 0 {
			t.Errorf("backlog %d, posts %d; want 1, 0", len(s.backlog), len(s.posts))
		}
	})
}

func TestSessionUntrack(t *testing.T) {
	s := newSession("sid", Target{Bot: "bot", Server: "srv"})
	st := newStream()
	s.track(st, []*message{
		msg(t, `{"jsonrpc":"2.0","id":1,"method":"a","params":{"_meta":{"progressToken":"tok"}}}`),
		msg(t, `{"jsonrpc":"2.0","id":"two","method":"b"}`),
		msg(t, `{"jsonrpc":"2.0","id":3,"method":"c"}`),
	})
	routeLine(t, s, `{"jsonrpc":"2.0","id":"two","result":{}}`)
	receive(t, st)

	unanswered := s.untrack(st)
	var ids []string
	for _, id := range unanswered {
		ids = append(ids, string(id))
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"1", "3"}) {
		t.Errorf("unanswered %q, want 1 and 3", ids)
	}
	if len(s.byID) != 0 || len(s.byToken) != 0 || len(s.posts) != 0 {
		t.Errorf("left behind: ids %v, tokens %v, posts %d", s.byID, s.byToken, len(s.posts))
	}
	// A late answer or progress for it is not delivered to it.
	routeLine(t, s, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	nothingOn(t, st, "the untracked stream")
	if len(s.backlog) != 0 {
		t.Errorf("a late answer went to the backlog")
	}
	if again := s.untrack(st); len(again) != 0 {
		t.Errorf("a second untrack returned %q", again)
	}
}

// TestSessionUntrackKeepsReusedID: when a later POST reuses a request id
// (which the client should not do while it is unanswered), the earlier
// stream's untrack leaves the later one's routing alone.
func TestSessionUntrackKeepsReusedID(t *testing.T) {
	s := newSession("sid", Target{Bot: "bot", Server: "srv"})
	a, b := newStream(), newStream()
	s.track(a, []*message{msg(t, `{"jsonrpc":"2.0","id":1,"method":"a","params":{"_meta":{"progressToken":"t"}}}`)})
	s.track(b, []*message{msg(t, `{"jsonrpc":"2.0","id":1,"method":"a","params":{"_meta":{"progressToken":"t"}}}`)})
	if got := s.untrack(a); len(got) != 0 {
		t.Errorf("untrack of the earlier stream returned %q, whose answer now belongs to the later", got)
	}
	routeLine(t, s, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}`)
	receive(t, b)
	routeLine(t, s, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	receive(t, b)
	waitFinished(t, b)
}

func TestSessionEnd(t *testing.T) {
	s := newSession("sid", Target{Bot: "bot", Server: "srv"})
	a, b, get := newStream(), newStream(), newStream()
	s.attachStandalone(get)
	s.track(a, []*message{
		msg(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call"}`),
		msg(t, `{"jsonrpc":"2.0","id":"x","method":"tools/call"}`),
	})
	s.track(b, []*message{msg(t, `{"jsonrpc":"2.0","id":2,"method":"tools/call"}`)})
	routeLine(t, s, `{"jsonrpc":"2.0","id":2,"result":{}}`)
	receive(t, b)
	waitFinished(t, b)

	reason := errors.New("MCP server bot/srv exited with code 1; last stderr lines:\nboom")
	s.end(reason)
	if !errors.Is(s.endedErr(), reason) {
		t.Errorf("endedErr = %v", s.endedErr())
	}
	select {
	case <-s.endedCh:
	default:
		t.Error("endedCh is open")
	}
	got := map[string]*message{}
	for range 2 {
		line := receive(t, a)
		m := msg(t, line)
		if !m.isResponse() || m.Error == nil || m.Error.Code != codeServerGone || m.Error.Message != reason.Error() {
			t.Errorf("a got %s", line)
		}
		got[idKey(m.ID)] = m
	}
	if got["1"] == nil || got[`"x"`] == nil {
		t.Errorf("answered %v, want 1 and \"x\"", got)
	}
	waitFinished(t, a)
	nothingOn(t, b, "the answered stream")
	nothingOn(t, get, "the GET stream")

	s.end(errors.New("again")) // a second end changes nothing
	if s.endedErr() != reason {
		t.Errorf("endedErr after a second end = %v", s.endedErr())
	}
	nothingOn(t, a, "a")
}

// TestSessionTrackAfterEnd covers a POST that checked the session before
// its process ended and tracked its requests after: they are answered
// with the reason too, rather than waiting for the client to give up.
func TestSessionTrackAfterEnd(t *testing.T) {
	s := newSession("sid", Target{Bot: "bot", Server: "srv"})
	reason := errors.New("MCP server bot/srv exited with code 2")
	s.end(reason)
	st := newStream()
	s.track(st, []*message{
		msg(t, `{"jsonrpc":"2.0","id":5,"method":"tools/call"}`),
		msg(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`),
	})
	line := receive(t, st)
	if m := msg(t, line); string(m.ID) != "5" || m.Error == nil || m.Error.Message != reason.Error() {
		t.Errorf("got %s", line)
	}
	waitFinished(t, st)
	if got := s.untrack(st); len(got) != 0 {
		t.Errorf("unanswered after the end: %q", got)
	}
}

func TestSessionIdle(t *testing.T) {
	s := newSession("sid", Target{Bot: "bot", Server: "srv"})
	done := s.busy()
	if d := s.idleSince(time.Now().Add(time.Hour)); d != 0 {
		t.Errorf("idle %v while busy", d)
	}
	done()
	if d := s.idleSince(time.Now().Add(time.Hour)); d < 59*time.Minute {
		t.Errorf("idle %v an hour after the last request", d)
	}
}

func TestStderrTail(t *testing.T) {
	tail := newStderrTail()
	if lines, total := tail.lines(10); lines != nil || total != 0 {
		t.Errorf("empty tail: %q, %d", lines, total)
	}
	if tail.suffix() != "" {
		t.Errorf("empty tail's suffix %q", tail.suffix())
	}

	var written int64
	for i := range 10000 {
		n, _ := fmt.Fprintf(tail, "line %05d of the server\n", i) // 24 bytes
		written += int64(n)
	}
	if len(tail.buf) != stderrTailBytes {
		t.Errorf("kept %d bytes, want %d", len(tail.buf), stderrTailBytes)
	}
	lines, total := tail.lines(3)
	if total != written {
		t.Errorf("total %d, want %d", total, written)
	}
	if want := []string{"line 09997 of the server", "line 09998 of the server", "line 09999 of the server"}; !slices.Equal(lines, want) {
		t.Errorf("lines(3) = %q, want %q", lines, want)
	}
	all, _ := tail.lines(1 << 20)
	if len(all) > stderrTailBytes/24+1 || all[len(all)-1] != "line 09999 of the server" {
		t.Errorf("lines(all): %d lines ending %q", len(all), all[len(all)-1])
	}
	if lines, _ := tail.lines(0); lines != nil {
		t.Errorf("lines(0) = %q", lines)
	}

	// One write larger than the whole tail.
	big := strings.Repeat("z", stderrTailBytes+100) + "\nend\n"
	_, _ = tail.Write([]byte(big))
	if len(tail.buf) != stderrTailBytes || !strings.HasSuffix(string(tail.buf), "\nend\n") {
		t.Errorf("after a huge write: %d bytes", len(tail.buf))
	}

	// Invalid UTF-8 is made valid.
	_, _ = tail.Write([]byte("bad \xff byte\n"))
	if lines, _ := tail.lines(1); lines[0] != "bad \uFFFD byte" {
		t.Errorf("last line %q", lines[0])
	}
}

func TestStderrTailSuffix(t *testing.T) {
	tail := newStderrTail()
	tail.note("starting %s", "srv")
	_, _ = tail.Write([]byte("only line"))
	if got := tail.suffix(); got != "; last stderr lines:\nonly line" {
		t.Errorf("suffix = %q", got)
	}

	tail.note("exit") // after a line without its newline
	if lines, _ := tail.lines(2); !slices.Equal(lines, []string{"only line", "[berth] exit"}) {
		t.Errorf("a note after a line without newline: %q", lines)
	}
	for i := range 8 {
		fmt.Fprintf(tail, "err %d\n", i)
		tail.note("exit %d", i)
	}
	fmt.Fprintf(tail, "err 8") // the server's last words, without a newline
	tail.note("exit 8")
	got := tail.suffix()
	if strings.Contains(got, "[berth]") {
		t.Errorf("suffix holds berth's notes: %q", got)
	}
	if want := "; last stderr lines:\nerr 4\nerr 5\nerr 6\nerr 7\nerr 8"; got != want {
		t.Errorf("suffix = %q, want %q", got, want)
	}
	// ... but lines has them.
	lines, _ := tail.lines(2)
	if !slices.Equal(lines, []string{"err 8", "[berth] exit 8"}) {
		t.Errorf("lines(2) = %q", lines)
	}

	notes := newStderrTail()
	for range 3 {
		notes.note("restart")
	}
	if got := notes.suffix(); got != "" {
		t.Errorf("suffix of notes only = %q", got)
	}
}

func TestCapResult(t *testing.T) {
	small := json.RawMessage(`{"content":[{"type":"text","text":"hello"}],"isError":true}`)
	res, err := capResult(small, 1000, "bot/srv/tool")
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError || len(res.Content) != 1 {
		t.Fatalf("small result: %+v", res)
	}
	if tc, ok := res.Content[0].(mcp.TextContent); !ok || tc.Text != "hello" {
		t.Errorf("small result content %#v", res.Content[0])
	}

	// Exactly at the cap is not cut.
	if res, err := capResult(small, len(small), "x"); err != nil || res.Content[0].(mcp.TextContent).Text != "hello" {
		t.Errorf("at the cap: %v, %+v", err, res)
	}

	if _, err := capResult(json.RawMessage(`{"isError":true}`), 1000, "bot/srv/tool"); err == nil || !strings.Contains(err.Error(), "bot/srv/tool") {
		t.Errorf("a result without content: %v", err)
	}
	if _, err := capResult(json.RawMessage(`not json`), 1000, "bot/srv/tool"); err == nil {
		t.Error("a malformed result was accepted")
	}

	for _, isError := range []bool{false, true} {
		const max = 1000
		text := strings.Repeat("é", 2*max) // two bytes a rune: a cut may split one
		raw, _ := json.Marshal(map[string]any{"content": []any{
			map[string]any{"type": "image", "data": strings.Repeat("A", 100), "mimeType": "image/png"},
			map[string]any{"type": "text", "text": text},
			map[string]any{"type": "text", "text": "more"},
		}, "isError": isError})
		res, err := capResult(raw, max, "bot/srv/tool")
		if err != nil {
			t.Fatal(err)
		}
		if res.IsError != isError || len(res.Content) != 1 {
			t.Fatalf("cut result: isError %v, %d contents", res.IsError, len(res.Content))
		}
		got := res.Content[0].(mcp.TextContent).Text
		body, marker, ok := strings.Cut(got, "\n[berth: ")
		if !ok {
			t.Fatalf("no marker in %q", got[len(got)-200:])
		}
		if len(body) > max || !strings.HasPrefix(text, body) || len(body) < max-1 {
			t.Errorf("kept %d bytes of text, want the first %d (whole runes)", len(body), max)
		}
		for _, want := range []string{"bot/srv/tool", fmt.Sprint(len(raw)), fmt.Sprintf("cap of %d", max), "cut"} {
			if !strings.Contains(marker, want) {
				t.Errorf("marker %q lacks %q", marker, want)
			}
		}
	}

	// Over the cap and malformed: only the marker.
	res, err = capResult(json.RawMessage(`{"content":`+strings.Repeat("[", 100)), 10, "x")
	if err != nil || !strings.HasPrefix(res.Content[0].(mcp.TextContent).Text, "\n[berth: ") {
		t.Errorf("malformed oversized result: %v, %+v", err, res)
	}
}

func TestSessionReusedID(t *testing.T) {
	s := newSession("s", Target{Bot: "bot", Server: "fx"})
	first := []*message{msg(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call"}`)}
	if id, reused := s.reusedID(first); reused {
		t.Fatalf("fresh id %s reported reused", id)
	}
	s.track(newStream(), first)
	for name, batch := range map[string][]string{
		"pending in the session": {`{"jsonrpc":"2.0","id":1,"method":"ping"}`},
		"twice in one batch":     {`{"jsonrpc":"2.0","id":"a","method":"ping"}`, `{"jsonrpc":"2.0","id":"a","method":"ping"}`},
	} {
		var msgs []*message
		for _, line := range batch {
			msgs = append(msgs, msg(t, line))
		}
		if _, reused := s.reusedID(msgs); !reused {
			t.Errorf("%s: not reported", name)
		}
	}
	// The same number as a string, a notification, and an answered id are fine.
	routeLine(t, s, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	ok := []*message{
		msg(t, `{"jsonrpc":"2.0","id":"1","method":"ping"}`),
		msg(t, `{"jsonrpc":"2.0","method":"notifications/cancelled"}`),
		msg(t, `{"jsonrpc":"2.0","id":1,"method":"ping"}`),
	}
	if id, reused := s.reusedID(ok); reused {
		t.Errorf("id %s reported reused", id)
	}
}
