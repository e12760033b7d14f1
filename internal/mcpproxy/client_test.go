package mcpproxy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestWithProgressToken(t *testing.T) {
	token := json.RawMessage(`"berth-3"`)
	params := map[string]any{
		"name":  "x",
		"_meta": map[string]any{"trace": "abc", "progressToken": "old"},
	}
	out := withProgressToken(params, token)
	raw, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"_meta":{"progressToken":"berth-3","trace":"abc"},"name":"x"}`; string(raw) != want {
		t.Errorf("got %s, want %s", raw, want)
	}
	// The caller's params are left alone.
	if params["_meta"].(map[string]any)["progressToken"] != "old" || len(params) != 2 {
		t.Errorf("params changed: %v", params)
	}

	for _, p := range []map[string]any{nil, {}, {"_meta": "not a map"}} {
		raw, _ := json.Marshal(withProgressToken(p, json.RawMessage(`7`)))
		if !strings.Contains(string(raw), `"_meta":{"progressToken":7}`) {
			t.Errorf("withProgressToken(%v) = %s", p, raw)
		}
	}
}

func TestRPCClientHandle(t *testing.T) {
	c := newRPCClient()
	ch := make(chan *message, 1)
	c.pending["1"] = ch
	var got []string
	c.progress[`"berth-1"`] = func(raw json.RawMessage) { got = append(got, string(raw)) }

	if !c.handle(msg(t, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken": "berth-1" ,"progress":1}}`)) {
		t.Error("progress not handled")
	}
	if !c.handle(msg(t, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"other","progress":1}}`)) {
		t.Error("progress for another token not taken")
	}
	if len(got) != 1 || !strings.Contains(got[0], `"progress":1`) {
		t.Errorf("progress passed on: %q", got)
	}

	if !c.handle(msg(t, `{"jsonrpc":"2.0","id":"1","result":{}}`)) || len(ch) != 0 {
		t.Error(`"1" answered the call with id 1`)
	}
	if !c.handle(msg(t, `{"jsonrpc":"2.0","id": 1 ,"result":{"ok":true}}`)) {
		t.Error("answer not handled")
	}
	if m := <-ch; string(m.Result) != `{"ok":true}` {
		t.Errorf("answer %s", m.Result)
	}
	if len(c.pending) != 0 {
		t.Error("the answered call is still pending")
	}
	if !c.handle(msg(t, `{"jsonrpc":"2.0","id":1,"result":{}}`)) {
		t.Error("a second answer was not taken")
	}

	for _, line := range []string{
		`{"jsonrpc":"2.0","id":5,"method":"roots/list"}`,
		`{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`,
	} {
		if c.handle(msg(t, line)) {
			t.Errorf("%s was taken as an answer", line)
		}
	}
}

func TestRPCClientFail(t *testing.T) {
	c := newRPCClient()
	a, b := make(chan *message, 1), make(chan *message, 1)
	c.pending["1"], c.pending["2"] = a, b
	c.fail(errors.New("server exited"))
	for _, ch := range []chan *message{a, b} {
		m := <-ch
		if m.Error == nil || m.Error.Code != codeServerGone || m.Error.Message != "server exited" {
			t.Errorf("failed call got %+v", m)
		}
	}
	if len(c.pending) != 0 {
		t.Error("calls still pending")
	}
	if _, err := c.call(t.Context(), "ping", nil, nil, nil); err == nil || err.Error() != "server exited" {
		t.Errorf("call after fail: %v", err)
	}
}

func TestRPCClientAsker(t *testing.T) {
	c := newRPCClient()
	if c.asker() != nil {
		t.Fatal("an asker with no call in flight")
	}
	handler := func(name string) RequestHandler {
		return func(string, json.RawMessage) (any, error) { return name, nil }
	}
	c.askers = []*asker{{handle: handler("older")}, {handle: handler("newer")}}
	if got, _ := c.asker()("elicitation/create", nil); got != "newer" {
		t.Errorf("asker is the %v call's, want the newest's", got)
	}
}
