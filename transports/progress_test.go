package transports

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestProgressLogSSE feeds an SSE stream in pieces that split events and
// lines, as a ResponseWriter may see them, and checks that a wait for a
// call's last progress returns once, and only once, that event is flushed.
func TestProgressLogSSE(t *testing.T) {
	log := newProgressLog()
	rec := httptest.NewRecorder()
	w := &sseRecorder{ResponseWriter: rec, log: log, session: "s1"}
	w.Header().Set("Content-Type", "text/event-stream")
	writeAll := func(parts ...string) {
		for _, p := range parts {
			if _, err := io.WriteString(w, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeAll("id: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":7,\"progress\":1,\"total\":2}}\n\n")

	waited := make(chan struct{})
	go func() {
		log.waitWritten(context.Background(), "s1", float64(7), 2)
		close(waited)
	}()
	// Another session's and another token's progress do not end the wait.
	log.record("s2", []byte(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":2}}`))
	writeAll("data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"7\",\"progress\":2}}\n\n")
	// Split in the middle of the data line.
	writeAll("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/prog", "ress\",\"params\":{\"progressToken\":7,\"progress\":1.5}}\n\n")
	select {
	case <-waited:
		t.Fatal("the wait ended before progress 2 of token 7 was written on s1")
	default:
	}
	writeAll("data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":7,\"progr", "ess\":2}}\n", "\n")
	// Written to the response's buffer is not yet sent to the client.
	select {
	case <-waited:
		t.Fatal("the wait ended before progress 2 of token 7 was flushed")
	default:
	}
	w.Flush()
	<-waited
	if len(log.written) != 2 {
		t.Errorf("entries left: %v (the waited token must be forgotten)", log.written)
	}
	var _ http.Flusher = w
}

// TestProgressLogWaitEnds: a wait for a notification that never comes ends
// with its context.
func TestProgressLogWaitEnds(t *testing.T) {
	log := newProgressLog()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		log.waitWritten(ctx, "", "t", 1)
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("wait did not end with its context")
	}
}

// TestStdioOutRecords: stdout's messages are recorded for the one stdio
// session.
func TestStdioOutRecords(t *testing.T) {
	log := newProgressLog()
	out := &stdioOut{w: io.Discard, log: log}
	if _, err := io.WriteString(out, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p1","progress":3,"total":3}}`+"\n"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log.waitWritten(ctx, "", "p1", 3)
	if ctx.Err() != nil {
		t.Fatal("the written progress was not recorded")
	}
}
