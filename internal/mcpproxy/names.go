package mcpproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

// MaxToolNameLen is the longest tool name clients accept.
const MaxToolNameLen = 64

// ToolNamePattern is what clients accept as a tool name.
var ToolNamePattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// separator joins a server's name and its tool's name. Server names hold
// no '_' (see workspace.ValidateMCPServerName) and berth's own tools no
// "__", so a federated name never equals a berth tool's name and the
// server it belongs to is always the part before the first "__".
const separator = "__"

// hashLen is how many hex digits of a hash tell shortened names apart.
const hashLen = 8

// federatedNames names the tools of one server for berth's tool list:
// "<server>__<tool>" where that is a valid client name. A tool whose name
// needs changing (characters clients refuse, or too long) gets a readable
// prefix and a hash of its real name instead, so the result is the same on
// every listing and after every restart, whatever order the server lists
// its tools in. The result maps each original name to its federated name.
func federatedNames(server string, tools []string) map[string]string {
	out := make(map[string]string, len(tools))
	taken := make(map[string]bool, len(tools))
	// Names that pass unchanged are settled first, so that one of them
	// never moves aside for a rewritten one.
	for _, tool := range tools {
		if name := server + separator + tool; ToolNamePattern.MatchString(name) && !taken[name] {
			out[tool] = name
			taken[name] = true
		}
	}
	for _, tool := range tools {
		if _, done := out[tool]; done {
			continue
		}
		name := hashedName(server, tool)
		if taken[name] {
			// Two different real names with the same hash prefix:
			// astronomically unlikely; the later one is not federated.
			continue
		}
		out[tool] = name
		taken[name] = true
	}
	return out
}

// hashedName is "<server>__<sanitized tool prefix>_<hash>", at most
// MaxToolNameLen long.
func hashedName(server, tool string) string {
	sum := sha256.Sum256([]byte(server + "\x00" + tool))
	hash := hex.EncodeToString(sum[:])[:hashLen]
	prefix := server + separator
	room := MaxToolNameLen - len(prefix) - 1 - hashLen
	clean := sanitize(tool)
	if len(clean) > room {
		clean = clean[:room]
	}
	return prefix + clean + "_" + hash
}

// sanitize replaces every character clients refuse with '_'.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
