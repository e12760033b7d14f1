package stdiobridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// maxMessage bounds one JSON-RPC message either way. berth refuses request
// bodies over 32 MiB; its answers are capped well below this.
const maxMessage = 64 << 20

// errTooLong is a message over maxMessage.
var errTooLong = errors.New("message too long")

// Relay carries one MCP session between a stdio client (in, out) and a
// streamable HTTP endpoint. Messages pass byte for byte (ids included),
// except that a multi-line message from an SSE event is compacted onto
// one line, as stdio framing needs.
type Relay struct {
	URL    string // the /mcp endpoint, with its query (?bot=)
	Token  string // bearer token; empty sends none
	Client *http.Client
	Logger *slog.Logger

	out   io.Writer
	outMu sync.Mutex

	mu       sync.Mutex
	session  string          // Mcp-Session-Id, once initialized
	protocol string          // the negotiated protocol version
	initMsg  json.RawMessage // the client's initialize, replayed if the server forgets the session
	stopGET  context.CancelFunc

	wg sync.WaitGroup // requests in flight and the GET stream
}

// envelope is what the relay reads of a message to route it.
type envelope struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

func (e envelope) isRequest() bool { return e.Method != "" && len(e.ID) > 0 && string(e.ID) != "null" }

// Run relays until in ends (the client closed its side) or ctx ends, then
// ends the remote session (DELETE) and returns. Requests still in flight are
// cancelled, as berth's own stdio server cancels them when its input ends.
func (r *Relay) Run(ctx context.Context, in io.Reader, out io.Writer) error {
	if r.Client == nil {
		r.Client = NewHTTPClient()
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	r.out = out
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		r.wg.Wait()
		r.endSession()
	}()

	lines := make(chan []byte)
	readErr := make(chan error, 1)
	go func() {
		br := bufio.NewReaderSize(in, 64<<10)
		for {
			line, err := readLine(br, maxMessage)
			if errors.Is(err, errTooLong) {
				r.Logger.Warn("dropped a message from the client over the size limit", "limit_bytes", maxMessage)
				r.writeError(nil, -32600, fmt.Sprintf("message over %d bytes", maxMessage))
				continue
			}
			if err != nil {
				readErr <- err
				return
			}
			select {
			case lines <- line:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var line []byte
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if err == io.EOF {
				r.Logger.Info("the stdio client closed its input: ending the bridged session")
				return nil
			}
			return fmt.Errorf("read stdin: %w", err)
		case line = <-lines:
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		r.handle(ctx, line)
	}
}

// handle sends one message from the client. Requests go on concurrently (a
// long exec must not hold up a cancellation), but each is on the wire
// before the next message is read, so the server sees them in order.
func (r *Relay) handle(ctx context.Context, msg []byte) {
	var env envelope
	if msg[0] == '{' {
		if err := json.Unmarshal(msg, &env); err != nil {
			r.writeError(nil, -32700, "parse error: "+err.Error())
			return
		}
	}
	switch {
	case env.Method == "initialize" && env.isRequest():
		// Nothing else may go before its answer (the session id).
		r.mu.Lock()
		r.initMsg = append(json.RawMessage(nil), msg...)
		r.mu.Unlock()
		r.post(ctx, msg, env, nil)
	case env.isRequest() || msg[0] == '[':
		sent := make(chan struct{})
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.post(ctx, msg, env, sent)
		}()
		select {
		case <-sent:
		case <-ctx.Done():
		}
	default: // notifications and the client's answers to server requests
		r.post(ctx, msg, env, nil)
	}
}

// post sends msg and forwards what comes back; sent, if not nil, is closed
// once msg is written (or could not be).
func (r *Relay) post(ctx context.Context, msg []byte, env envelope, sent chan struct{}) {
	var once sync.Once
	done := func() {
		if sent != nil {
			once.Do(func() { close(sent) })
		}
	}
	defer done()
	for attempt := 0; ; attempt++ {
		r.mu.Lock()
		session, protocol := r.session, r.protocol
		r.mu.Unlock()
		body := &signalReader{r: bytes.NewReader(msg), eof: done}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, body)
		if err != nil {
			r.fail(env, err)
			return
		}
		req.ContentLength = int64(len(msg))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		r.headers(req, session, protocol)
		resp, err := r.Client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				r.fail(env, err)
			}
			return
		}
		if resp.StatusCode == http.StatusNotFound && session != "" && env.Method != "initialize" && attempt == 0 {
			// The server forgot the session (it restarted, or reaped it):
			// start a new one as the client did, then send msg again.
			resp.Body.Close()
			if err := r.reinitialize(ctx, session); err != nil {
				r.fail(env, err)
				return
			}
			continue
		}
		r.answer(ctx, resp, env)
		return
	}
}

// answer forwards the reply to one POST.
func (r *Relay) answer(ctx context.Context, resp *http.Response, env envelope) {
	defer resp.Body.Close()
	if env.Method == "initialize" && resp.StatusCode == http.StatusOK {
		if id := resp.Header.Get(headerSession); id != "" {
			r.mu.Lock()
			r.session = id
			r.mu.Unlock()
			r.Logger.Info("bridged session started", "url", r.URL, "session", id)
			// After the answer is forwarded: the client hears of the
			// session before anything the server sends on its own.
			defer r.startGET(ctx, id)
		}
	}
	switch {
	case resp.StatusCode == http.StatusAccepted:
		return
	case resp.StatusCode != http.StatusOK:
		text, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		r.fail(env, fmt.Errorf("%s answered %s: %s", r.URL, resp.Status, strings.TrimSpace(string(text))))
		return
	}
	answered := false
	forward := func(data []byte) {
		var got envelope
		if json.Unmarshal(data, &got) == nil && got.Method == "" && sameID(got.ID, env.ID) {
			answered = true
			if env.Method == "initialize" {
				r.noteProtocol(got.Result)
			}
		}
		r.write(data)
	}
	var err error
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		_, err = readSSE(resp.Body, forward)
	} else {
		var data []byte
		data, err = io.ReadAll(io.LimitReader(resp.Body, maxMessage+1))
		if err == nil && len(data) > maxMessage {
			err = errTooLong
		}
		if data = bytes.TrimSpace(data); err == nil && len(data) > 0 {
			forward(data)
		}
	}
	if env.isRequest() && !answered && ctx.Err() == nil {
		// The client would wait for ever for an answer that cannot come.
		r.fail(env, fmt.Errorf("the answer from %s broke off: %v", r.URL, cmpErr(err, io.ErrUnexpectedEOF)))
	}
}

// sameID reports whether two JSON-RPC ids are the same id, however the
// server spelled the number (1e3 for 1000).
func sameID(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return x == y
}

func cmpErr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// noteProtocol keeps the negotiated version for the MCP-Protocol-Version
// header that later requests must carry.
func (r *Relay) noteProtocol(result json.RawMessage) {
	var res struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	if json.Unmarshal(result, &res) == nil && res.ProtocolVersion != "" {
		r.mu.Lock()
		r.protocol = res.ProtocolVersion
		r.mu.Unlock()
	}
}

// reinitialize replays the client's initialize and initialized for a new
// session, unless another request already did since stale was refused.
// The replayed answer is not forwarded: the client has had its own.
func (r *Relay) reinitialize(ctx context.Context, stale string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.session != stale {
		return nil
	}
	if r.initMsg == nil {
		return errors.New("the session ended before it was initialized")
	}
	r.Logger.Warn("the berth service no longer knows this session (did it restart?): starting a new one", "old_session", stale)
	if r.stopGET != nil {
		r.stopGET()
	}
	send := func(msg []byte, session string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(msg))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		r.headers(req, session, r.protocol)
		return r.Client.Do(req)
	}
	resp, err := send(r.initMsg, "")
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxMessage))
	resp.Body.Close()
	id := resp.Header.Get(headerSession)
	if resp.StatusCode != http.StatusOK || id == "" {
		return fmt.Errorf("a new session: %s answered %s", r.URL, resp.Status)
	}
	if resp, err = send([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`), id); err != nil {
		return err
	}
	resp.Body.Close()
	r.session = id
	r.Logger.Info("bridged session started", "url", r.URL, "session", id)
	r.startGETLocked(ctx, id)
	return nil
}

const (
	headerSession  = "Mcp-Session-Id"
	headerProtocol = "Mcp-Protocol-Version"
)

func (r *Relay) headers(req *http.Request, session, protocol string) {
	if r.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.Token)
	}
	if session != "" {
		req.Header.Set(headerSession, session)
	}
	if protocol != "" {
		req.Header.Set(headerProtocol, protocol)
	}
}

func (r *Relay) startGET(ctx context.Context, session string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.startGETLocked(ctx, session)
}

// startGETLocked keeps the session's GET stream open, for what the server
// sends outside any request: list changes, log messages, sampling,
// elicitation and roots requests, pings.
func (r *Relay) startGETLocked(ctx context.Context, session string) {
	ctx, r.stopGET = context.WithCancel(ctx)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.listen(ctx, session)
	}()
}

func (r *Relay) listen(ctx context.Context, session string) {
	lastID := ""
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL, nil)
		if err != nil {
			return
		}
		req.Header.Set("Accept", "text/event-stream")
		r.mu.Lock()
		r.headers(req, session, r.protocol)
		r.mu.Unlock()
		if lastID != "" {
			// Resume where the stream broke, so nothing sent meanwhile is lost.
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := r.Client.Do(req)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				r.Logger.Debug("server stream: could not connect", "err", err)
			}
		case resp.StatusCode == http.StatusMethodNotAllowed:
			resp.Body.Close()
			r.Logger.Debug("the server offers no stream of its own")
			return
		case resp.StatusCode == http.StatusNotFound:
			// The session is gone; the next POST starts a new one and its stream.
			resp.Body.Close()
			return
		case resp.StatusCode == http.StatusBadRequest && lastID != "":
			resp.Body.Close()
			lastID = "" // the event is no longer kept: listen afresh
			continue
		case resp.StatusCode != http.StatusOK:
			resp.Body.Close()
			r.Logger.Warn("server stream refused", "status", resp.Status)
		default:
			backoff = 100 * time.Millisecond
			id, err := readSSE(resp.Body, r.write)
			resp.Body.Close()
			if id != "" {
				lastID = id
			}
			if ctx.Err() == nil {
				r.Logger.Debug("server stream ended; reconnecting", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// endSession tells the server the session is over, as a streamable HTTP
// client must when it goes away.
func (r *Relay) endSession() {
	r.mu.Lock()
	session, protocol := r.session, r.protocol
	r.mu.Unlock()
	if session == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, r.URL, nil)
	if err != nil {
		return
	}
	r.headers(req, session, protocol)
	resp, err := r.Client.Do(req)
	if err != nil {
		r.Logger.Warn("could not end the bridged session", "session", session, "err", err)
		return
	}
	resp.Body.Close()
	r.Logger.Info("bridged session ended", "session", session, "status", resp.Status)
}

// fail answers a request that could not be relayed with a JSON-RPC error
// for its id, so the client does not wait for ever; other messages are
// only logged.
func (r *Relay) fail(env envelope, err error) {
	r.Logger.Warn("could not relay a message to the berth service", "method", env.Method, "id", string(env.ID), "err", err)
	if env.isRequest() {
		r.writeError(env.ID, -32603, "berth stdio bridge: "+err.Error())
	}
}

func (r *Relay) writeError(id json.RawMessage, code int, msg string) {
	if id == nil {
		id = json.RawMessage("null")
	}
	data, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}{JSONRPC: "2.0", ID: id, Error: struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{code, msg}})
	r.write(data)
}

// write puts one message on stdout, on one line.
func (r *Relay) write(data []byte) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return
	}
	if bytes.ContainsAny(data, "\r\n") {
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			r.Logger.Warn("dropped a message from the server that is not JSON", "err", err)
			return
		}
		data = buf.Bytes()
	}
	r.outMu.Lock()
	defer r.outMu.Unlock()
	if _, err := r.out.Write(append(data[:len(data):len(data)], '\n')); err != nil {
		r.Logger.Debug("write to the stdio client", "err", err)
	}
}

// signalReader calls eof once its reader is drained: the body is on its way.
type signalReader struct {
	r   io.Reader
	eof func()
}

func (s *signalReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.eof()
	}
	return n, err
}

// NewHTTPClient is the client the bridge uses: no proxy (the server is on
// this host) and no overall timeout (streams last as long as the session).
func NewHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0,
	}}
}

// readLine reads one newline-terminated line of at most max bytes; a longer
// one is skipped whole and reported as errTooLong.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > max+2 {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(line) > 0 && !tooLong:
			return line, nil // a last message without its newline
		case err != nil:
			return nil, err
		case tooLong:
			return nil, errTooLong
		default:
			return line, nil
		}
	}
}

// readSSE forwards the data of each message event of an SSE stream and
// returns the last event id seen.
func readSSE(body io.Reader, forward func([]byte)) (lastID string, err error) {
	br := bufio.NewReaderSize(body, 64<<10)
	var data []byte
	event, hasData := "", false
	for {
		line, err := readLine(br, maxMessage)
		if err != nil {
			return lastID, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 { // the event is complete
			if hasData && (event == "" || event == "message") {
				forward(data)
			}
			data, event, hasData = nil, "", false
			continue
		}
		if line[0] == ':' { // a comment, as keep-alive
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data, hasData = append(data, value...), true
		case "event":
			event = string(value)
		case "id":
			lastID = string(value)
		}
	}
}
