package server

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

type fakeEntry struct {
	id       string
	endedAt  time.Time
	ended    bool
	released bool
}

func (f *fakeEntry) ID() string               { return f.id }
func (f *fakeEntry) Ended() (time.Time, bool) { return f.endedAt, f.ended }
func (f *fakeEntry) release()                 { f.released = true }

func TestRegistry(t *testing.T) {
	r := &registry[*fakeEntry]{prefix: "f", limit: 2, tooMany: "too many", notFound: "no entry %q"}
	add := func() (*fakeEntry, error) {
		return r.add(func(id string) (*fakeEntry, error) { return &fakeEntry{id: id}, nil })
	}
	a, _ := add()
	b, _ := add()
	if a.id != "f1" || b.id != "f2" {
		t.Fatalf("ids %s %s", a.id, b.id)
	}
	var api *apiError
	if _, err := add(); !errors.As(err, &api) || api.status != http.StatusTooManyRequests || api.msg != "too many" {
		t.Fatalf("third while two run: %v", err)
	}
	// A failed start takes no id and adds nothing.
	if _, err := r.add(func(string) (*fakeEntry, error) { return nil, errors.New("boom") }); err == nil || len(r.list()) != 2 {
		t.Fatalf("failed start: %v, %d entries", err, len(r.list()))
	}
	// Ended entries make room; beyond the limit the one that ended first
	// is forgotten.
	now := time.Now()
	a.ended, a.endedAt = true, now.Add(-time.Minute)
	b.ended, b.endedAt = true, now
	c, err := add()
	if err != nil || c.id != "f3" {
		t.Fatalf("add after ends: %v %+v", err, c)
	}
	if got := r.list(); len(got) != 2 || got[0] != b || got[1] != c || !a.released || b.released {
		t.Fatalf("after eviction: %+v (a released %v)", got, a.released)
	}

	req := httptest.NewRequest("GET", "/x/f3", nil)
	req.SetPathValue("id", "f3")
	if e, err := r.lookup(req); err != nil || e != c {
		t.Fatalf("lookup f3: %v %v", e, err)
	}
	req.SetPathValue("id", "f1")
	if _, err := r.lookup(req); !errors.As(err, &api) || api.status != http.StatusNotFound || api.msg != `no entry "f1"` {
		t.Fatalf("lookup of a forgotten id: %v", err)
	}
	r.remove(b)
	if got := r.list(); len(got) != 1 || got[0] != c || !b.released {
		t.Fatalf("after remove: %+v", got)
	}
}
