package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/containerd/errdefs"
)

func validateTerminalInfo(t *wire.TerminalInfo) error {
	if err := checkState(t.ID, t.PID, t.StartedAt, t.Running, t.ExitCode, t.EndedAt, t.Signal); err != nil {
		return err
	}
	switch {
	case t.Shell == "" || len(t.Shell) > infoStringMax:
		return badResponse("terminal %s: shell of %d bytes", t.ID, len(t.Shell))
	case len(t.Cwd) > infoStringMax:
		return badResponse("terminal %s: cwd too long", t.ID)
	case t.Rows < 1 || t.Cols < 1 || t.Rows > wire.MaxTerminalSize || t.Cols > wire.MaxTerminalSize:
		return badResponse("terminal %s: size %dx%d", t.ID, t.Rows, t.Cols)
	case t.OutputTotal < 0 || t.Attached < 0 || t.IdleTimeoutMillis < 0:
		return badResponse("terminal %s: negative counts", t.ID)
	}
	return nil
}

// OpenTerminal starts a shell on a new pseudo-terminal.
func (c *Client) OpenTerminal(ctx context.Context, req wire.TerminalRequest) (wire.TerminalInfo, error) {
	return callInfo(ctx, c, http.MethodPost, wire.PathTerminals, req, validateTerminalInfo)
}

// Terminals lists the terminals the agent remembers, oldest first.
func (c *Client) Terminals(ctx context.Context) ([]wire.TerminalInfo, error) {
	return listInfos(ctx, c, wire.PathTerminals, "terminals", wire.MaxTerminals, func(l *wire.TerminalList) []wire.TerminalInfo { return l.Terminals }, validateTerminalInfo)
}

// Terminal describes one terminal.
func (c *Client) Terminal(ctx context.Context, id string) (wire.TerminalInfo, error) {
	if err := checkID("terminal", id); err != nil {
		return wire.TerminalInfo{}, err
	}
	return callInfo(ctx, c, http.MethodGet, wire.PathTerminals+"/"+id, nil, validateTerminalInfo)
}

// SendTerminal types in.Data into the terminal and returns the output
// produced from just before it, after waiting as in asks. Without a
// deadline on ctx, the call is bounded by the wait plus a margin.
func (c *Client) SendTerminal(ctx context.Context, id string, in wire.TerminalInput) (wire.OutputChunk, error) {
	if err := checkID("terminal", id); err != nil {
		return wire.OutputChunk{}, err
	}
	wait := wire.DefaultTerminalWait
	if in.WaitTimeoutMillis > 0 {
		wait = min(time.Duration(min(in.WaitTimeoutMillis, wire.MaxTimeoutMillis))*time.Millisecond, wire.MaxTerminalWait)
	}
	var ch wire.OutputChunk
	if err := c.doJSON(ctx, http.MethodPost, wire.PathTerminals+"/"+id+"/input", nil, in, &ch, maxChunkResponse, wait+defaultCallTimeout); err != nil {
		return wire.OutputChunk{}, err
	}
	return ch, checkTerminalChunk(&ch, -1, wire.OutputLimit(int64(in.MaxOutput)))
}

// ReadTerminal reads up to limit bytes (0: DefaultOutputLimit, at most
// MaxOutputLimit) of a terminal's output from offset; a negative offset -N
// reads the last N bytes.
func (c *Client) ReadTerminal(ctx context.Context, id string, offset int64, limit int) (wire.OutputChunk, error) {
	if err := checkID("terminal", id); err != nil {
		return wire.OutputChunk{}, err
	}
	q := url.Values{"offset": {strconv.FormatInt(offset, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var ch wire.OutputChunk
	if err := c.doJSON(ctx, http.MethodGet, wire.PathTerminals+"/"+id+"/output", q, nil, &ch, maxChunkResponse, defaultCallTimeout); err != nil {
		return wire.OutputChunk{}, err
	}
	return ch, checkTerminalChunk(&ch, offset, wire.OutputLimit(int64(limit)))
}

func checkTerminalChunk(ch *wire.OutputChunk, offset int64, limit int) error {
	if err := validateOutputChunk(ch, offset, limit); err != nil {
		return err
	}
	if ch.Terminal == nil || ch.Process != nil {
		return badResponse("terminal output without the terminal")
	}
	return validateTerminalInfo(ch.Terminal)
}

// ResizeTerminal sets a terminal's size; its programs get SIGWINCH.
func (c *Client) ResizeTerminal(ctx context.Context, id string, rows, cols uint16) error {
	if err := checkID("terminal", id); err != nil {
		return err
	}
	_, err := callInfo(ctx, c, http.MethodPost, wire.PathTerminals+"/"+id+"/resize", wire.TerminalResize{Rows: rows, Cols: cols}, validateTerminalInfo)
	return err
}

// CloseTerminal hangs a terminal up (SIGHUP to its session, SIGKILL to what
// is left after a short grace) and forgets it.
func (c *Client) CloseTerminal(ctx context.Context, id string) error {
	if err := checkID("terminal", id); err != nil {
		return err
	}
	_, err := callInfo(ctx, c, http.MethodDelete, wire.PathTerminals+"/"+id, nil, validateTerminalInfo)
	return err
}

// AttachTerminal connects to a terminal's raw byte stream: reads return its
// output from the moment of attaching on, writes are typed into it. Close
// detaches; the terminal goes on. ctx bounds only the handshake (by default
// as long as an ordinary call).
func (c *Client) AttachTerminal(ctx context.Context, id string) (io.ReadWriteCloser, error) {
	return c.attachTerminal(ctx, id, "")
}

// AttachTerminalFrom is AttachTerminal whose reads start with the output
// kept from offset on (the NextOffset of a ReadTerminal), so that a caller
// who showed the history misses nothing written since. Output older than
// the kept buffer is skipped; an offset past the end is refused.
func (c *Client) AttachTerminalFrom(ctx context.Context, id string, offset int64) (io.ReadWriteCloser, error) {
	if offset < 0 {
		return nil, fmt.Errorf("%w: offset %d is negative", errdefs.ErrInvalidArgument, offset)
	}
	return c.attachTerminal(ctx, id, "?offset="+strconv.FormatInt(offset, 10))
}

func (c *Client) attachTerminal(ctx context.Context, id, query string) (io.ReadWriteCloser, error) {
	if err := checkID("terminal", id); err != nil {
		return nil, err
	}
	conn, err := c.upgrade(ctx, upgradeRequest{
		method:   http.MethodGet,
		path:     wire.PathTerminals + "/" + id + "/attach" + query,
		protocol: wire.TerminalUpgrade,
		what:     "attaching",
	}, nil)
	if err != nil {
		return nil, err
	}
	return conn, nil
}
