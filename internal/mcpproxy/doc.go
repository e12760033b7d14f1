// Package mcpproxy runs a bot's own stdio MCP servers inside its workspace
// and makes them reachable from outside, in two ways:
//
//   - federation: one long-lived shared process per registered server
//     (restarted with backoff when it dies, brought back when the
//     workspace restarts) whose tools join berth's own tool list as
//     "<server>__<tool>";
//   - the proxy endpoint: a streamable HTTP MCP endpoint per server where
//     every client session talks to a process of its own, and JSON-RPC
//     passes through unchanged in both directions.
//
// Processes run through the workspace's agent (internal/agent), so they
// see the bot's files; everything they write is untrusted and capped. The
// package keeps no state of its own on disk: registrations live with the
// workspace (workspace.Manager). It does not know about MCP sessions of
// berth's own server; transports and tools wire it in.
package mcpproxy
