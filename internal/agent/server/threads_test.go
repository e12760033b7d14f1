package server

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestReserveThreads: after reserveThreads the process has at least that
// many OS threads, and keeps them when the goroutines that made them end.
func TestReserveThreads(t *testing.T) {
	const n = 40 // more than a test binary has of its own
	reserveThreads(n)
	if got := osThreads(t); got < n {
		t.Fatalf("%d OS threads after reserving %d", got, n)
	}
}

func osThreads(t *testing.T) int {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}
