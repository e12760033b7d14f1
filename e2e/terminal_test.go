package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

type chunkOut struct {
	Output     string `json:"output"`
	NextOffset int64  `json:"next_offset"`
	Total      int64  `json:"total"`
}

// send types text and waits for pattern in the output.
func send(t *testing.T, c mcpClient, bot, id, text, pattern string) chunkOut {
	t.Helper()
	var out chunkOut
	mustCall(t, c, "terminal_send", map[string]any{"bot_id": bot, "terminal_id": id, "text": text, "wait_pattern": pattern, "timeout_seconds": 10}).decode(t, &out)
	if !strings.Contains(out.Output, strings.Trim(pattern, "^$")) {
		t.Fatalf("after %q: output %q lacks %q", text, out.Output, pattern)
	}
	return out
}

// TestTerminal: echo, stty size after resize, reattach from a second
// session, reading history from offsets, and closing.
func TestTerminal(t *testing.T) {
	e := newEnv(t)
	b := e.serveHTTP()
	c1 := e.httpMcpgo(b)
	mustCall(t, c1, "workspace_create", map[string]any{"bot_id": "tty"})
	var term struct {
		ID   string `json:"id"`
		Rows int    `json:"rows"`
		Cols int    `json:"cols"`
	}
	mustCall(t, c1, "terminal_open", map[string]any{"bot_id": "tty", "rows": 30, "cols": 90}).decode(t, &term)
	if term.ID == "" || term.Rows != 30 || term.Cols != 90 {
		t.Fatalf("open: %+v", term)
	}
	send(t, c1, "tty", term.ID, "echo hello-$((6*7))\n", "hello-42")
	send(t, c1, "tty", term.ID, "stty size\n", "30 90")
	mustCall(t, c1, "terminal_resize", map[string]any{"bot_id": "tty", "terminal_id": term.ID, "rows": 40, "cols": 100})
	send(t, c1, "tty", term.ID, "stty size\n", "40 100")
	send(t, c1, "tty", term.ID, "export SECRET=abc123\n", "$")

	// A second session, with the other client library, reattaches.
	c2 := e.httpSDK(b)
	var list struct {
		Terminals []struct {
			ID string `json:"id"`
		} `json:"terminals"`
	}
	mustCall(t, c2, "terminal_list", map[string]any{"bot_id": "tty"}).decode(t, &list)
	if len(list.Terminals) != 1 || list.Terminals[0].ID != term.ID {
		t.Fatalf("list from second session: %+v", list)
	}
	send(t, c2, "tty", term.ID, "echo $SECRET\n", "abc123")
	var history chunkOut
	mustCall(t, c2, "terminal_read", map[string]any{"bot_id": "tty", "terminal_id": term.ID, "offset": 0}).decode(t, &history)
	if !strings.Contains(history.Output, "hello-42") || !strings.Contains(history.Output, "abc123") {
		t.Fatalf("history: %q", history.Output)
	}

	// People attach over a WebSocket.
	wsURL := "ws" + strings.TrimPrefix(strings.TrimSuffix(b.URL, "/mcp"), "http") + "/bots/tty/terminal/ws?terminal_id=" + term.ID
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, resp, err := websocket.Dial(ctx, wsURL, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("websocket without a token: %v %v", err, resp)
	}
	ws, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + b.Token}}})
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	defer ws.CloseNow()
	resize, _ := json.Marshal(map[string]any{"type": "resize", "rows": 50, "cols": 120})
	if err := ws.Write(ctx, websocket.MessageText, resize); err != nil {
		t.Fatal(err)
	}
	if err := ws.Write(ctx, websocket.MessageBinary, []byte("stty size; echo ws-$((2+3))\n")); err != nil {
		t.Fatal(err)
	}
	var seen strings.Builder
	for !strings.Contains(seen.String(), "50 120") || !strings.Contains(seen.String(), "ws-5") {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("websocket read: %v (so far %q)", err, seen.String())
		}
		seen.Write(data)
	}
	ws.Close(websocket.StatusNormalClosure, "")

	// Reattaching from a read's next_offset first carries what was written
	// after the read: nothing falls between the history and the live stream.
	var upTo chunkOut
	mustCall(t, c2, "terminal_read", map[string]any{"bot_id": "tty", "terminal_id": term.ID, "offset": 0}).decode(t, &upTo)
	send(t, c2, "tty", term.ID, "echo gap-$((3+4))\n", "gap-7")
	auth := &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + b.Token}}}
	if _, resp, err := websocket.Dial(ctx, wsURL+"&offset=-1", auth); err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("websocket with a negative offset: %v %v", err, resp)
	}
	ws, _, err = websocket.Dial(ctx, wsURL+"&offset="+strconv.FormatInt(upTo.NextOffset, 10), auth)
	if err != nil {
		t.Fatalf("websocket from an offset: %v", err)
	}
	seen.Reset()
	for !strings.Contains(seen.String(), "gap-7\r\n") {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("websocket read from offset %d: %v (so far %q)", upTo.NextOffset, err, seen.String())
		}
		seen.Write(data)
	}
	if strings.Contains(seen.String(), "ws-5") {
		t.Fatalf("reattached from offset %d, got what the read already had: %q", upTo.NextOffset, seen.String())
	}
	ws.Close(websocket.StatusNormalClosure, "")

	mustCall(t, c2, "terminal_close", map[string]any{"bot_id": "tty", "terminal_id": term.ID})
	mustCall(t, c1, "terminal_list", map[string]any{"bot_id": "tty"}).decode(t, &list)
	if len(list.Terminals) != 0 {
		t.Fatalf("closed terminal still listed: %+v", list)
	}
	if res := mustCall(t, c1, "terminal_send", map[string]any{"bot_id": "tty", "terminal_id": term.ID, "text": "x"}); !res.IsError {
		t.Fatalf("send to a closed terminal: %+v", res)
	}
}
