package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
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
			// Bounded: a splice that stalls fails the test instead of hanging it.
			tun.SetDeadline(time.Now().Add(tunnelTestBound))
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

// tunnelTestBound is how long the tunnel tests wait for anything: far above
// what a loaded machine needs, far below the suite's timeout, so a stall
// fails with a message instead of hanging the run.
const tunnelTestBound = 20 * time.Second

// runAgent starts an agent whose run the test stops through the returned
// cancel; stopped waits for run to return, at most tunnelTestBound.
func runAgent(t *testing.T) (sock string, cancel context.CancelFunc, stopped func() error) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), wire.SocketName)
	s, err := newServer(Options{SocketPath: sock, Subreaper: true,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	var once sync.Once
	var runErr error
	stopped = func() error {
		once.Do(func() {
			select {
			case runErr = <-done:
			case <-time.After(tunnelTestBound):
				runErr = fmt.Errorf("the agent's run did not return within %v of cancel", tunnelTestBound)
			}
		})
		return runErr
	}
	// Whatever the test did, stop the agent before the next test starts;
	// stopped receives from done once only, so this never waits twice.
	t.Cleanup(func() {
		cancel()
		if err := stopped(); err != nil {
			t.Error(err)
		}
	})
	if _, err := client.WaitReady(context.Background(), sock, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return sock, cancel, stopped
}

// readToEnd reads tun until it ends and fails the test if it is still open
// after tunnelTestBound.
func readToEnd(t *testing.T, tun net.Conn, what string) error {
	t.Helper()
	tun.SetReadDeadline(time.Now().Add(tunnelTestBound))
	_, err := io.ReadAll(tun)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: tunnel still open %v after the agent stopped", what, tunnelTestBound)
	}
	return err
}

func TestTunnelEndsWhenAgentStops(t *testing.T) {
	sock, cancel, stopped := runAgent(t)
	port := echoUpper(t, "tcp4", "127.0.0.1:0")
	tun, err := client.New(sock).DialTunnel(context.Background(), port)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	cancel()
	if err := stopped(); err != nil {
		t.Fatalf("with a tunnel open: %v", err)
	}
	// A tunnel is no request: only the agent's end closes it.
	if err := readToEnd(t, tun, "open tunnel"); err != nil {
		t.Fatalf("read after the agent stopped: %v", err)
	}
}

// TestTunnelAgentStopsWhileTunnelsOpen stops the agent while tunnels are
// being opened, so that the stop lands before, during and after the 101 and
// the start of the splice: the agent must return and every tunnel that did
// open must end, whatever the interleaving.
func TestTunnelAgentStopsWhileTunnelsOpen(t *testing.T) {
	port := echoUpper(t, "tcp4", "127.0.0.1:0")
	for i := range 20 {
		sock, cancel, stopped := runAgent(t)
		c := client.New(sock)
		const n = 4
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancelDial := context.WithTimeout(context.Background(), tunnelTestBound)
				defer cancelDial()
				tun, err := c.DialTunnel(ctx, port)
				if err != nil {
					return // the agent stopped first: refused or cut off, either is fine
				}
				defer tun.Close()
				readToEnd(t, tun, fmt.Sprintf("round %d", i))
			}()
		}
		time.Sleep(time.Duration(i%5) * 200 * time.Microsecond)
		cancel()
		if err := stopped(); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		wg.Wait()
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
