package tools

import (
	"context"
	"time"
)

// ProgressWriter is what a transport tells the tools about its progress
// notifications: mcp-go queues a notification on a channel that another
// goroutine writes out, while the tool's result is written by the one that
// ran the tool, so without a wait the last progress of a call can follow
// its result (and clients drop progress for a request that has ended).
type ProgressWriter interface {
	// WaitWritten returns once the progress notification of token with
	// value progress (or a later one) has been written to the client's
	// stream (true), or when ctx ends (false). It then forgets token.
	WaitWritten(ctx context.Context, token any, progress float64) bool
}

type progressWriterKey struct{}

// WithProgressWriter gives the calls of ctx a transport's ProgressWriter.
func WithProgressWriter(ctx context.Context, w ProgressWriter) context.Context {
	return context.WithValue(ctx, progressWriterKey{}, w)
}

// progressFlushTimeout bounds the wait for a call's last progress: a client
// that cannot stream (a POST answered with plain JSON) never gets it, and
// its result must not wait for long.
const progressFlushTimeout = 5 * time.Second

// finish ends the call's progress: it waits until the last notification
// sent is on the client's stream, so the result follows it, and drops any
// progress reported from then on (it would arrive after the result).
func (c *call) finish(ctx context.Context) {
	c.mu.Lock()
	c.closed = true
	wait := c.sent && !c.unwritten
	token, last := c.token, c.last
	c.mu.Unlock()
	if wait {
		waitWritten(ctx, token, last)
	}
}

// waitWritten waits until the progress notification of token with value
// progress is on the client's stream (true), for at most
// progressFlushTimeout. Without a ProgressWriter there is nothing to wait for.
func waitWritten(ctx context.Context, token any, progress float64) bool {
	w, _ := ctx.Value(progressWriterKey{}).(ProgressWriter)
	if w == nil {
		return true
	}
	wctx, cancel := context.WithTimeout(ctx, progressFlushTimeout)
	defer cancel()
	return w.WaitWritten(wctx, token, progress)
}
