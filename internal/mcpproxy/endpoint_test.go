package mcpproxy

import (
	"encoding/json"
	"testing"
)

func TestCapProtocolVersion(t *testing.T) {
	version := func(t *testing.T, params json.RawMessage) string {
		t.Helper()
		var p struct {
			V string `json:"protocolVersion"`
		}
		if err := json.Unmarshal(params, &p); err != nil {
			t.Fatalf("%s: %v", params, err)
		}
		return p.V
	}
	for _, newer := range []string{"2026-01-01", "2099-12-31", "2025-11-26"} {
		in := json.RawMessage(`{"protocolVersion":"` + newer + `","capabilities":{"elicitation":{}},"clientInfo":{"name":"c","version":"1"}}`)
		out := capProtocolVersion(in)
		if v := version(t, out); v != newestSessionVersion {
			t.Errorf("%s → %s, want %s", newer, v, newestSessionVersion)
		}
		// The rest passes through.
		var p map[string]json.RawMessage
		if err := json.Unmarshal(out, &p); err != nil {
			t.Fatal(err)
		}
		if string(p["capabilities"]) != `{"elicitation":{}}` || string(p["clientInfo"]) != `{"name":"c","version":"1"}` {
			t.Errorf("other params changed: %s", out)
		}
	}
	for _, same := range []string{
		`{"protocolVersion":"` + newestSessionVersion + `","capabilities":{}}`,
		`{"protocolVersion":"2025-06-18","capabilities":{}}`,
		`{"protocolVersion":"2024-11-05"}`,
		// Malformed: passed on for the server to refuse.
		`{"protocolVersion":20991231}`,
		`{"protocolVersion":null}`,
		`{"capabilities":{}}`,
		`[]`,
		`"2099-01-01"`,
		`null`,
		`{bad`,
		``,
	} {
		if out := capProtocolVersion(json.RawMessage(same)); string(out) != same {
			t.Errorf("%s changed to %s", same, out)
		}
	}
}

func TestParseBody(t *testing.T) {
	msgs, err := parseBody([]byte(` {"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}` + "\n"))
	if err != nil || len(msgs) != 1 || !msgs[0].isRequest() || msgs[0].Method != "initialize" {
		t.Fatalf("single: %v, %+v", err, msgs)
	}

	msgs, err = parseBody([]byte("\n [ {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"}, {\"jsonrpc\":\"2.0\",\"method\":\"b\"},\n" +
		`{"jsonrpc":"2.0","id":"s1","result":{}} ] `))
	if err != nil || len(msgs) != 3 {
		t.Fatalf("batch: %v, %d messages", err, len(msgs))
	}
	if !msgs[0].isRequest() || msgs[0].Method != "a" || !msgs[1].isNotification() || !msgs[2].isResponse() {
		t.Errorf("batch classified as %+v %+v %+v", msgs[0], msgs[1], msgs[2])
	}

	for _, bad := range []string{
		``, ` `, `[]`, ` [ ] `, `[`, `{`, `null`, `[null]`, `hello`,
		`{"jsonrpc":"1.0","id":1,"method":"a"}`,
		`[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"1.0","id":2,"method":"b"}]`,
		`[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0"}]`,
		`[[{"jsonrpc":"2.0","id":1,"method":"a"}]]`,
		`{"jsonrpc":"2.0","id":1,"method":"a"} {"jsonrpc":"2.0","id":2,"method":"b"}`,
	} {
		if msgs, err := parseBody([]byte(bad)); err == nil {
			t.Errorf("parseBody(%q) accepted %d messages", bad, len(msgs))
		}
	}
}

func TestProgressToken(t *testing.T) {
	for _, tc := range []struct {
		params, want string
	}{
		// A request's token.
		{`{"name":"x","_meta":{"progressToken":"tok-1"}}`, `"tok-1"`},
		{`{"_meta":{"progressToken":42,"other":true}}`, `42`},
		{`{"_meta":{"progressToken": "spaced" }}`, `"spaced"`},
		// A progress notification's token.
		{`{"progressToken":"tok-1","progress":1,"total":10}`, `"tok-1"`},
		{`{"progressToken":42,"progress":0.5}`, `42`},
		// None.
		{``, ``},
		{`{}`, ``},
		{`{"_meta":{}}`, ``},
		{`{"_meta":null}`, ``},
		{`{"_meta":"tok"}`, ``},
		{`[1,2]`, ``},
		{`{bad`, ``},
	} {
		if got := progressToken(json.RawMessage(tc.params)); got != tc.want {
			t.Errorf("progressToken(%s) = %q, want %q", tc.params, got, tc.want)
		}
	}
	// A request's token and the notifications for it have the same key,
	// and 42 is not "42".
	req := progressToken(json.RawMessage(`{"_meta":{"progressToken":42}}`))
	if note := progressToken(json.RawMessage(`{"progressToken": 42, "progress": 3}`)); note != req {
		t.Errorf("request token %q, notification token %q", req, note)
	}
	if progressToken(json.RawMessage(`{"progressToken":"42"}`)) == req {
		t.Error(`42 and "42" are the same token`)
	}
}
