package mcpproxy

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/workspace"
)

// hashSuffix is how a rewritten name ends: '_' and hashLen hex digits.
var hashSuffix = regexp.MustCompile(`_[0-9a-f]{8}$`)

// checkFederated asserts what holds for every result of federatedNames:
// each distinct input has a name, every name is valid and at most
// MaxToolNameLen long, no two inputs share one, names that need no change
// pass unchanged and the others carry a hash.
func checkFederated(t *testing.T, server string, tools []string, got map[string]string) {
	t.Helper()
	distinct := map[string]bool{}
	for _, tool := range tools {
		distinct[tool] = true
	}
	if len(got) != len(distinct) {
		t.Fatalf("federatedNames(%q, %q) named %d tools, want %d: %q", server, tools, len(got), len(distinct), got)
	}
	seen := map[string]string{}
	for tool, name := range got {
		if !distinct[tool] {
			t.Fatalf("federatedNames(%q, ...) named %q, which it was not given", server, tool)
		}
		if !ToolNamePattern.MatchString(name) || len(name) > MaxToolNameLen {
			t.Fatalf("tool %q: federated name %q is not a valid tool name", tool, name)
		}
		if other, dup := seen[name]; dup {
			t.Fatalf("tools %q and %q share the federated name %q", other, tool, name)
		}
		seen[name] = tool
		if !strings.HasPrefix(name, server+separator) {
			t.Fatalf("tool %q: federated name %q lacks the prefix %q", tool, name, server+separator)
		}
		if plain := server + separator + tool; ToolNamePattern.MatchString(plain) {
			if name != plain {
				t.Fatalf("tool %q: federated name %q, want it unchanged as %q", tool, name, plain)
			}
		} else if !hashSuffix.MatchString(name) {
			t.Fatalf("tool %q: rewritten name %q does not end in a hash", tool, name)
		}
	}
}

func TestFederatedNamesPlain(t *testing.T) {
	tools := []string{"read_file", "write-file", "Search", "x", "a__b", "v2"}
	got := federatedNames("fs", tools)
	checkFederated(t, "fs", tools, got)
	for _, tool := range tools {
		if want := "fs__" + tool; got[tool] != want {
			t.Errorf("%q → %q, want %q", tool, got[tool], want)
		}
	}
	if got := federatedNames("fs", nil); len(got) != 0 {
		t.Errorf("no tools → %q, want none", got)
	}
}

func TestFederatedNamesRewritten(t *testing.T) {
	tools := []string{
		"a.b", "a_b", // one needs changing, the other does not
		"tool with spaces", "ünïcödé", "slash/name", "\x00\xff",
		strings.Repeat("long", 20),
		strings.Repeat("y", 59), // "srv__" + 59 = 64: fits
		strings.Repeat("y", 60), // 65: does not
	}
	got := federatedNames("srv", tools)
	checkFederated(t, "srv", tools, got)

	if got["a_b"] != "srv__a_b" {
		t.Errorf("a_b → %q, want srv__a_b", got["a_b"])
	}
	if n := got["a.b"]; !strings.HasPrefix(n, "srv__a_b_") || len(n) != len("srv__a_b_")+hashLen {
		t.Errorf("a.b → %q, want srv__a_b_<%d hex digits>", n, hashLen)
	}
	if n := got[strings.Repeat("y", 59)]; n != "srv__"+strings.Repeat("y", 59) {
		t.Errorf("a name of exactly %d bytes was changed to %q", MaxToolNameLen, n)
	}
	if n := got[strings.Repeat("y", 60)]; len(n) != MaxToolNameLen {
		t.Errorf("an overlong name became %q (%d bytes), want it cut to exactly %d", n, len(n), MaxToolNameLen)
	}
	if n := got["tool with spaces"]; !strings.HasPrefix(n, "srv__tool_with_spaces_") {
		t.Errorf("tool with spaces → %q, want a readable sanitized prefix", n)
	}
	// The hash is of the real name, so it does not depend on the other
	// tools of the server.
	if alone := federatedNames("srv", []string{"a.b"}); alone["a.b"] != got["a.b"] {
		t.Errorf("a.b alone → %q, with others → %q", alone["a.b"], got["a.b"])
	}
	// ... but it does depend on the server.
	if other := federatedNames("srv2", []string{"a.b"}); strings.TrimPrefix(other["a.b"], "srv2__") == strings.TrimPrefix(got["a.b"], "srv__") {
		t.Errorf("a.b has the same hashed name %q under two servers", other["a.b"])
	}
}

func TestFederatedNamesLongServer(t *testing.T) {
	server := strings.Repeat("s", 32) // the longest valid server name
	if err := workspace.ValidateMCPServerName(server); err != nil {
		t.Fatal(err)
	}
	tool := strings.Repeat("t", 60)
	tools := []string{tool, "short", "other.one"}
	got := federatedNames(server, tools)
	checkFederated(t, server, tools, got)
	n := got[tool]
	if len(n) > MaxToolNameLen {
		t.Fatalf("%q is %d bytes", n, len(n))
	}
	room := MaxToolNameLen - len(server) - len(separator) - 1 - hashLen
	if want := server + separator + tool[:room] + "_"; !strings.HasPrefix(n, want) {
		t.Errorf("long tool → %q, want prefix %q", n, want)
	}
	if got["short"] != server+"__short" {
		t.Errorf("short → %q", got["short"])
	}
}

func TestFederatedNamesOrderAndDuplicates(t *testing.T) {
	tools := []string{"a.b", "a_b", "a-b", "a b", "a/b", "read", strings.Repeat("z", 70),
		strings.Repeat("z", 71), "dup", "dup", "a.b", "ä"}
	want := federatedNames("srv", tools)
	checkFederated(t, "srv", tools, want)
	if want["dup"] != "srv__dup" {
		t.Errorf("dup → %q", want["dup"])
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		shuffled := append([]string(nil), tools...)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got := federatedNames("srv", shuffled)
		if len(got) != len(want) {
			t.Fatalf("shuffle %d: %d names, want %d", i, len(got), len(want))
		}
		for tool, name := range want {
			if got[tool] != name {
				t.Fatalf("shuffle %d (%q): %q → %q, in the original order → %q", i, shuffled, tool, got[tool], name)
			}
		}
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"":          "",
		"aZ09-_":    "aZ09-_",
		"a.b c":     "a_b_c",
		"ü":         "_", // one rune, one '_'
		"\xff\xfe":  "__",
		"x\x00y":    "x_y",
		"tab\there": "tab_here",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzFederatedNames checks the invariants of federated names for any
// valid server name and any tool names (joined by '\n').
func FuzzFederatedNames(f *testing.F) {
	f.Add("srv", "a\nb\nc")
	f.Add("srv", "a.b\na_b")
	f.Add("web-search", "search\nsearch\nfetch page\n")
	f.Add(strings.Repeat("s", 32), strings.Repeat("t", 60)+"\n"+strings.Repeat("t", 61))
	f.Add("x", "ünïcödé\n\xff\n\x00\n__\n-")
	f.Add("a1", strings.Repeat("é", 40))
	f.Fuzz(func(t *testing.T, server, joined string) {
		if workspace.ValidateMCPServerName(server) != nil {
			t.Skip()
		}
		tools := strings.Split(joined, "\n")
		got := federatedNames(server, tools)
		checkFederated(t, server, tools, got)
		// The same in reverse order.
		rev := make([]string, len(tools))
		for i, tool := range tools {
			rev[len(tools)-1-i] = tool
		}
		again := federatedNames(server, rev)
		if len(again) != len(got) {
			t.Fatalf("reversed: %d names, want %d", len(again), len(got))
		}
		for tool, name := range got {
			if again[tool] != name {
				t.Fatalf("%q → %q, reversed → %q", tool, name, again[tool])
			}
		}
	})
}
