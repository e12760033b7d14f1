package wire

import "time"

// Watches tell the host when files in the workspace change, as the kernel
// sees it (inotify in the agent), so whatever wrote them (a tool, a process
// in the workspace) is noticed without polling.
//
//	POST /v1/watch   WatchRequest -> 200 and a stream of WatchEvent lines
//	                 (application/x-ndjson) until the host closes it
//
// The answer starts only once every path is watched, so a change made after
// the headers arrived is reported. An agent older than this endpoint
// answers 404.
const PathWatch = "/v1/watch"

const (
	// MaxWatchPaths bounds the paths of one request.
	MaxWatchPaths = 64
	// MaxWatches bounds the paths watched at once in a workspace, over
	// every stream: each holds a kernel watch, and the kernel's budget of
	// them is shared by the whole host.
	MaxWatches = 256
	// WatchInterval is the shortest time between two events of one stream:
	// changes in between are coalesced into the next event, which names
	// each changed path once. A file written in a loop costs the host at
	// most one event per interval.
	WatchInterval = 100 * time.Millisecond
	// MaxWatchEventBytes bounds one event line.
	MaxWatchEventBytes = MaxWatchPaths*(MaxPathLength+8) + 256
)

// WatchRequest asks to watch Paths (absolute, or relative to the data
// directory). A path is watched as an entry of its directory, which must
// exist: writing, replacing (rename over it), creating, deleting it or
// changing its metadata are changes. Symlinks on the way to that directory
// are followed as the file tools follow them; an entry that is a symlink is
// watched, and so is its target's entry when the target exists and may be
// watched (each counts towards MaxWatches).
type WatchRequest struct {
	Paths []string `json:"paths"`
}

// WatchEvent is one line of the stream.
type WatchEvent struct {
	// Paths changed since the previous event, as the request named them
	// once resolved (absolute, clean).
	Paths []string `json:"paths,omitempty"`
	// Lost says the watch of these paths ended (their directory was
	// deleted, moved away or unmounted): no more events come for them.
	Lost bool `json:"lost,omitempty"`
}
