package resources

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

func TestSubjectOf(t *testing.T) {
	l := &Live{}
	for _, tc := range []struct {
		uri, key string
		scope    auth.Scope
	}{
		{"berth://bots/b1/files/data/notes.md", "file\x00b1\x00/data/notes.md", auth.ScopeRead},
		{"berth://bots/b1/files/data/a/../b", "file\x00b1\x00/data/b", auth.ScopeRead},
		{"berth://bots/b1/processes/p3/stderr", "process\x00b1\x00p3\x00stderr", auth.ScopeExec},
		{"berth://bots/b1/processes/p3/stdout?offset=10", "process\x00b1\x00p3\x00stdout", auth.ScopeExec},
		{"berth://bots/b1/terminals/t2/output", "terminal\x00b1\x00t2", auth.ScopeExec},
		{"berth://bots/b1/workspace", "workspace\x00b1", auth.ScopeRead},
	} {
		subj, err := l.subjectOf(tc.uri)
		if err != nil || subj.key != tc.key || subj.scope != tc.scope || subj.bot != "b1" {
			t.Errorf("%s: %q %q %q %v, want %q %q", tc.uri, subj.key, subj.scope, subj.bot, err, tc.key, tc.scope)
		}
	}
	for _, uri := range []string{
		"berth://bots/b1/processes/p3/stdin",
		"berth://bots/b1/snapshots",
		"berth://bots/b1/mcp-servers/fs/logs", // no MCP supervisor
		"file:///etc/passwd",
	} {
		if _, err := l.subjectOf(uri); err == nil {
			t.Errorf("%s: accepted", uri)
		}
	}
}

// fakeSession is a client session whose notifications land in a channel.
type fakeSession struct {
	id string
	ch chan mcp.JSONRPCNotification
}

func (f *fakeSession) Initialize()                                         {}
func (f *fakeSession) Initialized() bool                                   { return true }
func (f *fakeSession) NotificationChannel() chan<- mcp.JSONRPCNotification { return f.ch }
func (f *fakeSession) SessionID() string                                   { return f.id }

// follow puts sub on a source for uris, as subscribe does once the source
// started.
func follow(l *Live, sub *subscriber, key string, uris ...string) *source {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, cancel := context.WithCancel(context.Background())
	src := &source{key: key, ready: make(chan struct{}), cancel: cancel, subs: map[*subscriber]map[string]bool{sub: {}}}
	close(src.ready)
	l.sources[key] = src
	for _, uri := range uris {
		sub.uris[uri] = src
		src.subs[sub][uri] = true
	}
	return src
}

func newTestLive(t *testing.T) *Live {
	s := server.NewMCPServer("t", "1", server.WithResourceCapabilities(true, true))
	return &Live{s: s, log: slog.New(slog.NewTextHandler(t.Output(), nil)), subs: map[subKey]*subscriber{}, sources: map[string]*source{}}
}

func nextURI(t *testing.T, ch chan mcp.JSONRPCNotification) mcp.JSONRPCNotification {
	t.Helper()
	select {
	case n := <-ch:
		if n.Method != string(mcp.MethodNotificationResourceUpdated) {
			t.Fatalf("notification %s", n.Method)
		}
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10s")
	}
	return mcp.JSONRPCNotification{}
}

// TestLiveCoalescesAndRoutes: a burst of changes costs a session at most
// two notifications (the first, and one for the rest), each to the session
// that follows, and a listen stream's are tagged with its id.
func TestLiveCoalescesAndRoutes(t *testing.T) {
	l := newTestLive(t)
	legacy := &fakeSession{id: "s1", ch: make(chan mcp.JSONRPCNotification, 100)}
	if err := l.s.RegisterSession(context.Background(), legacy); err != nil {
		t.Fatal(err)
	}
	listener := &fakeSession{id: "s2", ch: make(chan mcp.JSONRPCNotification, 100)}
	bystander := &fakeSession{id: "s3", ch: make(chan mcp.JSONRPCNotification, 100)}

	l.mu.Lock()
	a := l.newSubscriber(subKey{session: "s1"}, legacy, nil)
	b := l.newSubscriber(listenKey(listener, 7), listener, 7)
	c := l.newSubscriber(subKey{session: "s3"}, bystander, nil)
	l.mu.Unlock()
	busy := follow(l, a, "busy", "berth://bots/x/files/busy")
	follow(l, b, "busy2", "berth://bots/x/files/busy")
	marker := follow(l, a, "marker", "berth://bots/x/files/marker")
	follow(l, c, "other", "berth://bots/x/files/other")

	for range 100 {
		l.changed(busy)
	}
	l.changed(marker)
	var busyNotes int
	for {
		n := nextURI(t, legacy.ch)
		uri := n.Params.AdditionalFields["uri"]
		if uri == "berth://bots/x/files/marker" {
			break
		}
		busyNotes++
	}
	if busyNotes < 1 || busyNotes > 2 {
		t.Errorf("100 changes gave %d notifications; want 1 or 2", busyNotes)
	}
	// The listen stream follows busy through its own source: nothing
	// changed there, so nothing came.
	select {
	case n := <-listener.ch:
		t.Errorf("listen stream got %+v", n)
	default:
	}
	l.changed(l.sources["busy2"])
	n := nextURI(t, listener.ch)
	if n.Params.Meta[mcp.MetaKeySubscriptionID] != 7 {
		t.Errorf("listen notification %+v not tagged with the stream's id", n.Params)
	}
	if len(bystander.ch) != 0 {
		t.Errorf("a session that follows nothing of it was notified")
	}

	// The session ends: its subscriptions and the sources only it
	// followed go.
	l.dropSession("s1")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.subs[subKey{session: "s1"}] != nil || l.sources["busy"] != nil || l.sources["marker"] != nil || l.sources["busy2"] == nil {
		t.Errorf("after the session ended: subs %v, sources %v", l.subs, keys(l.sources))
	}
}

func keys(m map[string]*source) string {
	var out []string
	for k := range m {
		out = append(out, strings.ReplaceAll(k, "\x00", "/"))
	}
	return fmt.Sprint(out)
}
