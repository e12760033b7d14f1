package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// TunnelConn is a TCP connection to a port inside the workspace, carried
// over the agent's socket. Close ends it; CloseWrite sends end of file to
// the workspace's server and keeps reading its answer.
type TunnelConn struct {
	*upgradedConn
	port int
}

// DialTunnel connects to port on the workspace's loopback through the agent,
// which works whatever the workspace's network. ctx bounds only the
// connect (by default as long as an ordinary call). When nothing listens
// there the error is a *RemoteError with code wire.CodeUnreachable (HTTP
// 502) whose message says so.
func (c *Client) DialTunnel(ctx context.Context, port int) (*TunnelConn, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("berth agent: port %d is not a TCP port (1-65535)", port)
	}
	conn, err := c.upgrade(ctx, upgradeRequest{
		method:   http.MethodPost,
		path:     wire.PathTunnel + "?port=" + strconv.Itoa(port),
		protocol: wire.TunnelUpgrade,
		what:     "opening a tunnel to port " + strconv.Itoa(port),
	}, nil)
	if err != nil {
		return nil, err
	}
	return &TunnelConn{upgradedConn: conn, port: port}, nil
}

// Port is the workspace port the tunnel reaches.
func (t *TunnelConn) Port() int { return t.port }

// CloseWrite shuts down the writing side: the workspace's server reads end
// of file, and its answer still arrives.
func (t *TunnelConn) CloseWrite() error {
	if hc, ok := t.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return errors.New("berth agent: tunnel connection cannot half close")
}

// IsUnreachable reports whether err says that nothing accepted the
// tunnel's connection in the workspace.
func IsUnreachable(err error) bool {
	var remote *RemoteError
	return errors.As(err, &remote) && remote.Code == wire.CodeUnreachable
}

var _ net.Conn = (*TunnelConn)(nil)
