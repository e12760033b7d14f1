package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// tunnelTable serves PathTunnel: a TCP connection to a workspace port,
// spliced onto the host's connection. Tunnels belong to their connections;
// the table only counts them.
type tunnelTable struct {
	s      *server
	active atomic.Int32
	// dialTimeout is wire.TunnelDialTimeout; a field for tests.
	dialTimeout time.Duration
}

func (s *server) routeTunnels(mux *http.ServeMux) {
	tt := &tunnelTable{s: s, dialTimeout: wire.TunnelDialTimeout}
	route(mux, wire.PathTunnel, map[string]http.HandlerFunc{http.MethodPost: tt.handleTunnel})
}

func (tt *tunnelTable) handleTunnel(w http.ResponseWriter, r *http.Request) {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), wire.TunnelUpgrade) {
		w.Header().Set("Upgrade", wire.TunnelUpgrade)
		writeError(w, http.StatusUpgradeRequired, wire.CodeBadRequest,
			"a tunnel needs Connection: Upgrade and Upgrade: "+wire.TunnelUpgrade)
		return
	}
	port, err := strconv.Atoi(r.URL.Query().Get("port"))
	if err != nil || port < 1 || port > 65535 {
		writeAPIError(w, badRequest("port %q is not a TCP port: give 1-65535", wire.TruncateInfo(r.URL.Query().Get("port"), 16)))
		return
	}
	if tt.active.Add(1) > wire.MaxTunnels {
		tt.active.Add(-1)
		writeAPIError(w, &apiError{http.StatusTooManyRequests, wire.CodeLimit,
			fmt.Sprintf("too many tunnels open (%d); close some first", wire.MaxTunnels)})
		return
	}
	defer tt.active.Add(-1)

	target, err := tt.dial(r.Context(), port)
	if err != nil {
		writeAPIError(w, &apiError{http.StatusBadGateway, wire.CodeUnreachable, err.Error()})
		return
	}
	defer target.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeAPIError(w, internalError("cannot take over the connection: %v", err))
		return
	}
	defer conn.Close()
	// The server's timeouts no longer apply to a taken-over connection.
	_ = conn.SetDeadline(time.Time{})
	_, err = io.WriteString(brw, "HTTP/1.1 101 Switching Protocols\r\n"+
		"Connection: Upgrade\r\nUpgrade: "+wire.TunnelUpgrade+"\r\n"+
		wire.ProtocolHeader+": "+strconv.Itoa(wire.ProtocolVersion)+"\r\n\r\n")
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		return
	}
	splice(conn, brw.Reader, target, tt.s.reaper.stopCh)
}

// dial connects to port on the workspace's loopback, IPv4 first: servers
// bound to localhost listen on one or both, and a dual-stack [::] listener
// accepts 127.0.0.1 too.
func (tt *tunnelTable) dial(ctx context.Context, port int) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(ctx, tt.dialTimeout)
	defer cancel()
	var d net.Dialer
	var errs []string
	for _, host := range []string{"127.0.0.1", "::1"} {
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err == nil {
			return c.(*net.TCPConn), nil
		}
		errs = append(errs, dialReason(host, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("nothing in the workspace accepts connections on port %d (%s); start a server listening on it (on 0.0.0.0, 127.0.0.1 or ::)",
		port, strings.Join(errs, "; "))
}

// dialReason is why host did not accept, in a few words.
func dialReason(host string, err error) string {
	var reason string
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		reason = "no answer in time"
	default:
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			reason = op.Err.Error()
			var se interface{ Unwrap() error }
			if errors.As(op.Err, &se) && se.Unwrap() != nil {
				reason = se.Unwrap().Error()
			}
		} else {
			reason = err.Error()
		}
	}
	return host + ": " + reason
}

// halfCloser is a connection whose writing side can be shut down alone.
type halfCloser interface {
	CloseWrite() error
}

// splice copies host→target (reading through hostR, which may hold bytes
// the host sent right after its request) and target→host until both
// directions have ended, passing each end of file on as a half close. A
// failed copy, or stop, ends both.
func splice(host net.Conn, hostR io.Reader, target *net.TCPConn, stop <-chan struct{}) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = host.Close()
			_ = target.Close()
		})
	}
	done := make(chan struct{}, 2)
	go func() {
		_, err := io.Copy(target, hostR)
		if err == nil {
			err = target.CloseWrite()
		}
		if err != nil {
			closeBoth()
		}
		done <- struct{}{}
	}()
	go func() {
		_, err := io.Copy(host, target)
		if err == nil {
			if hc, ok := host.(halfCloser); ok {
				err = hc.CloseWrite()
			} else {
				err = errors.New("no half close")
			}
		}
		if err != nil {
			closeBoth()
		}
		done <- struct{}{}
	}()
	for ended := 0; ended < 2; {
		select {
		case <-done:
			ended++
		case <-stop:
			closeBoth()
			stop = nil
		}
	}
	closeBoth()
}
