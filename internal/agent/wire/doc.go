// Package wire is the contract between berth and the agent in each workspace
// container: the HTTP paths, the request and response types, the error codes
// and the HTTP statuses they travel with, the protocol version and header,
// the size limits, and the few helpers both sides apply to the same bytes
// (stdio frames, path and length checks).
//
// Both sides import it and neither imports the other: the host-side client is
// internal/agent/client, the agent itself internal/agent/server. This package
// must hold no behaviour of either side: no HTTP server or client, no
// processes, no file system access, and nothing of berth outside it.
package wire
