package server

import (
	"fmt"
	"sync"
)

// outbuf keeps the most recent output of a background process stream or a
// terminal, addressed by absolute byte offsets from the start of the stream.
// Offsets stay valid however much is written: bytes that fell out of the
// window are reported as dropped instead of shifting everything after them,
// so a reader that resumes from its last NextOffset never sees a byte twice
// and always learns how much it missed.
//
// The storage grows with the output up to limit and is then reused as a
// ring, so a quiet process costs almost nothing and a chatty one at most
// limit bytes.
type outbuf struct {
	mu    sync.Mutex
	limit int
	// buf holds the bytes at absolute offsets [total-len(buf), total) while
	// growing; once len(buf) == limit, the byte at offset o is buf[o%limit].
	// Both cases agree: while growing, o < limit, so o%limit == o.
	buf   []byte
	total int64
	// eof is set once the writer is done; waiters stop waiting for more.
	eof bool
	// released drops the storage of a stream nobody can read any more (its
	// process was forgotten) while a lingering writer still drains the pipe.
	released bool
	// changed is closed and replaced on every write and at EOF: a cheap
	// broadcast to the waiters of SendTerminal and attach.
	changed chan struct{}
}

func newOutbuf(limit int) *outbuf {
	if limit <= 0 {
		panic("outbuf: limit must be positive")
	}
	return &outbuf{limit: limit, changed: make(chan struct{})}
}

// Write appends p, dropping the oldest bytes beyond the limit. It never
// fails, so it can sit behind any copy loop.
func (b *outbuf) Write(p []byte) (int, error) {
	n := len(p)
	if n == 0 {
		return 0, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notifyLocked()
	if b.released {
		b.total += int64(n)
		return n, nil
	}
	if len(p) >= b.limit {
		// Only the last limit bytes survive; skip the rest without copying.
		skip := len(p) - b.limit
		b.toRingLocked()
		b.total += int64(skip)
		p = p[skip:]
	} else if len(b.buf) < b.limit && b.total+int64(len(p)) > int64(b.limit) {
		b.toRingLocked()
	}
	if len(b.buf) < b.limit {
		// Growing: total == len(buf) and the write fits below the limit.
		b.buf = appendCapped(b.buf, p, b.limit)
		b.total += int64(len(p))
		return n, nil
	}
	for len(p) > 0 {
		pos := int(b.total % int64(b.limit))
		k := copy(b.buf[pos:], p)
		b.total += int64(k)
		p = p[k:]
	}
	return n, nil
}

// toRingLocked switches the storage to its full size. While growing, the
// byte at offset o sits at index o, which is also where the ring keeps it.
func (b *outbuf) toRingLocked() {
	if len(b.buf) == b.limit {
		return
	}
	full := make([]byte, b.limit)
	copy(full, b.buf)
	b.buf = full
}

// appendCapped appends p to buf, growing the capacity geometrically but never
// beyond limit, so that the last growth step does not allocate twice the
// limit.
func appendCapped(buf, p []byte, limit int) []byte {
	need := len(buf) + len(p)
	if need > cap(buf) {
		c := max(2*cap(buf), need, 4096)
		c = min(c, limit)
		nb := make([]byte, len(buf), c)
		copy(nb, buf)
		buf = nb
	}
	return append(buf, p...)
}

func (b *outbuf) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// closeWrite marks the end of the stream.
func (b *outbuf) closeWrite() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.eof {
		return
	}
	b.eof = true
	b.notifyLocked()
}

// release frees the storage; later writes are only counted.
func (b *outbuf) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.released = true
	b.buf = nil
}

// outState is a consistent view of an outbuf: its size, whether the writer
// is done, and a channel that is closed at the next change after the view
// was taken, so a waiter cannot miss a write between looking and waiting.
type outState struct {
	total   int64
	eof     bool
	changed <-chan struct{}
}

func (b *outbuf) state() outState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return outState{total: b.total, eof: b.eof, changed: b.changed}
}

// outRead is the answer of read, in the terms of OutputChunk.
type outRead struct {
	data    []byte
	offset  int64 // where data starts
	next    int64 // offset + len(data)
	total   int64
	dropped int64 // bytes between the requested offset and offset that are gone
	eof     bool
}

// errOffsetBeyondEnd is returned for offsets past what has been written; a
// reader can only get there by making offsets up (or by keeping them across
// an agent restart), and silently answering from elsewhere would hide that.
type errOffsetBeyondEnd struct{ offset, total int64 }

func (e errOffsetBeyondEnd) Error() string {
	return fmt.Sprintf("offset %d is beyond the end of the output (%d bytes so far)", e.offset, e.total)
}

// read returns up to limit bytes from offset. A negative offset counts back
// from the end (-N: the last N bytes), which lets a reader look at the tail
// without knowing the total first.
func (b *outbuf) read(offset int64, limit int) (outRead, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	want := offset
	if offset < 0 {
		want = max(0, b.total+offset)
	}
	if want > b.total {
		return outRead{}, errOffsetBeyondEnd{offset, b.total}
	}
	oldest := b.total - int64(len(b.buf))
	start := max(want, oldest)
	end := min(b.total, start+int64(max(limit, 0)))
	data := make([]byte, 0, end-start)
	if end > start {
		// At most two pieces: up to the end of the storage, then from its
		// start.
		L := int64(b.limit)
		i, j := start%L, end%L
		if j == 0 || j <= i {
			data = append(data, b.buf[i:min(int64(len(b.buf)), L)]...)
			data = append(data, b.buf[:j]...)
		} else {
			data = append(data, b.buf[i:j]...)
		}
	}
	return outRead{
		data:    data,
		offset:  start,
		next:    end,
		total:   b.total,
		dropped: start - want,
		eof:     b.eof,
	}, nil
}
