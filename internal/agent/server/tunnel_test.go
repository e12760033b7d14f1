package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
)

// echoUpper serves on loopback: it answers each line upper-cased and, at
// end of file, writes "bye" and closes, so a test sees a half close pass.
func echoUpper(t *testing.T, network, addr string) int {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					io.WriteString(c, strings.ToUpper(sc.Text())+"\n")
				}
				io.WriteString(c, "bye\n")
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestTunnelSplicesAndHalfCloses(t *testing.T) {
	_, sock := startServer(t)
	c := client.New(sock)
	for _, tc := range []struct{ name, network, addr string }{
		{"ipv4", "tcp4", "127.0.0.1:0"},
		{"ipv6 only", "tcp6", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := echoUpper(t, tc.network, tc.addr)
			tun, err := c.DialTunnel(context.Background(), port)
			if err != nil {
				t.Fatal(err)
			}
			defer tun.Close()
			br := bufio.NewReader(tun)
			io.WriteString(tun, "hello\n")
			if line, err := br.ReadString('\n'); err != nil || line != "HELLO\n" {
				t.Fatalf("got %q, %v", line, err)
			}
			if err := tun.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			// The server saw end of file, answered, and closed: the
			// answer arrives, then end of file.
			rest, err := io.ReadAll(br)
			if err != nil || string(rest) != "bye\n" {
				t.Fatalf("after half close: %q, %v", rest, err)
			}
		})
	}
}

func TestTunnelRefusals(t *testing.T) {
	_, sock := startServer(t)
	c := client.New(sock)
	// A port nobody listens on: take one and give it back.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	_, err = c.DialTunnel(context.Background(), port)
	var remote *client.RemoteError
	if !client.IsUnreachable(err) || !asRemote(err, &remote) || remote.StatusCode != 502 ||
		!strings.Contains(remote.Message, "nothing in the workspace accepts connections on port") {
		t.Fatalf("closed port: %v", err)
	}
	for _, q := range []string{"0", "70000", "x", ""} {
		err := c.Call(context.Background(), "POST", wire.PathTunnel+"?port="+q, nil, nil)
		if !asRemote(err, &remote) || remote.StatusCode != 426 {
			// Without the upgrade headers the request is refused first.
			t.Fatalf("port %q without upgrade: %v", q, err)
		}
	}
	if _, err := c.DialTunnel(context.Background(), 0); err == nil {
		t.Fatal("port 0 dialed")
	}
}

func TestTunnelEndsWhenAgentStops(t *testing.T) {
	sock := filepath.Join(t.TempDir(), wire.SocketName)
	s, err := newServer(Options{SocketPath: sock, Subreaper: true,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	defer cancel()
	if _, err := client.WaitReady(context.Background(), sock, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	port := echoUpper(t, "tcp4", "127.0.0.1:0")
	tun, err := client.New(sock).DialTunnel(context.Background(), port)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	cancel()
	<-done
	// A tunnel is no request: only the agent's end closes it.
	tun.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(tun); err != nil {
		t.Fatalf("read after the agent stopped: %v", err)
	}
}

func asRemote(err error, into **client.RemoteError) bool {
	r, ok := err.(*client.RemoteError)
	if !ok {
		return false
	}
	*into = r
	return true
}
