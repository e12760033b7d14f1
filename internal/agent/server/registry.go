package server

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// registry keeps the long-lived things of one kind that the agent serves by
// id, background processes and terminals: in start order, at most limit of
// them running, and forgetting the ones that ended first once it holds more
// than limit.
type registry[E registered] struct {
	prefix   string // of ids: "p1", "t1"
	limit    int
	tooMany  string // the error when limit are running
	notFound string // the error for an unknown id; %q is the id

	mu  sync.Mutex
	seq uint64
	all []E
}

// registered is what a registry holds.
type registered interface {
	comparable
	ID() string
	// Ended reports whether it is over, and since when.
	Ended() (time.Time, bool)
	// release frees its buffers once the registry forgot it.
	release()
}

// add makes a new entry with the registry locked, so that concurrent
// requests cannot together start more than limit running ones.
func (r *registry[E]) add(start func(id string) (E, error)) (E, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	running := 0
	for _, e := range r.all {
		if _, ended := e.Ended(); !ended {
			running++
		}
	}
	var zero E
	if running >= r.limit {
		return zero, &apiError{http.StatusTooManyRequests, wire.CodeLimit, r.tooMany}
	}
	e, err := start(r.prefix + strconv.FormatUint(r.seq+1, 10))
	if err != nil {
		return zero, err
	}
	r.seq++
	r.all = append(r.all, e)
	r.evictLocked()
	return e, nil
}

// evictLocked forgets the entries that ended first while there are more
// than limit.
func (r *registry[E]) evictLocked() {
	for len(r.all) > r.limit {
		oldest := -1
		var oldestAt time.Time
		for i, e := range r.all {
			if at, ended := e.Ended(); ended && (oldest < 0 || at.Before(oldestAt)) {
				oldest, oldestAt = i, at
			}
		}
		if oldest < 0 {
			return
		}
		r.removeLocked(r.all[oldest])
	}
}

// remove forgets e.
func (r *registry[E]) remove(e E) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(e)
}

func (r *registry[E]) removeLocked(e E) {
	for i, x := range r.all {
		if x == e {
			r.all = append(r.all[:i], r.all[i+1:]...)
			e.release()
			return
		}
	}
}

// list returns the entries, oldest first.
func (r *registry[E]) list() []E {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]E(nil), r.all...)
}

// lookup finds the entry the request's {id} names.
func (r *registry[E]) lookup(req *http.Request) (E, error) {
	id := req.PathValue("id")
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.all {
		if e.ID() == id {
			return e, nil
		}
	}
	var zero E
	return zero, notFound(r.notFound, wire.TruncateInfo(id, 64))
}

// listHandler answers with every entry's info, wrapped in a list document.
func listHandler[E registered, I, L any](r *registry[E], info func(E) I, wrap func([]I) L) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		all := r.list()
		infos := make([]I, 0, len(all))
		for _, e := range all {
			infos = append(infos, info(e))
		}
		writeJSON(w, http.StatusOK, wrap(infos))
	}
}

// getHandler answers with the info of the entry the request names.
func getHandler[E registered, I any](r *registry[E], info func(E) I) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		e, err := r.lookup(req)
		if err != nil {
			writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, info(e))
	}
}

// tooMany is the message of a registry's limit.
func tooMany(what string, limit int, remedy string) string {
	return fmt.Sprintf("too many %s (%d); %s", what, limit, remedy)
}
