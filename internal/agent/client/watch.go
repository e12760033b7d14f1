package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/containerd/errdefs"
)

// Watch is a stream of changes to watched paths; see wire.PathWatch.
type Watch struct {
	body io.ReadCloser
	br   *bufio.Reader
}

// Watch starts watching paths. It returns once the agent watches every
// one of them, so a change made after it returned is reported. The stream
// lasts until ctx ends, Close, or the agent ends it (every path lost, or
// the workspace stopped). An agent older than the endpoint gives an
// errdefs.ErrNotImplemented error.
func (c *Client) Watch(ctx context.Context, paths []string) (*Watch, error) {
	if len(paths) == 0 || len(paths) > wire.MaxWatchPaths {
		return nil, fmt.Errorf("%w: %d paths to watch; 1 to %d", errdefs.ErrInvalidArgument, len(paths), wire.MaxWatchPaths)
	}
	body, err := json.Marshal(wire.WatchRequest{Paths: paths})
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://berth-agent"+wire.PathWatch, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.send(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, fmt.Errorf("berth agent: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer func() { _ = resp.Body.Close() }()
		data, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxResponseBytes+1))
		if err != nil {
			return nil, fmt.Errorf("berth agent: reading response: %w", err)
		}
		var unused struct{}
		err = decodeResponse(resp.StatusCode, resp.Header, data, &unused)
		var re *RemoteError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound && re.Code == wire.CodeNotFound && bytes.Contains(data, []byte("no such endpoint")) {
			return nil, fmt.Errorf("%w: this workspace's agent predates file watching; restart the workspace to watch files", errdefs.ErrNotImplemented)
		}
		if err != nil {
			return nil, err
		}
		return nil, badResponse("watch answered HTTP %d", resp.StatusCode)
	}
	if err := checkProtocolHeader(resp.Header, nil); err != nil {
		_ = resp.Body.Close()
		return nil, err
	}
	return &Watch{body: resp.Body, br: bufio.NewReaderSize(resp.Body, 16<<10)}, nil
}

// Next waits for the next event. At the end of the stream it returns an
// error wrapping io.EOF.
func (w *Watch) Next() (wire.WatchEvent, error) {
	line, err := readLimitedLine(w.br, wire.MaxWatchEventBytes)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		return wire.WatchEvent{}, fmt.Errorf("berth agent: watch stream: %w", err)
	}
	return decodeWatchEvent(line)
}

// decodeWatchEvent checks one line from the (untrusted) agent.
func decodeWatchEvent(line []byte) (wire.WatchEvent, error) {
	var ev wire.WatchEvent
	if err := json.Unmarshal(line, &ev); err != nil {
		return wire.WatchEvent{}, badResponse("watch event: %v", err)
	}
	if len(ev.Paths) == 0 || len(ev.Paths) > wire.MaxWatches {
		return wire.WatchEvent{}, badResponse("watch event with %d paths", len(ev.Paths))
	}
	for _, p := range ev.Paths {
		if !wire.ValidPath(p) {
			return wire.WatchEvent{}, badResponse("watch event path %q", wire.TruncateInfo(p, 64))
		}
	}
	return ev, nil
}

// Close ends the stream; the agent drops its watches.
func (w *Watch) Close() error { return w.body.Close() }
