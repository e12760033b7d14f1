package client

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/containerd/errdefs"
)

// fakeAgent serves h on a unix socket, standing in for an agent that is
// broken, hostile or of another version.
func fakeAgent(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fake.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

func TestWaitReadyTimesOut(t *testing.T) {
	sock := filepath.Join(t.TempDir(), wire.SocketName)
	_, err := WaitReady(context.Background(), sock, 300*time.Millisecond)
	var nr *NotReadyError
	if !errors.As(err, &nr) {
		t.Fatalf("err = %v (%T), want *NotReadyError", err, err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err does not unwrap to the missing socket: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"did not answer on " + sock, "within 300ms", "exited", "log", "/run"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestWaitReadyHonoursContext(t *testing.T) {
	sock := filepath.Join(t.TempDir(), wire.SocketName)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := WaitReady(ctx, sock, time.Minute)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestWaitReadyProtocolMismatch(t *testing.T) {
	sock := fakeAgent(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(wire.ProtocolHeader, "999")
		_, _ = w.Write([]byte(`{"protocol_version":999,"berth_version":"v9.9.9","shape":"unknown"}`))
	})
	// A mismatch is conclusive: WaitReady must report it instead of
	// polling until the timeout and calling the agent unresponsive.
	_, err := WaitReady(context.Background(), sock, time.Minute)
	var pm *ProtocolMismatchError
	if !errors.As(err, &pm) {
		t.Fatalf("err = %v (%T), want *ProtocolMismatchError", err, err)
	}
	if pm.Got != 999 || pm.Want != wire.ProtocolVersion || pm.BerthVersion != "v9.9.9" {
		t.Errorf("mismatch = %+v", pm)
	}
	for _, want := range []string{"restarting it", "v9.9.9", "999"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
}

func TestClientRejectsBadResponses(t *testing.T) {
	good := `{"protocol_version":1,"berth_version":"v1","pid":1,"started_at":"2026-01-01T00:00:00Z","reaped":0,"children":0}`
	for _, tc := range []struct {
		name   string
		header string
		status int
		body   string
	}{
		{"no protocol header", "", 200, good},
		{"garbage protocol header", "one", 200, good},
		{"not json", "1", 200, "hello"},
		{"too large", "1", 200, `{"berth_version":"` + strings.Repeat("a", wire.MaxResponseBytes) + `"}`},
		{"negative pid", "1", 200, strings.Replace(good, `"pid":1`, `"pid":-3`, 1)},
		{"no start time", "1", 200, strings.Replace(good, `"started_at":"2026-01-01T00:00:00Z",`, ``, 1)},
		{"escape codes in version", "1", 200, strings.Replace(good, `"v1"`, `"\u001b[31mred"`, 1)},
		{"huge version", "1", 200, strings.Replace(good, `"v1"`, `"`+strings.Repeat("v", 500)+`"`, 1)},
		{"body contradicts header", "1", 200, strings.Replace(good, `"protocol_version":1`, `"protocol_version":2`, 1)},
		{"children below -1", "1", 200, strings.Replace(good, `"children":0`, `"children":-2`, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := fakeAgent(t, func(w http.ResponseWriter, _ *http.Request) {
				if tc.header != "" {
					w.Header().Set(wire.ProtocolHeader, tc.header)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			})
			c := New(sock)
			defer c.Close()
			_, err := c.Health(context.Background())
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("err = %v, want ErrBadResponse", err)
			}
			if len(err.Error()) > 4096 {
				t.Errorf("error message is %d bytes; untrusted input must not flood it", len(err.Error()))
			}
		})
	}

	// And the control case: the same fake with a good body is accepted.
	sock := fakeAgent(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(wire.ProtocolHeader, "1")
		_, _ = w.Write([]byte(good))
	})
	if _, err := New(sock).Health(context.Background()); err != nil {
		t.Fatalf("good response rejected: %v", err)
	}
}

func TestRemoteErrorIsSanitized(t *testing.T) {
	sock := fakeAgent(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(wire.ProtocolHeader, "1")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"bad\u001b[2J` + strings.Repeat("x", 5000) + `","code":"nope\n"}`))
	})
	_, err := WaitReady(context.Background(), sock, time.Minute)
	var re *RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want *RemoteError", err)
	}
	if strings.ContainsAny(re.Message+re.Code, "\x1b\n") || len(re.Message) > maxRemoteMessage+8 {
		t.Errorf("unsanitized remote error: code %q, message of %d bytes", re.Code, len(re.Message))
	}
}

func TestClientDoesNotFollowRedirects(t *testing.T) {
	hits := 0
	sock := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		hits++
		w.Header().Set(wire.ProtocolHeader, "1")
		http.Redirect(w, r, "http://example.invalid/elsewhere", http.StatusFound)
	})
	_, err := New(sock).Health(context.Background())
	var re *RemoteError
	if !errors.As(err, &re) || re.StatusCode != http.StatusFound {
		t.Fatalf("err = %v, want a RemoteError for the 302", err)
	}
	if hits != 1 {
		t.Errorf("agent was asked %d times, want 1", hits)
	}
}

func FuzzDecodeHealth(f *testing.F) {
	f.Add(200, "1", []byte(`{"protocol_version":1,"berth_version":"v1","pid":1,"started_at":"2026-01-01T00:00:00Z"}`))
	f.Add(500, "1", []byte(`{"error":"boom","code":"internal"}`))
	f.Add(200, "2", []byte(`{"berth_version":"v2"}`))
	f.Fuzz(func(t *testing.T, status int, header string, body []byte) {
		h := http.Header{}
		if header != "" {
			h.Set(wire.ProtocolHeader, header)
		}
		var got wire.Health
		err := decodeResponse(status, h, body, &got)
		if err == nil {
			err = checkHealth(got)
			if err == nil && (got.ProtocolVersion != wire.ProtocolVersion || got.PID < 1 || checkText(got.BerthVersion, maxVersionLen) != nil) {
				t.Fatalf("accepted invalid health %+v", got)
			}
			return
		}
		var pm *ProtocolMismatchError
		if errors.As(err, &pm) {
			if pm.Got == wire.ProtocolVersion || checkText(pm.BerthVersion, maxVersionLen) != nil {
				t.Fatalf("bad mismatch error %+v for header %q", pm, header)
			}
			if n, _ := strconv.Atoi(header); n != pm.Got {
				t.Fatalf("mismatch Got %d for header %q", pm.Got, header)
			}
		}
		var re *RemoteError
		if errors.As(err, &re) && (checkText(re.Code, maxRemoteCode+3) != nil || checkText(re.Message, maxRemoteMessage+3) != nil) {
			t.Fatalf("unsanitized remote error %+v", re)
		}
	})
}

// TestBadIDsAreInvalidArguments: an id that cannot be one berth gave is
// the caller's mistake (400 over HTTP), refused before any call.
func TestBadIDsAreInvalidArguments(t *testing.T) {
	for _, id := range []string{"", "../t1", "t1/../p1", "t 1", strings.Repeat("t", 65), "t\x00"} {
		if err := checkID("terminal", id); !errdefs.IsInvalidArgument(err) {
			t.Errorf("checkID(%q) = %v, want an invalid argument", id, err)
		}
	}
	for _, id := range []string{"t1", "p12", "a-b_C"} {
		if err := checkID("process", id); err != nil {
			t.Errorf("checkID(%q) = %v", id, err)
		}
	}
}
