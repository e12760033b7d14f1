package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errhttp"
)

const (
	// dialTimeout bounds connecting to the socket; a local socket either
	// accepts at once or not at all, so this only guards a wedged agent.
	dialTimeout = 2 * time.Second
	// defaultCallTimeout applies to calls whose context has no deadline.
	// There is no client-wide timeout because later endpoints stream.
	defaultCallTimeout = 10 * time.Second
	// answerTimeout bounds how long a streaming endpoint (exec, file and
	// archive downloads) may take to start its answer; a correct agent
	// answers as soon as the work has started. What follows is bounded
	// by the caller's context.
	answerTimeout = 30 * time.Second
	// transferTimeout bounds uploads and imports whose context has no
	// deadline: gigabytes cross a unix socket in seconds, so only an
	// agent that stopped reading or answering ever needs it.
	transferTimeout = 30 * time.Minute
	// DefaultReadyTimeout is what WaitReady uses for a timeout <= 0.
	DefaultReadyTimeout = 10 * time.Second

	readyMaxAttempt = 2 * time.Second
	// A poll before the agent listens costs one failed open in the agent
	// directory, so polling often is cheap; polling rarely made a create
	// wait up to the whole gap after the agent was ready (a 200 ms cap
	// added tens of milliseconds to a typical create).
	readyFirstDelay  = 5 * time.Millisecond
	readyMaxDelay    = 25 * time.Millisecond
	maxRemoteMessage = 1024
	maxRemoteCode    = 64
)

// Client talks to one workspace's agent from the host. It is safe for
// concurrent use.
type Client struct {
	socketPath    string
	transport     *http.Transport
	http          *http.Client
	answerTimeout time.Duration
}

// Option configures a Client.
type Option func(*clientOptions)

type clientOptions struct {
	initPID uint32
}

// WithInitPID makes every connection prove that its listening end is the
// process pid (the workspace's init, as the host sees it): a socket served
// by anything else fails with ErrNotAgent before a request is sent. The
// socket lives in a directory the workspace can write, so host code must
// always set it; only tests of the agent in this process leave it out.
func WithInitPID(pid uint32) Option {
	return func(o *clientOptions) { o.initPID = pid }
}

// New returns a client for the agent listening on socketPath (the host
// side of the per-workspace directory). It does not connect until used.
func New(socketPath string, opts ...Option) *Client {
	var o clientOptions
	for _, opt := range opts {
		opt(&o)
	}
	tr := &http.Transport{
		// Every request goes to the socket whatever the URL says, so a
		// hostile agent cannot point the host at another address.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialAgent(ctx, socketPath, o.initPID)
		},
		Proxy:                  nil,
		DisableCompression:     true,
		MaxIdleConns:           4,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &Client{
		socketPath:    socketPath,
		answerTimeout: answerTimeout,
		transport:     tr,
		http: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
}

// SocketPath returns the socket the client dials.
func (c *Client) SocketPath() string { return c.socketPath }

// Close drops idle connections, for example when the workspace stops.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// Health asks the agent how it is. A *ProtocolMismatchError means the agent
// is a berth agent of another protocol version; errors wrapping
// ErrBadResponse mean whatever answered is not usable.
func (c *Client) Health(ctx context.Context) (wire.Health, error) {
	var h wire.Health
	if err := c.Call(ctx, http.MethodGet, wire.PathHealth, nil, &h); err != nil {
		return wire.Health{}, err
	}
	if err := checkHealth(h); err != nil {
		return wire.Health{}, err
	}
	return h, nil
}

// checkHealth validates a Health decoded from a response whose header
// already said ProtocolVersion.
func checkHealth(h wire.Health) error {
	if err := validateHealth(h); err != nil {
		return err
	}
	if h.ProtocolVersion != wire.ProtocolVersion {
		// A body that contradicts the header is not something to reason
		// about.
		return fmt.Errorf("%w: protocol_version %d contradicts the %s header",
			ErrBadResponse, h.ProtocolVersion, wire.ProtocolHeader)
	}
	return nil
}

// Call performs one request, with in (if not nil) as its JSON body, and
// decodes a 2xx JSON answer of at most MaxResponseBytes into out. Host code
// uses the typed methods; the agent server's tests use Call to send what
// those never would.
func (c *Client) Call(ctx context.Context, method, path string, in, out any) error {
	return c.doJSON(ctx, method, path, nil, in, out, wire.MaxResponseBytes, defaultCallTimeout)
}

// errAgentSilent ends a request whose answer did not start in time.
var errAgentSilent = errors.New("the agent did not start answering")

// send performs req and gives the agent answerTimeout to start answering;
// the rest of the response is bounded by req's context only. The
// response's body must be closed as usual.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(c.answerTimeout, func() { cancel(errAgentSilent) })
	resp, err := c.http.Do(req.WithContext(ctx))
	timer.Stop()
	if err != nil {
		cause := context.Cause(ctx)
		cancel(nil)
		if errors.Is(cause, errAgentSilent) {
			return nil, fmt.Errorf("berth agent: %w within %s (is the workspace overloaded or its agent wedged?)", errAgentSilent, c.answerTimeout)
		}
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

// cancelOnClose releases a response's context once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// request is one round trip to the agent with a JSON answer.
type request struct {
	method, path string
	query        url.Values
	body         io.Reader // nil: none
	contentType  string
	maxBody      int64         // cap on the answer
	timeout      time.Duration // applied when ctx has no deadline; 0: none
}

// do performs r and decodes a 2xx answer into out. Every JSON endpoint
// goes through here, so all share the same caps and checks.
func (c *Client) do(ctx context.Context, r request, out any) error {
	if _, ok := ctx.Deadline(); !ok && r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	u := "http://berth-agent" + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, r.body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("berth agent: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.maxBody+1))
	if err != nil {
		return fmt.Errorf("berth agent: reading response: %w", err)
	}
	return decodeLimited(resp.StatusCode, resp.Header, body, out, r.maxBody)
}

// decodeResponse interprets one complete (size-capped) answer from the agent.
// It is apart from call so that fuzzing can feed it arbitrary input.
func decodeResponse(status int, h http.Header, body []byte, out any) error {
	return decodeLimited(status, h, body, out, wire.MaxResponseBytes)
}

// checkProtocolHeader runs before any body is interpreted: the shape of the
// body is only known for our own protocol version.
func checkProtocolHeader(h http.Header, body []byte) error {
	v := h.Get(wire.ProtocolHeader)
	if v == "" {
		return fmt.Errorf("%w: no %s header (is something other than a berth agent listening?)", ErrBadResponse, wire.ProtocolHeader)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return fmt.Errorf("%w: %s header %q", ErrBadResponse, wire.ProtocolHeader, sanitizeText(v, 32))
	}
	if n == wire.ProtocolVersion {
		return nil
	}
	// Best effort: name the berth build that started the workspace, if the
	// body happens to say so in the shape this version knows.
	var peek struct {
		BerthVersion string `json:"berth_version"`
	}
	_ = json.Unmarshal(body, &peek)
	if checkText(peek.BerthVersion, maxVersionLen) != nil {
		peek.BerthVersion = ""
	}
	return &ProtocolMismatchError{Got: n, Want: wire.ProtocolVersion, BerthVersion: peek.BerthVersion}
}

// RemoteError is an error response from the agent. Code and Message come
// from the workspace and are sanitized (printable, length-capped).
type RemoteError struct {
	StatusCode int
	Code       string
	Message    string
}

// Unwrap is the errdefs class of the agent's answer, so that berth
// decides by class (errdefs.IsNotFound, errhttp.ToHTTP) and never by the
// agent's codes, the way containerd's clients translate a remote status
// (ToNative). A code without a class of its own keeps the agent's HTTP
// status as an unexpected one (errhttp.ToHTTP gives it back).
func (e *RemoteError) Unwrap() error {
	if class, ok := codeClass[e.Code]; ok {
		return class
	}
	if e.StatusCode >= 400 && e.StatusCode < 600 {
		return errhttp.ToNative(e.StatusCode)
	}
	return errdefs.ErrUnknown
}

// codeClass maps the agent's error codes onto errdefs classes. It agrees
// with the statuses the agent sends (wire.CodeStatus).
var codeClass = map[string]error{
	wire.CodeBadRequest:   errdefs.ErrInvalidArgument,
	wire.CodeInvalid:      errdefs.ErrInvalidArgument,
	wire.CodeIsDirectory:  errdefs.ErrInvalidArgument,
	wire.CodeNotDirectory: errdefs.ErrInvalidArgument,
	wire.CodeNotFound:     errdefs.ErrNotFound,
	wire.CodeExists:       errdefs.ErrConflict,
	wire.CodeConflict:     errdefs.ErrConflict,
	wire.CodeNotEmpty:     errdefs.ErrConflict,
	wire.CodeBusy:         errdefs.ErrConflict,
	wire.CodePermission:   errdefs.ErrPermissionDenied,
	wire.CodeCanceled:     errdefs.ErrUnavailable,
	wire.CodeInternal:     errdefs.ErrInternal,
}

func (e *RemoteError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("berth agent: HTTP %d: %s", e.StatusCode, e.Message)
	}
	return fmt.Sprintf("berth agent: %s (%s, HTTP %d)", e.Message, e.Code, e.StatusCode)
}

func remoteError(status int, body []byte) error {
	var er wire.ErrorResponse
	if err := json.Unmarshal(body, &er); err != nil || er.Error == "" {
		return &RemoteError{StatusCode: status, Message: http.StatusText(status)}
	}
	return &RemoteError{
		StatusCode: status,
		Code:       sanitizeText(er.Code, maxRemoteCode),
		Message:    sanitizeText(er.Error, maxRemoteMessage),
	}
}

// sanitizeText makes untrusted text safe to log and show: invalid UTF-8
// and unprintable characters become '?', and long text is cut at a rune
// boundary.
func sanitizeText(s string, maxLen int) string {
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > maxLen {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// NotReadyError says the agent did not answer within WaitReady's timeout.
// It unwraps to the last error seen, so callers can tell a missing socket
// (fs.ErrNotExist) from a refused connection.
type NotReadyError struct {
	SocketPath string
	Timeout    time.Duration
	Last       error
}

func (e *NotReadyError) Error() string {
	return fmt.Sprintf("berth agent did not answer on %s within %s (last error: %v); "+
		"possible causes: the container exited or the agent failed to start (check the workspace's log), "+
		"or the image has no /run directory so the agent's socket directory could not be mounted",
		e.SocketPath, e.Timeout, e.Last)
}

func (e *NotReadyError) Unwrap() error { return e.Last }

// WaitReady polls the agent on socketPath until it answers /v1/health with
// this protocol version, for at most timeout (DefaultReadyTimeout if <= 0).
//
// It stops early, without waiting out the timeout, when the answer is
// conclusive: a *ProtocolMismatchError (the workspace must be restarted), an
// error wrapping ErrBadResponse, or a 4xx *RemoteError. On timeout it returns
// a *NotReadyError; if ctx ends first, an error wrapping ctx.Err().
func WaitReady(ctx context.Context, socketPath string, timeout time.Duration, opts ...Option) (wire.Health, error) {
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	c := New(socketPath, opts...)
	defer c.Close()

	deadline := time.Now().Add(timeout)
	delay := readyFirstDelay
	var last error
	for first := true; ; first = false {
		remaining := time.Until(deadline)
		if remaining <= 0 && !first {
			return wire.Health{}, &NotReadyError{SocketPath: socketPath, Timeout: timeout, Last: last}
		}
		// The first attempt gets its full time whatever the deadline, and
		// an attempt cut short by its own time does not replace what an
		// earlier one learnt: on a starved machine the wait would end
		// naming only its own deadline, not why the agent did not answer.
		attempt := readyMaxAttempt
		if !first {
			attempt = min(remaining, readyMaxAttempt)
		}
		actx, cancel := context.WithTimeout(ctx, attempt)
		h, err := c.Health(actx)
		cut := actx.Err() != nil
		cancel()
		if err == nil {
			return h, nil
		}
		if ctx.Err() != nil {
			return wire.Health{}, fmt.Errorf("waiting for berth agent on %s: %w", socketPath, ctx.Err())
		}
		if conclusive(err) {
			return wire.Health{}, fmt.Errorf("berth agent on %s: %w", socketPath, err)
		}
		if last == nil || !cut {
			last = err
		}

		wait := min(delay, time.Until(deadline))
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return wire.Health{}, fmt.Errorf("waiting for berth agent on %s: %w", socketPath, ctx.Err())
			case <-t.C:
			}
		}
		delay = min(delay*2, readyMaxDelay)
	}
}

// conclusive reports whether err came from something that did answer, so
// asking again cannot give a better result.
func conclusive(err error) bool {
	var pm *ProtocolMismatchError
	if errors.As(err, &pm) || errors.Is(err, ErrBadResponse) {
		return true
	}
	var re *RemoteError
	return errors.As(err, &re) && re.StatusCode >= 400 && re.StatusCode < 500
}

// maxVersionLen bounds the free-form version string the agent reports; it
// ends up in logs and error messages on the host.
const maxVersionLen = 128

// ErrBadResponse marks an answer that came from something listening on the
// socket but is not a valid berth agent response (too large, malformed, or
// with impossible values). Retrying does not help.
var ErrBadResponse = errors.New("invalid response from berth agent")

// validateHealth checks a Health document read from the (untrusted) agent.
func validateHealth(h wire.Health) error {
	switch {
	case h.ProtocolVersion < 1:
		return fmt.Errorf("%w: protocol_version %d", ErrBadResponse, h.ProtocolVersion)
	case h.PID < 1:
		return fmt.Errorf("%w: pid %d", ErrBadResponse, h.PID)
	case h.StartedAt.IsZero():
		return fmt.Errorf("%w: started_at missing", ErrBadResponse)
	case h.Children < -1:
		return fmt.Errorf("%w: children %d", ErrBadResponse, h.Children)
	}
	if err := checkText(h.BerthVersion, maxVersionLen); err != nil {
		return fmt.Errorf("%w: berth_version: %v", ErrBadResponse, err)
	}
	return nil
}

// checkText accepts short, printable UTF-8 only, because such strings from
// the agent end up in host logs and in messages shown to models and people.
func checkText(s string, maxLen int) error {
	if len(s) > maxLen {
		return fmt.Errorf("%d bytes, more than %d", len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("contains unprintable character %U", r)
		}
	}
	return nil
}

// ProtocolMismatchError says the agent in a workspace speaks another protocol
// version than this berth. The agent binary is fixed when the container
// starts, so the only remedy is restarting the workspace.
type ProtocolMismatchError struct {
	Got, Want int
	// BerthVersion is what the agent reported, if it could be read; it is
	// untrusted and already sanitized.
	BerthVersion string
}

func (e *ProtocolMismatchError) Error() string {
	who := "another berth version"
	if e.BerthVersion != "" {
		who = fmt.Sprintf("berth %q", e.BerthVersion)
	}
	return fmt.Sprintf("berth agent speaks protocol %d but this berth speaks protocol %d: "+
		"the workspace was started by %s; restarting it gets the current agent",
		e.Got, e.Want, who)
}
