package mcpproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// rpcClient is berth's side of a conversation with one process of a bot's
// server, as an MCP client: it numbers its requests, matches the answers,
// and routes progress of its calls back to their callers.
type rpcClient struct {
	p *proc

	nextID atomic.Int64

	mu       sync.Mutex
	pending  map[string]chan *message
	progress map[string]func(json.RawMessage)
	// askers are the RequestHandlers of the calls in flight, oldest
	// first: the server's own requests go to the newest.
	askers []*asker
	closed error
}

// RequestHandler answers a request the server sends while one of the
// caller's calls runs (sampling, elicitation, roots), by asking the
// caller's client; it returns the result to send back.
type RequestHandler func(method string, params json.RawMessage) (any, error)

type asker struct{ handle RequestHandler }

func newRPCClient() *rpcClient {
	return &rpcClient{pending: map[string]chan *message{}, progress: map[string]func(json.RawMessage){}}
}

// handle takes a message from the server; it returns false for messages
// that are not answers to this client (requests and notifications).
func (c *rpcClient) handle(m *message) bool {
	switch {
	case m.isResponse():
		c.mu.Lock()
		ch := c.pending[idKey(m.ID)]
		delete(c.pending, idKey(m.ID))
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		}
		return true
	case m.Method == "notifications/progress":
		var p struct {
			Token json.RawMessage `json:"progressToken"`
		}
		if json.Unmarshal(m.Params, &p) != nil {
			return true
		}
		c.mu.Lock()
		fn := c.progress[idKey(p.Token)]
		c.mu.Unlock()
		if fn != nil {
			fn(m.Params)
		}
		return true
	}
	return false
}

// fail ends every waiting call with err and refuses new ones. The first
// reason given stays: it is the one that explains the end.
func (c *rpcClient) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != nil {
		return
	}
	c.closed = err
	for k, ch := range c.pending {
		ch <- errorResponse(nil, codeServerGone, err.Error())
		delete(c.pending, k)
	}
}

// call sends method with params and waits for the answer. With onProgress,
// the request carries a progress token whose notifications reach it. If
// ctx ends first, the server is told to cancel the request.
func (c *rpcClient) call(ctx context.Context, method string, params map[string]any, onProgress func(json.RawMessage), onRequest RequestHandler) (json.RawMessage, error) {
	id := c.nextID.Add(1)
	rawID := json.RawMessage(strconv.FormatInt(id, 10))
	ch := make(chan *message, 1)
	token := json.RawMessage(strconv.Quote("berth-" + strconv.FormatInt(id, 10)))
	c.mu.Lock()
	if c.closed != nil {
		c.mu.Unlock()
		return nil, c.closed
	}
	c.pending[string(rawID)] = ch
	if onProgress != nil {
		c.progress[string(token)] = onProgress
	}
	var a *asker
	if onRequest != nil {
		a = &asker{handle: onRequest}
		c.askers = append(c.askers, a)
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, string(rawID))
		delete(c.progress, string(token))
		if i := slices.Index(c.askers, a); a != nil && i >= 0 {
			c.askers = slices.Delete(c.askers, i, i+1)
		}
		c.mu.Unlock()
	}()
	if onProgress != nil {
		params = withProgressToken(params, token)
	}
	if err := c.p.sendMessage(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params}); err != nil {
		return nil, err
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return nil, &RemoteError{Code: m.Error.Code, Message: m.Error.Message}
		}
		return m.Result, nil
	case <-ctx.Done():
		_ = c.notify("notifications/cancelled", map[string]any{"requestId": id, "reason": context.Cause(ctx).Error()})
		return nil, ctx.Err()
	}
}

// asker returns the handler of the newest call in flight that has one. A
// stdio server does not say which call a request of its own belongs to;
// the newest is the best guess, and exact when calls do not overlap.
func (c *rpcClient) asker() RequestHandler {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.askers) == 0 {
		return nil
	}
	return c.askers[len(c.askers)-1].handle
}

// notify sends a notification.
func (c *rpcClient) notify(method string, params any) error {
	m := map[string]any{"jsonrpc": "2.0", "method": method}
	if params != nil {
		m["params"] = params
	}
	return c.p.sendMessage(m)
}

// respond answers a request of the server.
func (c *rpcClient) respond(id json.RawMessage, result any, rerr *rpcError) error {
	m := map[string]any{"jsonrpc": "2.0", "id": id}
	if rerr != nil {
		m["error"] = rerr
	} else {
		m["result"] = result
	}
	return c.p.sendMessage(m)
}

func withProgressToken(params map[string]any, token json.RawMessage) map[string]any {
	out := make(map[string]any, len(params)+1)
	for k, v := range params {
		out[k] = v
	}
	meta := map[string]any{}
	if m, ok := out["_meta"].(map[string]any); ok {
		for k, v := range m {
			meta[k] = v
		}
	}
	meta["progressToken"] = token
	out["_meta"] = meta
	return out
}

// RemoteError is a JSON-RPC error answer of a bot's server.
type RemoteError struct {
	Code    int
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("MCP server answered with error %d: %s", e.Code, e.Message)
}

// errServerGone marks calls that could not reach a server.
var errServerGone = errors.New("MCP server not running")
