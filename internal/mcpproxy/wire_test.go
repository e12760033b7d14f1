package mcpproxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestParseMessage(t *testing.T) {
	type kind int
	const (
		refused kind = iota
		request
		notification
		response
	)
	for _, tc := range []struct {
		line string
		want kind
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, request},
		{`{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"x"}}`, request},
		{`{"jsonrpc":"2.0","id":0,"method":"ping"}`, request},
		{`{"jsonrpc":"2.0","method":"notifications/initialized"}`, notification},
		{`{"jsonrpc":"2.0","id":null,"method":"notifications/progress","params":{}}`, notification},
		{`{"jsonrpc":"2.0","id":1,"result":{}}`, response},
		{`{"jsonrpc":"2.0","id":"x","error":{"code":-32601,"message":"no"}}`, response},
		{`{"jsonrpc":"2.0","id":7}`, response}, // neither result nor error: still an answer to route
		{` {"jsonrpc":"2.0","id":1,"result":null} `, response},

		{`Server listening on stdio`, refused},
		{`[info] starting`, refused},
		{``, refused},
		{`null`, refused},
		{`[]`, refused},
		{`[{"jsonrpc":"2.0","id":1,"method":"x"}]`, refused}, // a batch is not a line of a stdio server
		{`"2.0"`, refused},
		{`{"id":1,"method":"x"}`, refused},
		{`{"jsonrpc":"1.0","id":1,"method":"x"}`, refused},
		{`{"jsonrpc":2.0,"id":1,"method":"x"}`, refused},
		{`{"jsonrpc":"2.0"}`, refused},
		{`{"jsonrpc":"2.0","id":null}`, refused},
		{`{"jsonrpc":"2.0","result":{}}`, refused},
		{`{"jsonrpc":"2.0","id":1,"method":"x"`, refused},
		{`{"jsonrpc":"2.0","id":1,"error":"boom"}`, refused},
		{`{"jsonrpc":"2.0","id":1,"method":7}`, refused},
	} {
		m, err := parseMessage([]byte(tc.line))
		if tc.want == refused {
			if err == nil {
				t.Errorf("parseMessage(%s) accepted %+v", tc.line, m)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseMessage(%s): %v", tc.line, err)
			continue
		}
		got := []bool{m.isRequest(), m.isNotification(), m.isResponse()}
		want := []bool{tc.want == request, tc.want == notification, tc.want == response}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("parseMessage(%s): request/notification/response = %v, want %v", tc.line, got, want)
				break
			}
		}
	}
}

func TestParseMessageKeepsRaw(t *testing.T) {
	m, err := parseMessage([]byte(`{"jsonrpc":"2.0","id": "a b" ,"method":"m","params":{"z":1, "a":[1,2]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(m.ID) != `"a b"` || string(m.Params) != `{"z":1, "a":[1,2]}` {
		t.Errorf("id %s, params %s: want them as sent", m.ID, m.Params)
	}
}

func TestIDKey(t *testing.T) {
	if idKey(json.RawMessage(`7`)) == idKey(json.RawMessage(`"7"`)) {
		t.Error(`7 and "7" have the same key`)
	}
	if idKey(json.RawMessage(`7`)) == idKey(json.RawMessage(`7.0`)) {
		t.Error(`7 and 7.0 have the same key`) // different ids by their spelling
	}
	for _, same := range [][2]string{
		{`7`, ` 7 `},
		{`"a"`, "\t\"a\"\n"},
		{`{"a":1,"b":[1,2]}`, `{ "a" : 1, "b" : [ 1 , 2 ] }`},
	} {
		if a, b := idKey(json.RawMessage(same[0])), idKey(json.RawMessage(same[1])); a != b {
			t.Errorf("idKey(%s) = %q, idKey(%s) = %q: want the same", same[0], a, same[1], b)
		}
	}
	if got := idKey(json.RawMessage(`{bad`)); got != `{bad` {
		t.Errorf("idKey of malformed JSON = %q, want it as is", got)
	}
	if idKey(json.RawMessage(`"a b"`)) == idKey(json.RawMessage(`"ab"`)) {
		t.Error("spaces inside a string id were dropped")
	}
}

// readAll reads every line of lr until an error other than errLineTooLong;
// a too-long line is recorded as "<too long>".
func readAll(t *testing.T, lr *lineReader) []string {
	t.Helper()
	var out []string
	for range 1000 {
		line, err := lr.next()
		switch {
		case errors.Is(err, errLineTooLong):
			out = append(out, "<too long>")
		case errors.Is(err, io.EOF):
			return out
		case err != nil:
			t.Fatalf("next: %v", err)
		default:
			out = append(out, string(line))
		}
	}
	t.Fatal("no end of input after 1000 lines")
	return nil
}

func TestLineReader(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"\n", []string{""}},
		{"a\nb\n", []string{"a", "b"}},
		{"a\nb", []string{"a", "b"}}, // last line without newline
		{"a\r\nb\r\n", []string{"a", "b"}},
		{"a\r\r\n", []string{"a"}},
		{"a\rb\n", []string{"a\rb"}}, // a lone CR inside a line is data
		{"\n\n", []string{"", ""}},
		{`{"jsonrpc":"2.0"}` + "\n" + `x`, []string{`{"jsonrpc":"2.0"}`, "x"}},
	} {
		got := readAll(t, newLineReader(strings.NewReader(tc.in)))
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("lines of %q = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestLineReaderChunks reads lines longer than the buffer, which come in
// several ReadSlice chunks.
func TestLineReaderChunks(t *testing.T) {
	long := strings.Repeat("0123456789", 1000)
	in := long + "\n" + "short\n" + long + "\r\n" + long
	lr := &lineReader{r: bufio.NewReaderSize(strings.NewReader(in), 16)}
	got := readAll(t, lr)
	want := []string{long, "short", long, long}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
	}
}

// TestLineReaderCap runs the real cap: a line of exactly MaxMessageBytes
// passes (with "\n" or "\r\n"), one byte more is skipped whole and the
// reader stays in step, at the end of the input too.
func TestLineReaderCap(t *testing.T) {
	if testing.Short() {
		t.Skip("reads about 64 MiB")
	}
	exact := bytes.Repeat([]byte("x"), MaxMessageBytes)
	over := bytes.Repeat([]byte("y"), MaxMessageBytes+1)
	var in bytes.Buffer
	in.WriteString("first\n")
	in.Write(exact)
	in.WriteString("\n")
	in.Write(over)
	in.WriteString("\n")
	in.WriteString("after\n")
	in.Write(exact)
	in.WriteString("\r\n")
	in.Write(over) // the last line, without a newline
	lr := newLineReader(bytes.NewReader(in.Bytes()))

	type result struct {
		n   int
		err error
	}
	var got []result
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, errLineTooLong) {
			t.Fatal(err)
		}
		if len(line) > MaxMessageBytes {
			t.Errorf("a line of %d bytes passed the cap of %d", len(line), MaxMessageBytes)
		}
		got = append(got, result{len(line), err})
		if len(got) > 10 {
			t.Fatal("no end of input")
		}
	}
	want := []result{{5, nil}, {MaxMessageBytes, nil}, {0, errLineTooLong}, {5, nil}, {MaxMessageBytes, nil}, {0, errLineTooLong}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].n != want[i].n || !errors.Is(got[i].err, want[i].err) && got[i].err != want[i].err {
			t.Errorf("line %d: %d bytes, err %v; want %d bytes, err %v", i, got[i].n, got[i].err, want[i].n, want[i].err)
		}
	}
}

func TestEncodeLineAndErrorResponse(t *testing.T) {
	line, err := encodeLine(errorResponse(json.RawMessage(`"id-1"`), codeServerGone, "gone"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("%q is not one line", line)
	}
	m, err := parseMessage(bytes.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	if !m.isResponse() || string(m.ID) != `"id-1"` || m.Error == nil || m.Error.Code != codeServerGone || m.Error.Message != "gone" {
		t.Errorf("error response decoded as %+v", m)
	}
}

func TestPreview(t *testing.T) {
	if got := preview([]byte("short")); got != "short" {
		t.Errorf("preview(short) = %q", got)
	}
	if got := preview(bytes.Repeat([]byte("a"), 500)); len(got) != 200+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("preview of 500 bytes = %d bytes", len(got))
	}
}

// FuzzParseBody checks that a POST body never panics the parser, and that
// whatever it accepts is JSON-RPC 2.0 that routing can classify.
func FuzzParseBody(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2099-01-01"}}`))
	f.Add([]byte(`[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"},{"jsonrpc":"2.0","id":"x","result":{}}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(` [ ] `))
	f.Add([]byte(`[null]`))
	f.Add([]byte(`[[{"jsonrpc":"2.0","id":1,"method":"a"}]]`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":{"a":1},"error":{"code":1,"message":"m","data":[1]}}`))
	f.Add([]byte("\ufeff{}"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, err := parseBody(body)
		if err != nil {
			if msgs != nil {
				t.Fatalf("error %v with %d messages", err, len(msgs))
			}
			return
		}
		if len(msgs) == 0 {
			t.Fatal("accepted a body without messages")
		}
		for _, m := range msgs {
			if m == nil || m.JSONRPC != "2.0" {
				t.Fatalf("accepted %+v", m)
			}
			n := 0
			for _, is := range []bool{m.isRequest(), m.isNotification(), m.isResponse()} {
				if is {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%+v is %d of request, notification and response", m, n)
			}
			// What routing does with it must not panic either.
			_ = idKey(m.ID)
			_ = progressToken(m.Params)
			if m.Method == "initialize" {
				_ = capProtocolVersion(m.Params)
			}
		}
	})
}

// FuzzLineReader reads arbitrary output of a server, through a small
// buffer so that lines come in several chunks, and compares the lines with
// a plain split.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nb\r\nc"))
	f.Add([]byte("\n\n\r\n"))
	f.Add([]byte(strings.Repeat("x", 40) + "\n" + strings.Repeat("y", 17)))
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}` + "\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var want []string
		if len(data) > 0 {
			parts := strings.Split(string(data), "\n")
			if parts[len(parts)-1] == "" {
				parts = parts[:len(parts)-1] // the input ended with a newline
			}
			for _, p := range parts {
				want = append(want, strings.TrimRight(p, "\r"))
			}
		}
		for _, size := range []int{16, 64 << 10} {
			lr := &lineReader{r: bufio.NewReaderSize(bytes.NewReader(data), size)}
			var got []string
			for {
				line, err := lr.next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("next: %v", err) // no line here is near the cap
				}
				if len(line) > MaxMessageBytes {
					t.Fatalf("a line of %d bytes", len(line))
				}
				got = append(got, string(line))
				if len(got) > len(data)+1 {
					t.Fatal("more lines than bytes")
				}
			}
			if len(got) != len(want) {
				t.Fatalf("buffer %d: %d lines %q, want %d %q", size, len(got), got, len(want), want)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("buffer %d: line %d = %q, want %q", size, i, got[i], want[i])
				}
			}
		}
	})
}
