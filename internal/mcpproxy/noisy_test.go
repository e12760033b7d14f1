package mcpproxy

import (
	"testing"
	"time"
)

// TestNoisyLog: a flood of skipped lines yields a few notes a minute, and
// the first note of the next minute counts what was left out.
func TestNoisyLog(t *testing.T) {
	var l noisyLog
	now := time.Unix(1000, 0)
	logged := 0
	for i := 0; i < 100_000; i++ {
		if ok, _ := l.allow(now); ok {
			logged++
		}
	}
	if logged != noisyLinesPerMinute {
		t.Fatalf("%d notes in a minute, want %d", logged, noisyLinesPerMinute)
	}
	ok, dropped := l.allow(now.Add(time.Minute))
	if !ok || dropped != 100_000-noisyLinesPerMinute {
		t.Fatalf("next minute: ok %v, dropped %d", ok, dropped)
	}
	if ok, dropped := l.allow(now.Add(time.Minute)); !ok || dropped != 0 {
		t.Fatalf("second note of the minute: ok %v, dropped %d", ok, dropped)
	}
}
