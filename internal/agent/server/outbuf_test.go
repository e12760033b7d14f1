package server

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// checkOutbuf compares every read of b with the same read of all, the
// stream written so far, of which b must keep the last limit bytes.
func checkOutbuf(t *testing.T, b *outbuf, all []byte, limit int, offset int64, n int) {
	t.Helper()
	total := int64(len(all))
	rd, err := b.read(offset, n)
	want := offset
	if offset < 0 {
		want = max(0, total+offset)
	}
	if want > total {
		var beyond errOffsetBeyondEnd
		if !errors.As(err, &beyond) {
			t.Fatalf("read(%d) past %d: err %v", offset, total, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("read(%d, %d): %v", offset, n, err)
	}
	oldest := max(0, total-int64(limit))
	start := max(want, oldest)
	end := min(total, start+int64(max(n, 0)))
	if rd.offset != start || rd.next != end || rd.total != total || rd.dropped != start-want {
		t.Fatalf("read(%d, %d) of %d: offset %d next %d total %d dropped %d; want %d %d %d %d",
			offset, n, total, rd.offset, rd.next, rd.total, rd.dropped, start, end, total, start-want)
	}
	if !bytes.Equal(rd.data, all[start:end]) {
		t.Fatalf("read(%d, %d) of %d: wrong data", offset, n, total)
	}
}

func TestOutbuf(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, limit := range []int{1, 7, 64, 4096, 10000} {
		b := newOutbuf(limit)
		var all []byte
		for i := 0; i < 300; i++ {
			var p []byte
			switch rng.IntN(4) {
			case 0:
				p = make([]byte, rng.IntN(3))
			case 1:
				p = make([]byte, rng.IntN(limit+1))
			default:
				p = make([]byte, rng.IntN(3*limit+2))
			}
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			if n, err := b.Write(p); n != len(p) || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
			all = append(all, p...)
			if len(b.buf) > limit || cap(b.buf) > limit {
				t.Fatalf("limit %d: storage of %d (cap %d)", limit, len(b.buf), cap(b.buf))
			}
			total := int64(len(all))
			for _, off := range []int64{0, total, total + 1, -1, -int64(limit), -total - 5,
				max(0, total-int64(limit)), rng.Int64N(total + 2)} {
				checkOutbuf(t, b, all, limit, off, rng.IntN(2*limit+2))
			}
		}
	}
}

func TestOutbufNotifiesAndReleases(t *testing.T) {
	b := newOutbuf(8)
	st := b.state()
	select {
	case <-st.changed:
		t.Fatal("changed before any write")
	default:
	}
	_, _ = b.Write([]byte("abc"))
	select {
	case <-st.changed:
	default:
		t.Fatal("a write did not signal a change")
	}
	st = b.state()
	b.closeWrite()
	if s := b.state(); !s.eof {
		t.Error("no EOF after closeWrite")
	}
	select {
	case <-st.changed:
	default:
		t.Fatal("EOF did not signal a change")
	}
	b.release()
	_, _ = b.Write([]byte("defgh"))
	rd, err := b.read(0, 100)
	if err != nil || len(rd.data) != 0 || rd.total != 8 || rd.dropped != 8 || rd.offset != 8 {
		t.Errorf("after release: %+v, %v", rd, err)
	}
}

func FuzzOutbuf(f *testing.F) {
	f.Add(uint8(5), []byte("hello world, this is more than five"), int64(3), 4)
	f.Fuzz(func(t *testing.T, limit uint8, data []byte, offset int64, n int) {
		if limit == 0 || n > 1<<16 {
			return
		}
		b := newOutbuf(int(limit))
		// Write in pieces of varying size, derived from the data itself.
		var all []byte
		for rest := data; len(rest) > 0; {
			k := min(len(rest), int(rest[0])%(2*int(limit)+1)+1)
			_, _ = b.Write(rest[:k])
			all = append(all, rest[:k]...)
			rest = rest[k:]
		}
		checkOutbuf(t, b, all, int(limit), offset, n)
	})
}
