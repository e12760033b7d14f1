package workspace

import (
	"context"
	"errors"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
)

// Backoff of a file watch that broke (the workspace stopped or restarted,
// the file's directory went away): from the first delay, doubling, up to
// the last.
const (
	watchRetryFirst = time.Second
	watchRetryMax   = 30 * time.Second
)

// WatchFile calls changed whenever the file at path (absolute) in bot's
// workspace changes, as the workspace's agent sees it (inotify: a tool, a
// command or anything else in the workspace writing, replacing or deleting
// it), until ctx ends. It returns once the watch is in place, or why it
// cannot be. A watch that breaks later is set up again, with backoff, for
// as long as ctx lasts; changed is then called once, because the file may
// have changed meanwhile. changed must not block.
func (m *Manager) WatchFile(ctx context.Context, bot, path string, changed func()) error {
	w, err := m.watch(ctx, bot, path)
	if err != nil {
		return err
	}
	go m.followWatch(ctx, bot, path, w, changed)
	return nil
}

func (m *Manager) watch(ctx context.Context, bot, path string) (*client.Watch, error) {
	return Ask(ctx, m, bot, func(a *client.Client) (*client.Watch, error) {
		return a.Watch(ctx, []string{path})
	})
}

func (m *Manager) followWatch(ctx context.Context, bot, path string, w *client.Watch, changed func()) {
	delay := watchRetryFirst
	for {
		for {
			if _, err := w.Next(); err != nil {
				if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
					m.log.Debug("file watch ended; setting it up again", "bot", bot, "path", path, "err", err)
				}
				break
			}
			delay = watchRetryFirst
			changed()
		}
		_ = w.Close()
		for {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			delay = min(delay*2, watchRetryMax)
			var err error
			if w, err = m.watch(ctx, bot, path); err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			m.log.Debug("file watch not set up again yet", "bot", bot, "path", path, "err", err, "retry_in", delay)
		}
		changed()
	}
}
