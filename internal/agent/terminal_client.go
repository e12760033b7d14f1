package agent

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

func (t *TerminalInfo) validate() error {
	if err := checkState(t.ID, t.PID, t.StartedAt, t.Running, t.ExitCode, t.EndedAt, t.Signal); err != nil {
		return err
	}
	switch {
	case t.Shell == "" || len(t.Shell) > infoStringMax:
		return badResponse("terminal %s: shell of %d bytes", t.ID, len(t.Shell))
	case len(t.Cwd) > infoStringMax:
		return badResponse("terminal %s: cwd too long", t.ID)
	case t.Rows < 1 || t.Cols < 1 || t.Rows > MaxTerminalSize || t.Cols > MaxTerminalSize:
		return badResponse("terminal %s: size %dx%d", t.ID, t.Rows, t.Cols)
	case t.OutputTotal < 0 || t.Attached < 0 || t.IdleTimeoutMillis < 0:
		return badResponse("terminal %s: negative counts", t.ID)
	}
	return nil
}

// OpenTerminal starts a shell on a new pseudo-terminal.
func (c *Client) OpenTerminal(ctx context.Context, req TerminalRequest) (TerminalInfo, error) {
	var info TerminalInfo
	if err := c.doJSON(ctx, http.MethodPost, PathTerminals, nil, req, &info, MaxResponseBytes, defaultCallTimeout); err != nil {
		return TerminalInfo{}, err
	}
	if err := info.validate(); err != nil {
		return TerminalInfo{}, err
	}
	return info, nil
}

// Terminals lists the terminals the agent remembers, oldest first.
func (c *Client) Terminals(ctx context.Context) ([]TerminalInfo, error) {
	var list TerminalList
	if err := c.doJSON(ctx, http.MethodGet, PathTerminals, nil, nil, &list, maxListResponse, defaultCallTimeout); err != nil {
		return nil, err
	}
	if len(list.Terminals) > MaxTerminals+1 {
		return nil, badResponse("%d terminals listed", len(list.Terminals))
	}
	for i := range list.Terminals {
		if err := list.Terminals[i].validate(); err != nil {
			return nil, err
		}
	}
	return list.Terminals, nil
}

// Terminal describes one terminal.
func (c *Client) Terminal(ctx context.Context, id string) (TerminalInfo, error) {
	if err := checkID("terminal", id); err != nil {
		return TerminalInfo{}, err
	}
	var info TerminalInfo
	if err := c.doJSON(ctx, http.MethodGet, PathTerminals+"/"+id, nil, nil, &info, MaxResponseBytes, defaultCallTimeout); err != nil {
		return TerminalInfo{}, err
	}
	if err := info.validate(); err != nil {
		return TerminalInfo{}, err
	}
	return info, nil
}

// SendTerminal types in.Data into the terminal and returns the output
// produced from just before it, after waiting as in asks. Without a
// deadline on ctx, the call is bounded by the wait plus a margin.
func (c *Client) SendTerminal(ctx context.Context, id string, in TerminalInput) (OutputChunk, error) {
	if err := checkID("terminal", id); err != nil {
		return OutputChunk{}, err
	}
	wait := DefaultTerminalWait
	if in.WaitTimeoutMillis > 0 {
		wait = min(time.Duration(min(in.WaitTimeoutMillis, maxTimeoutMillis))*time.Millisecond, MaxTerminalWait)
	}
	var ch OutputChunk
	if err := c.doJSON(ctx, http.MethodPost, PathTerminals+"/"+id+"/input", nil, in, &ch, maxChunkResponse, wait+defaultCallTimeout); err != nil {
		return OutputChunk{}, err
	}
	return ch, checkTerminalChunk(&ch, -1, outputLimit(int64(in.MaxOutput)))
}

// ReadTerminal reads up to limit bytes (0: DefaultOutputLimit, at most
// MaxOutputLimit) of a terminal's output from offset; a negative offset -N
// reads the last N bytes.
func (c *Client) ReadTerminal(ctx context.Context, id string, offset int64, limit int) (OutputChunk, error) {
	if err := checkID("terminal", id); err != nil {
		return OutputChunk{}, err
	}
	q := url.Values{"offset": {strconv.FormatInt(offset, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var ch OutputChunk
	if err := c.doJSON(ctx, http.MethodGet, PathTerminals+"/"+id+"/output", q, nil, &ch, maxChunkResponse, defaultCallTimeout); err != nil {
		return OutputChunk{}, err
	}
	return ch, checkTerminalChunk(&ch, offset, outputLimit(int64(limit)))
}

func checkTerminalChunk(ch *OutputChunk, offset int64, limit int) error {
	if err := ch.validate(offset, limit); err != nil {
		return err
	}
	if ch.Terminal == nil || ch.Process != nil {
		return badResponse("terminal output without the terminal")
	}
	return ch.Terminal.validate()
}

// ResizeTerminal sets a terminal's size; its programs get SIGWINCH.
func (c *Client) ResizeTerminal(ctx context.Context, id string, rows, cols uint16) error {
	if err := checkID("terminal", id); err != nil {
		return err
	}
	var info TerminalInfo
	if err := c.doJSON(ctx, http.MethodPost, PathTerminals+"/"+id+"/resize", nil, TerminalResize{Rows: rows, Cols: cols}, &info, MaxResponseBytes, defaultCallTimeout); err != nil {
		return err
	}
	return info.validate()
}

// CloseTerminal hangs a terminal up (SIGHUP to its session, SIGKILL to what
// is left after a short grace) and forgets it.
func (c *Client) CloseTerminal(ctx context.Context, id string) error {
	if err := checkID("terminal", id); err != nil {
		return err
	}
	var info TerminalInfo
	if err := c.doJSON(ctx, http.MethodDelete, PathTerminals+"/"+id, nil, nil, &info, MaxResponseBytes, defaultCallTimeout); err != nil {
		return err
	}
	return info.validate()
}

// AttachTerminal connects to a terminal's raw byte stream: reads return its
// output from the moment of attaching on, writes are typed into it. Close
// detaches; the terminal goes on. ctx bounds only the handshake (by default
// as long as an ordinary call).
func (c *Client) AttachTerminal(ctx context.Context, id string) (io.ReadWriteCloser, error) {
	if err := checkID("terminal", id); err != nil {
		return nil, err
	}
	conn, err := c.upgrade(ctx, upgradeRequest{
		method:   http.MethodGet,
		path:     PathTerminals + "/" + id + "/attach",
		protocol: TerminalUpgrade,
		what:     "attaching",
	}, nil)
	if err != nil {
		return nil, err
	}
	return conn, nil
}
