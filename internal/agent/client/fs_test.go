package client

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/berth-dev/berth/internal/agent/wire"
)

func TestFSClientRejectsBadAnswers(t *testing.T) {
	for name, body := range map[string]string{
		"relative path":  `{"path":"x","name":"x","type":"file","size":1,"mode":"0644","mod_time":"2026-01-01T00:00:00Z"}`,
		"unclean path":   `{"path":"/a/../b","name":"b","type":"file","size":1,"mode":"0644","mod_time":"2026-01-01T00:00:00Z"}`,
		"wrong name":     `{"path":"/a/b","name":"c","type":"file","size":1,"mode":"0644","mod_time":"2026-01-01T00:00:00Z"}`,
		"unknown type":   `{"path":"/a/b","name":"b","type":"door","size":1,"mode":"0644","mod_time":"2026-01-01T00:00:00Z"}`,
		"negative size":  `{"path":"/a/b","name":"b","type":"file","size":-1,"mode":"0644","mod_time":"2026-01-01T00:00:00Z"}`,
		"bad mode":       `{"path":"/a/b","name":"b","type":"file","size":1,"mode":"rwx","mod_time":"2026-01-01T00:00:00Z"}`,
		"target of file": `{"path":"/a/b","name":"b","type":"file","size":1,"mode":"0644","link_target":"x","mod_time":"2026-01-01T00:00:00Z"}`,
	} {
		t.Run(name, func(t *testing.T) {
			sock := fakeAgent(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set(wire.ProtocolHeader, "1")
				_, _ = w.Write([]byte(body))
			})
			c := New(sock)
			defer c.Close()
			if _, err := c.Stat(context.Background(), "/a/b"); !errors.Is(err, ErrBadResponse) {
				t.Errorf("Stat accepted %s: %v", body, err)
			}
		})
	}
}
