// Package tools defines berth's MCP tools. Each tool is a thin adapter: it
// decodes a typed input, checks the caller may use it, calls one Manager
// method and shapes the answer as structured content plus a short text.
// Nothing else lives here: no runtime calls, no state.
package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/mcpproxy"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/remedy"
	"github.com/berth-dev/berth/internal/skills"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/containerd/errdefs"
	"github.com/invopop/jsonschema"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Deps are what the tools work with.
type Deps struct {
	Manager *workspace.Manager
	Logger  *slog.Logger
	Limits  Limits
	Skills  skills.Config
	// MCP runs the bots' own MCP servers; nil leaves the mcp_server_*
	// tools out.
	MCP *mcpproxy.Supervisor
	// Metrics counts the calls (mcpserver's middleware); may be nil.
	Metrics *metrics.Metrics
	// AllowedRegistries are the registries (host[:port]) that callers
	// without the admin scope may pull from; nil allows any.
	AllowedRegistries []string
	// Confirm is --confirm-destructive: ConfirmOff, ConfirmAsk or
	// ConfirmRequire; "" is off.
	Confirm string
}

// Limits are the defaults and caps of the exec, terminal and file tools.
type Limits struct {
	ExecTimeout         time.Duration // default timeout of exec
	ExecMaxOutput       int           // default per-stream output cap of exec
	TerminalIdleTimeout time.Duration // close terminals idle this long
	ExportQuota         int64         // bytes of data_export archives kept per bot; 0 = no quota
}

func (l *Limits) setDefaults() {
	if l.ExecTimeout == 0 {
		l.ExecTimeout = 60 * time.Second
	}
	if l.ExecMaxOutput == 0 {
		l.ExecMaxOutput = 64 << 10
	}
}

// Register adds every tool to s.
func Register(s *server.MCPServer, d Deps) {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	d.Limits.setDefaults()
	h := handlers{d}
	all := slices.Concat(workspaceTools(h), imageTools(h), execTools(h), terminalTools(h), fsTools(h),
		dataTools(h), skillTools(h), snapshotTools(h))
	all = append(all, portTools(h)...)
	all = append(all, networkTools(h)...)
	if d.MCP != nil {
		all = append(all, mcpServerTools(h)...)
	}
	s.AddTools(all...)
}

// handlers are the tools' bodies, one named method per tool; the *Tools
// functions of each group only describe the tools and name their method.
type handlers struct{ Deps }

// hints are a tool's annotations. Every tool states all four, because
// mcp-go's defaults (destructive, open world) would mislead clients.
type hints struct {
	readOnly, destructive, idempotent, openWorld bool
}

// handlerFunc is a tool body: typed input in, typed output and a one-line
// summary out. An error becomes an isError result the model can act on.
type handlerFunc[In, Out any] func(ctx context.Context, call *call, in In) (Out, string, error)

// call carries what a handler may need besides its input.
type call struct {
	req mcp.CallToolRequest

	// The progress sent so far; closed once the result is on its way.
	mu     sync.Mutex
	sent   bool
	closed bool
	token  any
	last   float64
	// unwritten: a notification was not written to the client's stream
	// in time (a response that cannot stream), so later ones do not wait.
	unwritten bool
}

// define builds a tool whose schemas come from In and Out.
func define[In, Out any](name, title, description string, h hints, scope auth.Scope, fn handlerFunc[In, Out]) server.ServerTool {
	tool := mcp.NewTool(name,
		mcp.WithDescription(description),
		mcp.WithToolTitle(title),
		mcp.WithRawInputSchema(schemaOf[In]()),
		mcp.WithRawOutputSchema(schemaOf[Out]()),
		mcp.WithToolAnnotation(mcp.ToolAnnotation{
			Title:           title,
			ReadOnlyHint:    mcp.ToBoolPtr(h.readOnly),
			DestructiveHint: mcp.ToBoolPtr(h.destructive),
			IdempotentHint:  mcp.ToBoolPtr(h.idempotent),
			OpenWorldHint:   mcp.ToBoolPtr(h.openWorld),
		}),
	)
	// NewTool presets a plain object schema; ours replaces it (mcp-go
	// refuses to marshal a tool that has both).
	tool.InputSchema = mcp.ToolInputSchema{}
	handler := func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var in In
		if err := decodeArgs(req.Params, &in); err != nil {
			return mcp.NewToolResultError(fmt.Sprintf("invalid arguments for %s: %v", name, err)), nil
		}
		if err := auth.FromContext(ctx).Allow(scope, botOf(in)); err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		c := &call{req: req}
		out, summary, err := fn(ctx, c, in)
		c.finish(ctx)
		if ask := (*inputRequired)(nil); errors.As(err, &ask) {
			return ask.result, nil
		}
		if err != nil {
			return mcp.NewToolResultError(Explain(err)), nil
		}
		res := mcp.NewToolResultStructured(out, summary)
		if extra, ok := any(out).(withContent); ok {
			res.Content = append(res.Content, extra.content()...)
		}
		return res, nil
	}
	return server.ServerTool{Tool: tool, Handler: handler}
}

// withContent is implemented by outputs that carry more than text, such as
// an image or a binary file as an embedded blob.
type withContent interface{ content() []mcp.Content }

// decodeArgs binds arguments strictly: unknown fields are errors, so a
// misspelt setting is never silently ignored. It decodes the arguments'
// original JSON when the transport kept it (a 10 MB fs_write must not be
// re-encoded just to be decoded again).
func decodeArgs(params mcp.CallToolParams, into any) error {
	data := []byte(params.RawArguments)
	if len(data) == 0 {
		var err error
		if data, err = json.Marshal(params.Arguments); err != nil {
			return err
		}
	}
	if string(data) == "null" {
		data = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(into)
}

// botScoped is implemented by inputs that name a bot, so authorization can
// check the caller may touch it.
type botScoped interface{ bot() string }

func botOf(in any) string {
	if b, ok := in.(botScoped); ok {
		return b.bot()
	}
	return ""
}

// gone reports whether err says that what a destructive, idempotent tool
// was to remove is not there (any more): a repeated call then succeeds,
// saying there was nothing to do, as the idempotent annotation promises.
func gone(err error) bool { return errdefs.IsNotFound(err) }

// remove runs an agent call of a destructive, idempotent tool. missing
// is the agent's answer that what it was to remove is not there: only the
// agent may say so (a bot without a workspace is an error, not nothing to
// remove).
func (h handlers) remove(ctx context.Context, bot string, call func(*client.Client) error) (missing, err error) {
	err = h.Manager.WithAgent(ctx, bot, func(a *client.Client) error {
		err := call(a)
		if gone(err) {
			missing, err = err, nil
		}
		return err
	})
	return missing, err
}

// Explain is the message a model (or an HTTP client) sees for a failed
// call: the error, and what the workspace needs said in the tools that do
// it, which the packages below name none of.
func Explain(err error) string {
	msg := err.Error()
	if errors.Is(err, context.Canceled) {
		msg = "cancelled: " + msg
	}
	if a := advice[remedy.Of(err)]; a != "" {
		msg += "; " + a
	}
	return msg
}

// advice words each remedy in the tools that carry it out.
var advice = map[remedy.Remedy]string{
	remedy.Create:          "create one with workspace_create",
	remedy.Start:           "start it with workspace_start",
	remedy.Restart:         "workspace_stop then workspace_start restarts its agent",
	remedy.ImportImage:     "import it with image_import, or pull it with pull_policy if_not_present",
	remedy.ListMCPServers:  "mcp_server_list shows the ones it has",
	remedy.RemoveMCPServer: "remove one with mcp_server_remove",
	remedy.UnexposePort:    "unexpose one with port_unexpose",
	remedy.ListExports:     "use an export_id that data_export returned",
	remedy.PreserveData:    "workspace_delete with preserve_data keeps /data for a later restore",
}

// schemaOf generates T's JSON schema inline (no $refs), with unknown
// properties refused, as MCP clients expect.
func schemaOf[T any]() json.RawMessage {
	r := jsonschema.Reflector{DoNotReference: true, ExpandedStruct: true}
	s := r.ReflectFromType(reflect.TypeFor[T]())
	s.Version = ""
	s.ID = ""
	data, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("schema of %T: %v", *new(T), err))
	}
	return data
}

// progress returns a reporter that sends notifications/progress for this
// call, or nil when the client asked for none.
func (c *call) progress(ctx context.Context) func(workspace.Progress) {
	meta := c.req.Params.Meta
	if meta == nil || meta.ProgressToken == nil {
		return nil
	}
	srv := server.ServerFromContext(ctx)
	if srv == nil {
		return nil
	}
	token := meta.ProgressToken
	return func(p workspace.Progress) {
		// Held while queueing, so notifications queue in the order their
		// figures grow and none is queued after finish.
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed {
			return
		}
		// One notification of a call in flight at a time: mcp-go queues
		// a session's notifications on one channel that each of its open
		// streams (the POSTs in flight and the GET stream) drains, so two
		// queued together can reach the client on two streams, in either
		// order, and the client would see progress go backwards.
		if c.sent && !c.unwritten && !waitWritten(ctx, c.token, c.last) {
			c.unwritten = true
		}
		// MCP requires progress to grow; phases without a byte count
		// (creating, starting) carry the last figure forward.
		c.last = max(c.last, p.Done)
		params := map[string]any{"progressToken": token, "progress": c.last, "message": p.Message}
		if p.Total > 0 {
			params["total"] = p.Total
		}
		if srv.SendNotificationToClient(ctx, "notifications/progress", params) == nil {
			c.sent, c.token = true, token
		}
	}
}
