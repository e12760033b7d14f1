package tools

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/server"
)

// TerminalOpenInput opens an interactive shell on a pseudo-terminal.
// Bounds of one terminal_send, as its schema states them.
const (
	maxTerminalWait  = 300 * time.Second
	maxTerminalChunk = 1 << 20
)

type TerminalOpenInput struct {
	BotID string            `json:"bot_id"`
	Shell string            `json:"shell,omitempty" jsonschema:"description=shell to run (default bash if present\\, else sh)"`
	Rows  uint16            `json:"rows,omitempty" jsonschema:"maximum=1000,description=default 24"`
	Cols  uint16            `json:"cols,omitempty" jsonschema:"maximum=1000,description=default 80"`
	Cwd   string            `json:"cwd,omitempty" jsonschema:"description=default /data"`
	Env   map[string]string `json:"env,omitempty"`
}

func (t TerminalOpenInput) bot() string { return t.BotID }

// TerminalInput names a terminal.
type TerminalInput struct {
	BotID      string `json:"bot_id"`
	TerminalID string `json:"terminal_id"`
}

func (t TerminalInput) bot() string { return t.BotID }

// TerminalSendInput types into a terminal.
type TerminalSendInput struct {
	BotID          string  `json:"bot_id"`
	TerminalID     string  `json:"terminal_id"`
	Text           string  `json:"text,omitempty" jsonschema:"description=text to type; include \\n to press Enter"`
	DataBase64     string  `json:"data_base64,omitempty" jsonschema:"description=raw bytes to send instead of text (e.g. control keys)"`
	WaitSettleMs   int64   `json:"wait_settle_ms,omitempty" jsonschema:"minimum=0,description=return once no new output arrived for this long"`
	WaitPattern    string  `json:"wait_pattern,omitempty" jsonschema:"description=return once the output after the input matches this regular expression"`
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty" jsonschema:"minimum=0,maximum=300,description=longest wait (default 10)"`
	MaxOutputBytes int     `json:"max_output_bytes,omitempty" jsonschema:"minimum=0,maximum=1048576"`
}

func (t TerminalSendInput) bot() string { return t.BotID }

// TerminalReadInput reads a terminal's output from an offset.
type TerminalReadInput struct {
	BotID      string `json:"bot_id"`
	TerminalID string `json:"terminal_id"`
	Offset     int64  `json:"offset,omitempty" jsonschema:"minimum=0,description=next_offset of the previous read"`
	Limit      int    `json:"limit,omitempty" jsonschema:"minimum=0,maximum=1048576,description=bytes at most (default 65536)"`
}

func (t TerminalReadInput) bot() string { return t.BotID }

// TerminalResizeInput changes a terminal's size.
type TerminalResizeInput struct {
	BotID      string `json:"bot_id"`
	TerminalID string `json:"terminal_id"`
	Rows       uint16 `json:"rows" jsonschema:"minimum=1,maximum=1000"`
	Cols       uint16 `json:"cols" jsonschema:"minimum=1,maximum=1000"`
}

func (t TerminalResizeInput) bot() string { return t.BotID }

// TerminalListOutput lists a workspace's terminals.
type TerminalListOutput struct {
	Terminals []wire.TerminalInfo `json:"terminals"`
}

func terminalTools(h handlers) []server.ServerTool {
	return []server.ServerTool{
		define("terminal_open", "Open terminal",
			"Open an interactive shell on a pseudo-terminal in the bot's workspace. It lives until closed, until its shell exits, or until idle too long; any session can use it by id.",
			hints{openWorld: true}, auth.ScopeExec, h.terminalOpen),
		define("terminal_send", "Type into terminal",
			"Send input to a terminal and return the output it produced, optionally waiting until the output settles or matches a pattern.",
			hints{openWorld: true}, auth.ScopeExec, h.terminalSend),
		define("terminal_read", "Read terminal",
			"Read a terminal's output from a byte offset (its recent history is kept in a bounded buffer); pass next_offset to continue.",
			hints{readOnly: true, idempotent: true}, auth.ScopeExec, h.terminalRead),
		define("terminal_resize", "Resize terminal",
			"Change a terminal's rows and columns.",
			hints{idempotent: true}, auth.ScopeExec, h.terminalResize),
		define("terminal_close", "Close terminal",
			"Close a terminal, hanging up its shell and everything started in it.",
			hints{destructive: true, idempotent: true}, auth.ScopeExec, h.terminalClose),
		define("terminal_list", "List terminals",
			"List the bot's open terminals.",
			hints{readOnly: true, idempotent: true}, auth.ScopeExec, h.terminalList),
	}
}

func (h handlers) terminalOpen(ctx context.Context, _ *call, in TerminalOpenInput) (wire.TerminalInfo, string, error) {
	info, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.TerminalInfo, error) {
		return a.OpenTerminal(ctx, wire.TerminalRequest{
			Shell: in.Shell, Rows: in.Rows, Cols: in.Cols, Cwd: in.Cwd, Env: in.Env,
			IdleTimeoutMillis: h.Limits.TerminalIdleTimeout.Milliseconds(),
		})
	})
	if err != nil {
		return info, "", err
	}
	return info, fmt.Sprintf("opened terminal %s running %s (%dx%d)", info.ID, info.Shell, info.Cols, info.Rows), nil
}

func (h handlers) terminalSend(ctx context.Context, _ *call, in TerminalSendInput) (OutputChunkOutput, string, error) {
	data := []byte(in.Text)
	if in.DataBase64 != "" {
		if in.Text != "" {
			return OutputChunkOutput{}, "", errors.New("give text or data_base64, not both")
		}
		var err error
		if data, err = base64.StdEncoding.DecodeString(in.DataBase64); err != nil {
			return OutputChunkOutput{}, "", fmt.Errorf("data_base64: %v", err)
		}
	}
	if !(in.TimeoutSeconds >= 0 && in.TimeoutSeconds <= maxTerminalWait.Seconds()) {
		return OutputChunkOutput{}, "", fmt.Errorf("timeout_seconds must be between 0 and %.0f", maxTerminalWait.Seconds())
	}
	if in.MaxOutputBytes < 0 || in.MaxOutputBytes > maxTerminalChunk {
		return OutputChunkOutput{}, "", fmt.Errorf("max_output_bytes must be between 0 (the default) and %d; read more with terminal_read", maxTerminalChunk)
	}
	timeout := time.Duration(in.TimeoutSeconds * float64(time.Second))
	chunk, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.OutputChunk, error) {
		return a.SendTerminal(ctx, in.TerminalID, wire.TerminalInput{
			Data: data, WaitSettleMillis: in.WaitSettleMs, WaitPattern: in.WaitPattern,
			WaitTimeoutMillis: timeout.Milliseconds(), MaxOutput: in.MaxOutputBytes,
		})
	})
	if err != nil {
		return OutputChunkOutput{}, "", err
	}
	out := chunkOutput(chunk)
	return out, chunkSummary(in.TerminalID, out), nil
}

func (h handlers) terminalRead(ctx context.Context, _ *call, in TerminalReadInput) (OutputChunkOutput, string, error) {
	chunk, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (wire.OutputChunk, error) {
		return a.ReadTerminal(ctx, in.TerminalID, in.Offset, in.Limit)
	})
	if err != nil {
		return OutputChunkOutput{}, "", err
	}
	out := chunkOutput(chunk)
	return out, chunkSummary(in.TerminalID, out), nil
}

func (h handlers) terminalResize(ctx context.Context, _ *call, in TerminalResizeInput) (TerminalResizeInput, string, error) {
	if err := h.Manager.WithAgent(ctx, in.BotID, func(a *client.Client) error { return a.ResizeTerminal(ctx, in.TerminalID, in.Rows, in.Cols) }); err != nil {
		return in, "", err
	}
	return in, fmt.Sprintf("terminal %s is %dx%d", in.TerminalID, in.Cols, in.Rows), nil
}

func (h handlers) terminalClose(ctx context.Context, _ *call, in TerminalInput) (TerminalInput, string, error) {
	missing, err := h.remove(ctx, in.BotID, func(a *client.Client) error { return a.CloseTerminal(ctx, in.TerminalID) })
	switch {
	case err != nil:
		return in, "", err
	case missing != nil:
		return in, fmt.Sprintf("terminal %s is not open: nothing to close", in.TerminalID), nil
	}
	return in, "closed terminal " + in.TerminalID, nil
}

func (h handlers) terminalList(ctx context.Context, _ *call, in BotInput) (TerminalListOutput, string, error) {
	ts, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) ([]wire.TerminalInfo, error) { return a.Terminals(ctx) })
	if err != nil {
		return TerminalListOutput{}, "", err
	}
	return TerminalListOutput{Terminals: ts}, fmt.Sprintf("%d terminal(s)", len(ts)), nil
}
