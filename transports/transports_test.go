package transports

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/mark3labs/mcp-go/server"
)

func TestCheckHTTPOptions(t *testing.T) {
	tok := auth.Token("0123456789abcdef0123")
	for _, ok := range []HTTPOptions{
		{Addr: "127.0.0.1:8080", Token: tok},
		{Addr: "127.0.0.1:0", NoAuth: true},
		{Addr: "localhost:8080", NoAuth: true},
		{Addr: "[::1]:8080", NoAuth: true},
		{Addr: "0.0.0.0:8080", Token: tok, AllowedOrigins: []string{"https://app.example.com"}},
	} {
		if err := CheckHTTPOptions(ok); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	for _, bad := range []HTTPOptions{
		{Addr: "0.0.0.0:8080", NoAuth: true},
		{Addr: ":8080", NoAuth: true},
		{Addr: "10.1.2.3:8080", NoAuth: true},
		{Addr: "127.0.0.1:8080"},
		{Addr: "8080", Token: tok},
		{Addr: "127.0.0.1:8080", Token: tok, AllowedOrigins: []string{"*"}},
	} {
		if err := CheckHTTPOptions(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestEventStoreIsBounded(t *testing.T) {
	ctx := context.Background()
	s := newEventStore(3)
	var ids []string
	for i := range 5 {
		id, err := s.StoreEvent(ctx, "sess", "stream-a", json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	s.StoreEvent(ctx, "sess", "stream-b", json.RawMessage(`{"other":true}`))
	if n := len(s.sessions["sess"].events); n != 3 {
		t.Fatalf("kept %d events, want 3", n)
	}
	if _, err := s.ReplayEventsAfter(ctx, "sess", ids[0], func(string, json.RawMessage) error { return nil }); !errors.Is(err, server.ErrUnknownEventID) {
		t.Fatalf("evicted id: %v", err)
	}
	var got []string
	stream, err := s.ReplayEventsAfter(ctx, "sess", ids[3], func(_ string, m json.RawMessage) error {
		got = append(got, string(m))
		return nil
	})
	if err != nil || stream != "stream-a" || strings.Join(got, ",") != `{"n":4}` {
		t.Fatalf("replay: %v %s %v", err, stream, got)
	}
	s.PurgeSession(ctx, "sess")
	if len(s.sessions) != 0 {
		t.Fatal("purge kept the session")
	}
}

// TestEventIDsPerSession: a session's event ids say nothing of the
// others' traffic, and an id of one session resumes nothing in another.
func TestEventIDsPerSession(t *testing.T) {
	ctx := context.Background()
	s := newEventStore(8)
	for range 5 {
		if _, err := s.StoreEvent(ctx, "busy", "stream", json.RawMessage(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	first, _ := s.StoreEvent(ctx, "quiet", "stream", json.RawMessage(`{"n":1}`))
	second, _ := s.StoreEvent(ctx, "quiet", "stream", json.RawMessage(`{"n":2}`))
	if first != "1" || second != "2" {
		t.Fatalf("a session's first ids after another's 5 events: %s, %s; want 1, 2", first, second)
	}
	var got []string
	if _, err := s.ReplayEventsAfter(ctx, "busy", "4", func(_ string, m json.RawMessage) error {
		got = append(got, string(m))
		return nil
	}); err != nil || strings.Join(got, ",") != `{}` {
		t.Fatalf("busy's replay after its own 4: %v %v", err, got)
	}
}
