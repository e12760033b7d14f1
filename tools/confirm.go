package tools

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Modes of --confirm-destructive: whether the destructive tools ask the
// person behind the client (elicitation) before they destroy.
const (
	// ConfirmOff never asks.
	ConfirmOff = "off"
	// ConfirmAsk asks clients that declared elicitation; the others get
	// the tools as they were.
	ConfirmAsk = "ask"
	// ConfirmRequire asks, and refuses the call where the client cannot be
	// asked.
	ConfirmRequire = "require"
)

// Declined is part of the output of every tool that asks before it
// destroys, so a declined call answers in the tool's own shape.
type Declined struct {
	Declined bool `json:"declined,omitempty" jsonschema:"description=true when berth asked the person behind the client to confirm and they declined or cancelled: nothing was changed"`
}

// confirmAnswer is the boolean the confirmation form asks for.
const confirmAnswer = "confirm"

// confirm asks the person behind the client to confirm destructive work
// when --confirm-destructive says so. question says what will be lost; it
// runs only when berth is to ask (it may cost agent calls), and returns ""
// when nothing would be lost (a delete of what is not there), which asks
// nothing. confirm returns the summary of a call that must do nothing
// because the person declined, or "" to go on.
func (h handlers) confirm(ctx context.Context, c *call, question func() (string, error)) (declined string, err error) {
	if h.Confirm == "" || h.Confirm == ConfirmOff {
		return "", nil
	}
	// Checked first, also on the retry that carries the answer: a client
	// that cannot be asked must not pass require with an answer of its own.
	if !c.canElicit(ctx) {
		if h.Confirm == ConfirmRequire {
			return "", errors.New("nothing was changed: berth confirms destructive calls with the person behind the client (--confirm-destructive=require), " +
				"and this call cannot ask (the client did not declare the elicitation capability, or the call runs as a task: call it without one)")
		}
		return "", nil
	}
	if !c.answered(confirmAnswer) {
		msg, err := question()
		if err != nil || msg == "" {
			return "", err
		}
		return "", c.ask(confirmAnswer, msg+"\nGo ahead?", map[string]any{
			"type": "object",
			"properties": map[string]any{
				confirmAnswer: map[string]any{"type": "boolean", "title": "Go ahead", "description": "yes does it; no changes nothing"},
			},
			"required": []string{confirmAnswer},
		})
	}
	content, accepted := c.answer(confirmAnswer)
	if yes, _ := content[confirmAnswer].(bool); accepted && yes {
		return "", nil
	}
	return "the user declined; nothing was changed", nil
}

// Asking the person behind the client is a multi round-trip request
// (SEP-2322): the tool answers with the question (c.ask), the client asks
// and calls the tool again with the answer (c.answer). mcp-go plays the
// client's part for clients older than 2026-07-28, with the
// server-initiated elicitation/create they know, so one handler serves
// both eras.

// inputRequired is the error a handler returns to ask; define answers the
// call with its result.
type inputRequired struct{ result *mcp.CallToolResult }

func (e *inputRequired) Error() string { return "input required from the client" }

// ask returns the error that asks the client for a form (form-mode
// elicitation) under id.
func (c *call) ask(id, message string, schema map[string]any) error {
	return &inputRequired{server.NewInputRequestBuilder("").
		Elicit(id, mcp.ElicitationParams{Mode: "form", Message: message, RequestedSchema: schema}).ToolResult()}
}

// answered reports whether this call carries the client's answer to id.
func (c *call) answered(id string) bool {
	return server.ElicitationResponse(c.req.Params.InputResponses, id) != nil
}

// answer is the client's answer to id: the form's content, and false when
// the person declined or cancelled.
func (c *call) answer(id string) (map[string]any, bool) {
	res := server.ElicitationResponse(c.req.Params.InputResponses, id)
	if res == nil || res.Action != mcp.ElicitationResponseActionAccept {
		return nil, false
	}
	content, _ := res.Content.(map[string]any)
	return content, true
}

// canElicit reports whether the caller's client declared elicitation: in
// the request (2026-07-28) or at initialize. A call without a client's
// session (a task's, run after its request was answered) cannot ask: there
// is no one to retry it with the answer.
func (c *call) canElicit(ctx context.Context) bool {
	info, ok := server.ClientSessionFromContext(ctx).(server.SessionWithClientInfo)
	if !ok {
		return false
	}
	if caps := c.req.Params.Meta.ClientCapabilities(); caps != nil {
		return caps.Elicitation != nil
	}
	return info.GetClientCapabilities().Elicitation != nil
}

// The questions of the five tools that ask: each says what will be lost.

func (h handlers) deleteQuestion(ctx context.Context, in DeleteInput) func() (string, error) {
	return func() (string, error) {
		ws, err := h.Manager.Get(ctx, in.BotID)
		if gone(err) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		var b strings.Builder
		fmt.Fprintf(&b, "Delete the workspace of bot %s (%s, image %s, created %s)?\n", in.BotID, ws.Status, ws.Image, ws.CreatedAt.Format(time.DateTime))
		if in.PreserveData {
			b.WriteString("Its files are deleted, except /data: a backup of /data is kept on berth's host for workspace_create restore_data.")
		} else {
			b.WriteString("All its files are deleted, /data included (preserve_data was not asked for).")
		}
		if l, err := h.Manager.ListSnapshots(ctx, in.BotID); err == nil && len(l.Versions) > 0 {
			if in.KeepSnapshots {
				fmt.Fprintf(&b, "\nIts %d snapshot version(s) are kept.", len(l.Versions))
			} else {
				fmt.Fprintf(&b, "\nIts %d snapshot version(s) are deleted with it.", len(l.Versions))
			}
		}
		b.WriteString("\nIts data_export archives are deleted. This cannot be undone.")
		return b.String(), nil
	}
}

func (h handlers) rollbackQuestion(ctx context.Context, in SnapshotVersionInput) func() (string, error) {
	return func() (string, error) {
		l, err := h.Manager.ListSnapshots(ctx, in.BotID)
		if err != nil {
			return "", err
		}
		var target *workspace.Snapshot
		var since []string
		for i, v := range l.Versions {
			if v.Version == in.Version {
				target = &l.Versions[i]
			}
		}
		if target == nil {
			return "", nil // the rollback itself says the version is not there
		}
		for _, v := range l.Versions {
			if v.CreatedAt.After(target.CreatedAt) {
				since = append(since, fmt.Sprintf("v%d", v.Version))
			}
		}
		var b strings.Builder
		fmt.Fprintf(&b, "Roll back bot %s to version %d%s, taken %s?\n", in.BotID, in.Version, quoted(target.Name), target.CreatedAt.Format(time.DateTime))
		if diff, err := h.Manager.DiffSnapshots(ctx, in.BotID, in.Version, 0, runtime.Page{Limit: 1}); err == nil {
			more := ""
			if diff.Truncated {
				more = " or more"
			}
			fmt.Fprintf(&b, "The live workspace differs from it in %d path(s)%s: those changes leave the live files.\n", diff.Total, more)
		}
		if len(since) > 0 {
			fmt.Fprintf(&b, "Versions taken since (%s) stay.\n", strings.Join(since, ", "))
		}
		b.WriteString("The workspace restarts: running processes, terminals and background commands end. " +
			"The current state is saved first as a pre_rollback version, so the files can be brought back.")
		return b.String(), nil
	}
}

func quoted(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", name)
}

func (h handlers) snapshotDeleteQuestion(ctx context.Context, in SnapshotVersionInput) func() (string, error) {
	return func() (string, error) {
		l, err := h.Manager.ListSnapshots(ctx, in.BotID)
		if err != nil {
			return "", err
		}
		for _, v := range l.Versions {
			if v.Version == in.Version {
				return fmt.Sprintf("Delete snapshot version %d%s of bot %s (%s, taken %s, %d bytes)?\nThe workspace can no longer be rolled back to it. This cannot be undone.",
					v.Version, quoted(v.Name), in.BotID, v.Source, v.CreatedAt.Format(time.DateTime), v.SizeBytes), nil
			}
		}
		return "", nil
	}
}

func (h handlers) fsDeleteQuestion(ctx context.Context, in FsDeleteInput) func() (string, error) {
	return func() (string, error) {
		if !in.Recursive {
			return "", nil // only an empty directory or a single file goes
		}
		return workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (string, error) {
			list, err := a.List(ctx, wire.ListRequest{Path: in.Path, Limit: 1})
			if gone(err) {
				return "", nil
			}
			if err != nil {
				// A file, not a directory: a recursive delete of it loses
				// no more than a plain one.
				return "", nil
			}
			return fmt.Sprintf("Delete directory %s of bot %s with everything in it (%d entries at its top level, and all below them)?\n"+
				"This cannot be undone (a snapshot_create first would keep a copy).", list.Path, in.BotID, list.Total), nil
		})
	}
}

// maxImportChecks bounds the archive entries whose paths an import's
// question looks up in the workspace.
const maxImportChecks = 256

func (h handlers) importQuestion(ctx context.Context, in DataImportInput, archive []byte) func() (string, error) {
	return func() (string, error) {
		target, err := workspace.DataPath(in.Path)
		if err != nil {
			return "", nil // the import itself refuses the path
		}
		names, more, ok := archiveFiles(archive, in.Format, maxImportChecks)
		if !ok {
			return fmt.Sprintf("Import into %s of bot %s: berth could not list the archive to check which files it replaces; existing files of the same names lose their content.",
				target, in.BotID), nil
		}
		var replaced []string
		_, err = workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (struct{}, error) {
			for _, n := range names {
				p := path.Join(target, n)
				if fi, err := a.Stat(ctx, p); err == nil && fi.Type != wire.FileTypeDir {
					replaced = append(replaced, p)
				}
			}
			return struct{}{}, nil
		})
		if err != nil {
			return "", err
		}
		switch {
		case len(replaced) > 0:
			shown := replaced[:min(len(replaced), 10)]
			msg := fmt.Sprintf("Import into %s of bot %s replaces %d existing file(s)", target, in.BotID, len(replaced))
			if more {
				msg += fmt.Sprintf(" (of the first %d the archive names; it holds more)", maxImportChecks)
			}
			return msg + ": " + strings.Join(shown, ", ") + etc(len(replaced) > len(shown)) + ".\nTheir current content is lost.", nil
		case more:
			return fmt.Sprintf("Import into %s of bot %s: the archive holds more than %d files, too many to check which it replaces; existing files of the same names lose their content.",
				target, in.BotID, maxImportChecks), nil
		}
		return "", nil
	}
}

func etc(more bool) string {
	if more {
		return ", …"
	}
	return ""
}

// archiveFiles lists up to max names of the files and symlinks an archive
// holds, relative and clean, and whether it holds more, reading it as the
// import will: as format, or for "auto" (and "") by the same first bytes
// the agent goes by (a tar with a zip appended is a tar, though a zip
// reader would find the zip). ok is false when it cannot read the archive
// to its end that way: the import may still extract some of it.
func archiveFiles(archive []byte, format string, max int) (names []string, more, ok bool) {
	add := func(name string, dir bool) bool {
		name = path.Clean(strings.TrimPrefix(name, "/"))
		if dir || name == "." || name == ".." || strings.HasPrefix(name, "../") {
			return true
		}
		if len(names) == max {
			more = true
			return false
		}
		names = append(names, name)
		return true
	}
	if format == "" || format == wire.ArchiveFormatAuto {
		format = wire.SniffArchiveFormat(archive)
	}
	if format == wire.ArchiveFormatZip {
		zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
		if err != nil {
			return nil, false, false
		}
		for _, f := range zr.File {
			if !add(f.Name, f.FileInfo().IsDir()) {
				break
			}
		}
		return names, more, true
	}
	var r io.Reader = bytes.NewReader(archive)
	if format == wire.ArchiveFormatTarGz {
		gz, err := gzip.NewReader(r)
		if err != nil {
			return nil, false, false
		}
		r = gz
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names, more, true
		}
		if err != nil {
			return names, more, false
		}
		if !add(hdr.Name, hdr.Typeflag == tar.TypeDir) {
			return names, more, true
		}
	}
}
