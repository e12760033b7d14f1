package transports

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/mark3labs/mcp-go/server"
)

// eventStore keeps the last few events of each HTTP session so a client
// whose stream broke can resume, without the unbounded growth of mcp-go's
// in-memory store. (mcp-go also needs some event store for progress
// notifications to be delivered reliably.) Event ids count per session:
// one counter for all would tell a client how busy the other tenants are.
type eventStore struct {
	perSession int

	mu       sync.Mutex
	sessions map[string]*sessionEvents
}

type sessionEvents struct {
	seq    uint64
	events []storedEvent
}

type storedEvent struct {
	id, stream string
	message    json.RawMessage
}

var _ server.EventStore = (*eventStore)(nil)

func newEventStore(perSession int) *eventStore {
	return &eventStore{perSession: perSession, sessions: map[string]*sessionEvents{}}
}

func (s *eventStore) StoreEvent(_ context.Context, session, stream string, message json.RawMessage) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.sessions[session]
	if se == nil {
		se = &sessionEvents{}
		s.sessions[session] = se
	}
	se.seq++
	id := strconv.FormatUint(se.seq, 10)
	se.events = append(se.events, storedEvent{id: id, stream: stream, message: message})
	if len(se.events) > s.perSession {
		se.events = append(se.events[:0:0], se.events[len(se.events)-s.perSession:]...)
	}
	return id, nil
}

func (s *eventStore) ReplayEventsAfter(_ context.Context, session, lastID string, send func(string, json.RawMessage) error) (string, error) {
	s.mu.Lock()
	var events []storedEvent
	if se := s.sessions[session]; se != nil {
		events = se.events
	}
	at := -1
	for i, e := range events {
		if e.id == lastID {
			at = i
			break
		}
	}
	if at < 0 {
		s.mu.Unlock()
		return "", fmt.Errorf("%w: %s", server.ErrUnknownEventID, lastID)
	}
	stream := events[at].stream
	var replay []storedEvent
	for _, e := range events[at+1:] {
		if e.stream == stream {
			replay = append(replay, e)
		}
	}
	s.mu.Unlock()
	for _, e := range replay {
		if err := send(e.id, e.message); err != nil {
			return stream, err
		}
	}
	return stream, nil
}

func (s *eventStore) PurgeSession(_ context.Context, session string) error {
	s.mu.Lock()
	delete(s.sessions, session)
	s.mu.Unlock()
	return nil
}
