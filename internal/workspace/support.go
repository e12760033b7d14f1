package workspace

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/berth-dev/berth/internal/binary"
)

// keyedMutex is one mutex per key, dropped when nobody holds or waits for it,
// so the map never outgrows the bots being worked on.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*refMutex{}
	}
	l := k.locks[key]
	if l == nil {
		l = &refMutex{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()

	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// checkAgentBinary makes sure the binary mounted as a workspace's init
// can run in any image: it must exist and be statically linked.
func checkAgentBinary(path string) error {
	static, err := binary.IsStatic(path)
	if err != nil {
		return fmt.Errorf("agent binary: %w (set --agent-binary to a static berth build)", err)
	}
	if !static {
		return fmt.Errorf("agent binary %s is dynamically linked and would not run inside arbitrary images: build berth with CGO_ENABLED=0 (make build) or set --agent-binary", path)
	}
	return nil
}

// CheckAgentBinary is checkAgentBinary for `berth doctor`.
func CheckAgentBinary(path string) error { return checkAgentBinary(path) }

// Workspace logs hold the agent's own output; they are cut on start so
// they never grow without bound.
const maxLogBytes = 4 << 20

func truncateLog(path string) {
	if st, err := os.Stat(path); err == nil && st.Size() > maxLogBytes {
		_ = os.Truncate(path, 0)
	}
}

// logTail returns the end of the workspace's log, to explain a failed start.
func (m *Manager) logTail(bot string) string {
	f, err := os.Open(m.logPath(bot))
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 2048
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		_, _ = f.Seek(-tail, io.SeekEnd)
	}
	b, _ := io.ReadAll(io.LimitReader(f, tail))
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	return "; the workspace log ends with:\n" + s
}
