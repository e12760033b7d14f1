package workspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/remedy"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/containerd/errdefs"
)

// agentClients keeps one agent client (and its idle connections) per
// running workspace, so a tool call costs one round trip on the socket and
// nothing in containerd. Starting, stopping or deleting a workspace drops
// its client.
type agentClients struct {
	mu      sync.Mutex
	clients map[string]*client.Client
}

func (a *agentClients) get(bot string) *client.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.clients[bot]
}

func (a *agentClients) put(bot string, c *client.Client) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.clients == nil {
		a.clients = map[string]*client.Client{}
	}
	if old := a.clients[bot]; old != nil && old != c {
		old.Close()
	}
	a.clients[bot] = c
}

func (a *agentClients) drop(bot string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.clients[bot]; c != nil {
		c.Close()
		delete(a.clients, bot)
	}
}

// Agent returns a client for the agent of the bot's running workspace.
// The first call per workspace checks that the agent speaks this berth's
// protocol; later calls reuse the client.
func (m *Manager) Agent(ctx context.Context, bot string) (*client.Client, error) {
	if err := ValidateBotID(bot); err != nil {
		return nil, err
	}
	if c := m.agents.get(bot); c != nil {
		return c, nil
	}
	ctr, err := m.container(ctx, bot)
	if err != nil {
		return nil, err
	}
	if ctr.Status != runtime.TaskRunning {
		return nil, remedy.With(remedy.Start, fmt.Errorf("%w: workspace %s is %s", errdefs.ErrFailedPrecondition, bot, statusOf(ctr.Status)))
	}
	c := client.New(m.socketPath(bot), client.WithInitPID(ctr.PID))
	if _, err := c.Health(ctx); err != nil {
		c.Close()
		var mismatch *client.ProtocolMismatchError
		if errors.As(err, &mismatch) {
			return nil, remedy.With(remedy.Restart, fmt.Errorf("%w: %v", errdefs.ErrFailedPrecondition, err))
		}
		if errors.Is(err, client.ErrNotAgent) {
			return nil, agentReplaced(bot, err)
		}
		return nil, remedy.With(remedy.Restart, fmt.Errorf("%w: the agent of workspace %s does not answer (%v)", errdefs.ErrUnavailable, bot, err))
	}
	m.agents.put(bot, c)
	return c, nil
}

// Ask is the one road from berth to a workspace's agent: it gets the
// client of bot's running workspace, runs call with it, and explains a
// failed call in the workspace's terms (it stopped under the call, its
// agent was replaced), so callers state only what they ask.
func Ask[T any](ctx context.Context, m *Manager, bot string, call func(*client.Client) (T, error)) (T, error) {
	c, err := m.Agent(ctx, bot)
	if err != nil {
		var zero T
		return zero, err
	}
	out, err := call(c)
	return out, m.AgentError(ctx, bot, err)
}

// WithAgent is Ask for calls that answer only an error.
func (m *Manager) WithAgent(ctx context.Context, bot string, call func(*client.Client) error) error {
	_, err := Ask(ctx, m, bot, func(c *client.Client) (struct{}, error) { return struct{}{}, call(c) })
	return err
}

// AgentError explains a failed agent call: when the connection to the
// agent failed because the workspace stopped under the call, it says so
// instead of a bare connection error. Answers of the agent (and the
// client's own validation errors) pass through unchanged. Ask applies it;
// it is exported for callers that hold a connection beyond one call.
func (m *Manager) AgentError(ctx context.Context, bot string, err error) error {
	var transport *url.Error
	if err == nil || !errors.As(err, &transport) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	m.agents.drop(bot)
	if errors.Is(err, client.ErrNotAgent) {
		return agentReplaced(bot, err)
	}
	if ctr, cerr := m.rt.Container(context.WithoutCancel(ctx), bot); cerr == nil && ctr.Status != runtime.TaskRunning {
		return remedy.With(remedy.Start, fmt.Errorf("workspace %s is %s (it stopped during the call)", bot, statusOf(ctr.Status)))
	}
	return err
}

// agentReplaced reports that something in the workspace took the agent's
// place at its socket. berth refused to talk to it; the bot can get its
// agent back only by restarting the workspace (which starts from an empty
// agent directory).
func agentReplaced(bot string, err error) error {
	slog.Warn("agent socket replaced from inside the workspace; refusing it", "bot", bot, "err", err)
	return remedy.With(remedy.Restart, fmt.Errorf("%w: workspace %s: %v", errdefs.ErrUnavailable, bot, err))
}
