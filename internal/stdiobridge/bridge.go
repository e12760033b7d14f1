// Package stdiobridge lets `berth serve --stdio` work while another berth
// serves the same containerd namespace over HTTP (the service that make run
// and make install start). Two berths must not serve one namespace (see
// internal/nslock), so the stdio berth does not serve it: it relays its
// client's MCP session to the holder's /mcp endpoint over streamable HTTP,
// with the holder's admin token, and the client sees the same workspaces
// as every other client of the service.
package stdiobridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/nslock"
)

// Options are what the stdio berth brings to the bridge.
type Options struct {
	// Token is this berth's own --token/BERTH_TOKEN, used instead of the
	// holder's token file when set.
	Token string
	// Bot is --bot: the session is limited to that bot, as /mcp?bot=ID is.
	Bot string
	// ValidateBot checks Bot before anything is relayed (the server would
	// refuse a bad one only at initialize, where the client shows it
	// less plainly); nil checks nothing.
	ValidateBot func(string) error
	Logger      *slog.Logger
	// ListenWait bounds the wait for a holder that is starting up to bind
	// its address; 0 means two minutes.
	ListenWait time.Duration
}

// Bridgeable reports whether a refusal from nslock.Acquire names a berth
// that serves HTTP, which a stdio berth can reach instead.
func Bridgeable(err error) (*nslock.HeldError, bool) {
	var held *nslock.HeldError
	if errors.As(err, &held) && held.Holder.Transport == "http" {
		return held, true
	}
	return nil, false
}

// Serve relays the MCP session on in/out to the berth that holds the
// namespace until in ends or ctx ends.
func Serve(ctx context.Context, held *nslock.HeldError, o Options, in io.Reader, out io.Writer) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Bot != "" && o.ValidateBot != nil {
		if err := o.ValidateBot(o.Bot); err != nil {
			return fmt.Errorf("--bot: %w", err)
		}
	}
	h, err := awaitListening(ctx, held, cmpDuration(o.ListenWait, 2*time.Minute), log)
	if err != nil {
		return err
	}
	endpoint, err := Endpoint(h.HTTPAddr, o.Bot)
	if err != nil {
		return fmt.Errorf("%v; its address: %w", held, err)
	}
	token, err := Token(h, o.Token, endpoint)
	if err != nil {
		return fmt.Errorf("%v\n%w", held, err)
	}
	log.Info("namespace served by another berth over HTTP: bridging this stdio session to it",
		"holder", h.String(), "url", endpoint, "namespace", held.Namespace, "bot", o.Bot)
	r := &Relay{URL: endpoint, Token: token, Logger: log}
	return r.Run(ctx, in, out)
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// awaitListening returns the holder's record once it has bound its
// address: a berth that is starting up holds the namespace before it
// listens.
func awaitListening(ctx context.Context, held *nslock.HeldError, wait time.Duration, log *slog.Logger) (nslock.Holder, error) {
	h := held.Holder
	deadline := time.Now().Add(wait)
	logged := false
	for !h.Listening {
		if !logged {
			log.Info("the berth holding the namespace is starting up: waiting for it to listen", "holder", h.String())
			logged = true
		}
		if time.Now().After(deadline) {
			return h, fmt.Errorf("%v; it has not started listening within %s", held, wait)
		}
		select {
		case <-ctx.Done():
			return h, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		var stillHeld bool
		var err error
		if h, stillHeld, err = nslock.Read(held.Path); err != nil {
			return h, fmt.Errorf("%v; reading its lock again: %w", held, err)
		} else if !stillHeld {
			return h, fmt.Errorf("%v; it exited before it served HTTP: start this berth again", held)
		}
	}
	return h, nil
}

// Endpoint is the /mcp URL of a berth listening on addr (as bound), for a
// client on this host; with bot, a session limited to that bot.
func Endpoint(addr, bot string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		// Listening on every address: loopback is one of them. localhost
		// lets the dialer pick whichever of 127.0.0.1 and ::1 answers.
		host = "localhost"
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: "/mcp"}
	if bot != "" {
		u.RawQuery = url.Values{"bot": {bot}}.Encode()
	}
	return u.String(), nil
}

// Token is the bearer token for the holder h: this berth's own when set,
// else the holder's token file. What to do is said when neither works.
func Token(h nslock.Holder, own, endpoint string) (string, error) {
	switch {
	case own != "":
		return own, nil
	case h.NoAuth:
		return "", nil
	case h.TokenFile == "":
		return "", fmt.Errorf("it serves HTTP at %s with a token given by --token or BERTH_TOKEN, which this berth cannot see: "+
			"give this berth the same token (BERTH_TOKEN), or connect your MCP client to %s over HTTP with that token", endpoint, endpoint)
	}
	data, err := os.ReadFile(h.TokenFile)
	if err != nil {
		why := err.Error()
		if errors.Is(err, fs.ErrPermission) {
			why = fmt.Sprintf("this user (uid %d) may not read it", os.Getuid())
		}
		return "", fmt.Errorf("it serves HTTP at %s, and this stdio berth would relay to it with its admin token, "+
			"but cannot read the token file %s (%s): run this stdio berth as the user the service runs as (as root: sudo -n berth serve --stdio), "+
			"give it the token in BERTH_TOKEN, or connect your MCP client to %s over HTTP with `Authorization: Bearer $(sudo berth token)`",
			endpoint, h.TokenFile, why, endpoint)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("the token file %s of the berth serving HTTP at %s is empty", h.TokenFile, endpoint)
	}
	return tok, nil
}
