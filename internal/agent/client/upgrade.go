package client

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// upgradeRequest asks the agent to take a connection over for another
// protocol (terminal attach, stdio processes).
type upgradeRequest struct {
	method, path string
	// body, if not nil, is sent as JSON.
	body []byte
	// protocol goes in the Upgrade header and must come back in the 101.
	protocol string
	// what names the call in errors ("attaching").
	what string
}

// upgrade dials the agent, sends r and expects 101 Switching Protocols to
// r.protocol; any other answer becomes the error it describes. ctx bounds
// only the handshake (by default as long as an ordinary call), and so does
// after, if not nil: it runs with the handshake's deadline still on the
// connection, to read what the agent sends first.
func (c *Client) upgrade(ctx context.Context, r upgradeRequest, after func(*upgradedConn) error) (*upgradedConn, error) {
	hctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, defaultCallTimeout)
		defer cancel()
	}
	conn, err := c.transport.DialContext(hctx, "unix", "berth-agent")
	if err != nil {
		return nil, fmt.Errorf("berth agent: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = conn.Close()
		}
	}()
	// Reading the answer blocks in the network stack, where only a
	// deadline reaches it.
	if dl, has := hctx.Deadline(); has {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(hctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, "http://berth-agent"+r.path, body)
	if err != nil {
		return nil, err
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", r.protocol)
	if err := req.Write(conn); err != nil {
		return nil, upgradeErr(hctx, r.what, err)
	}
	br := bufio.NewReaderSize(conn, 32<<10)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, upgradeErr(hctx, r.what, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxResponseBytes+1))
		_ = resp.Body.Close()
		if err != nil {
			return nil, upgradeErr(hctx, r.what, err)
		}
		var unused struct{}
		if err := decodeResponse(resp.StatusCode, resp.Header, body, &unused); err != nil {
			return nil, err
		}
		return nil, badResponse("%s: answered HTTP %d instead of 101", r.what, resp.StatusCode)
	}
	if err := checkProtocolHeader(resp.Header, nil); err != nil {
		return nil, err
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), r.protocol) {
		return nil, badResponse("%s: switched to %q instead of %q", r.what, wire.TruncateInfo(resp.Header.Get("Upgrade"), 32), r.protocol)
	}
	uc := &upgradedConn{Conn: conn, r: br}
	if after != nil {
		if err := after(uc); err != nil {
			return nil, upgradeErr(hctx, r.what, err)
		}
	}
	if !stop() {
		// ctx ended just as the handshake finished.
		return nil, upgradeErr(hctx, r.what, hctx.Err())
	}
	_ = conn.SetDeadline(time.Time{})
	ok = true
	return uc, nil
}

func upgradeErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("berth agent: %s: %w", what, ctx.Err())
	}
	return fmt.Errorf("berth agent: %s: %w", what, err)
}

// upgradedConn reads through the buffer that read the 101 answer, which may
// already hold what the agent sent next.
type upgradedConn struct {
	net.Conn
	r *bufio.Reader
}

func (u *upgradedConn) Read(p []byte) (int, error) { return u.r.Read(p) }
