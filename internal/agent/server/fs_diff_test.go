package server

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/agent/wire"
)

func TestFSDiffFormat(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"equal", "a\n", "a\n", ""},
		{"one line", "a\n", "b\n", "@@ -1 +1 @@\n-a\n+b\n"},
		{"into empty", "", "a\nb\n", "@@ -0,0 +1,2 @@\n+a\n+b\n"},
		{"to empty", "a\n", "", "@@ -1 +0,0 @@\n-a\n"},
		{"insert at top", "b\nc\n", "a\nb\nc\n", "@@ -1,2 +1,3 @@\n+a\n b\n c\n"},
		{"insert after context", "1\n2\n3\n4\n5\n", "1\n2\n3\n4\nx\n5\n", "@@ -2,4 +2,5 @@\n 2\n 3\n 4\n+x\n 5\n"},
		{"newline added at end", "a\nb", "a\nb\n", "@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n"},
		{"last line changed without newline", "a\nb", "a\nc", "@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n"},
		// Six unchanged lines between changes: one hunk; seven: two.
		{"merged", "x\n1\n2\n3\n4\n5\n6\ny\n", "X\n1\n2\n3\n4\n5\n6\nY\n",
			"@@ -1,8 +1,8 @@\n-x\n+X\n 1\n 2\n 3\n 4\n 5\n 6\n-y\n+Y\n"},
		{"split", "x\n1\n2\n3\n4\n5\n6\n7\ny\n", "X\n1\n2\n3\n4\n5\n6\n7\nY\n",
			"@@ -1,4 +1,4 @@\n-x\n+X\n 1\n 2\n 3\n@@ -6,4 +6,4 @@\n 5\n 6\n 7\n-y\n+Y\n"},
	} {
		got := fsUnifiedDiff("/f", tc.old, tc.new)
		want := tc.want
		if want != "" {
			want = "--- a/f\n+++ b/f\n" + want
		}
		if got != want {
			t.Errorf("%s:\ngot:\n%s\nwant:\n%s", tc.name, got, want)
		}
	}
}

// applyUnified applies a diff made by fsUnifiedDiff to old, checking every
// context and removed line and every hunk header on the way.
func applyUnified(t *testing.T, old, diff string) string {
	t.Helper()
	if diff == "" {
		return old
	}
	src := fsSplitLines(old)
	lines := strings.SplitAfter(diff, "\n")
	if !strings.HasPrefix(lines[0], "--- a/") || !strings.HasPrefix(lines[1], "+++ b/") {
		t.Fatalf("no file header in %q", diff)
	}
	var out strings.Builder
	pos := 0
	parseRange := func(s string) (start, n int) {
		a, b, ok := strings.Cut(s, ",")
		start, _ = strconv.Atoi(a)
		n = 1
		if ok {
			n, _ = strconv.Atoi(b)
		}
		return start, n
	}
	i := 2
	for i < len(lines) && lines[i] != "" {
		var aR, bR string
		if _, err := fmt.Sscanf(lines[i], "@@ -%s +%s @@\n", &aR, &bR); err != nil {
			t.Fatalf("bad hunk header %q", lines[i])
		}
		aStart, aN := parseRange(aR)
		_, bN := parseRange(bR)
		first := aStart - 1
		if aN == 0 {
			first = aStart
		}
		if first < pos {
			t.Fatalf("hunk %q goes back to line %d from %d", lines[i], first, pos)
		}
		for ; pos < first; pos++ {
			out.WriteString(src[pos])
		}
		i++
		gotA, gotB := 0, 0
		for i < len(lines) && lines[i] != "" && !strings.HasPrefix(lines[i], "@@") {
			l := lines[i]
			i++
			text := l[1:]
			if i < len(lines) && lines[i] == "\\ No newline at end of file\n" {
				text = strings.TrimSuffix(text, "\n")
				i++
			}
			switch l[0] {
			case ' ', '-':
				if pos >= len(src) || src[pos] != text {
					t.Fatalf("line %d is %q, diff says %q", pos+1, src[min(pos, len(src)-1)], text)
				}
				if l[0] == ' ' {
					out.WriteString(text)
					gotB++
				}
				pos++
				gotA++
			case '+':
				out.WriteString(text)
				gotB++
			default:
				t.Fatalf("bad diff line %q", l)
			}
		}
		if gotA != aN || gotB != bN {
			t.Fatalf("hunk %s %s has %d old and %d new lines", aR, bR, gotA, gotB)
		}
	}
	for ; pos < len(src); pos++ {
		out.WriteString(src[pos])
	}
	return out.String()
}

func TestFSDiffApplies(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	words := []string{"a\n", "b\n", "c\n", "}\n", "\n", "func x() {\n", "return\n"}
	for iter := range 400 {
		n := rng.IntN(60)
		var old []string
		for range n {
			if rng.IntN(3) == 0 {
				old = append(old, fmt.Sprintf("unique %d\n", rng.IntN(1000)))
			} else {
				old = append(old, words[rng.IntN(len(words))])
			}
		}
		cur := append([]string(nil), old...)
		for range rng.IntN(6) {
			at := rng.IntN(len(cur) + 1)
			switch rng.IntN(3) {
			case 0:
				cur = append(cur[:at], append([]string{fmt.Sprintf("new %d\n", rng.IntN(100))}, cur[at:]...)...)
			case 1:
				if at < len(cur) {
					cur = append(cur[:at], cur[at+1:]...)
				}
			case 2:
				if at < len(cur) {
					cur[at] = words[rng.IntN(len(words))]
				}
			}
		}
		a, b := strings.Join(old, ""), strings.Join(cur, "")
		if rng.IntN(4) == 0 {
			a = strings.TrimSuffix(a, "\n")
		}
		if rng.IntN(4) == 0 {
			b = strings.TrimSuffix(b, "\n")
		}
		diff := fsUnifiedDiff("/f", a, b)
		if got := applyUnified(t, a, diff); got != b {
			t.Fatalf("iter %d: diff of %q -> %q does not apply:\n%s\ngives %q", iter, a, b, diff, got)
		}
	}
}

// TestFSDiffLarge forces the fallbacks: Myers gives up on a distance above
// fsDiffMaxD, then unique lines anchor the rest.
func TestFSDiffLarge(t *testing.T) {
	var a, b strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&a, "line %d\n", i)
		if i%5 == 0 {
			fmt.Fprintf(&b, "changed %d\n", i)
		} else {
			fmt.Fprintf(&b, "line %d\n", i)
		}
	}
	diff := fsUnifiedDiff("/big", a.String(), b.String())
	if len(diff) > wire.MaxDiffBytes+200 {
		t.Fatalf("diff of %d bytes", len(diff))
	}
	if !strings.Contains(diff, "-line 0\n+changed 0\n") {
		t.Errorf("diff does not start with the first change:\n%.300s", diff)
	}
	// No anchors at all: everything replaced, cut at MaxDiffBytes.
	var c strings.Builder
	for i := range 100000 {
		fmt.Fprintf(&c, "other %d\n", i)
	}
	diff = fsUnifiedDiff("/big", a.String(), c.String())
	if len(diff) > wire.MaxDiffBytes+200 || !strings.HasSuffix(diff, "bytes]\n") {
		t.Errorf("huge diff of %d bytes ends %q", len(diff), diff[max(0, len(diff)-80):])
	}
	// Small enough to apply.
	var d strings.Builder
	for i := range 3000 {
		if i%3 == 0 {
			fmt.Fprintf(&d, "x%d\n", i)
		} else {
			fmt.Fprintf(&d, "line %d\n", i)
		}
	}
	var e strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&e, "line %d\n", i)
	}
	diff = fsUnifiedDiff("/mid", e.String(), d.String())
	if got := applyUnified(t, e.String(), diff); got != d.String() {
		t.Error("a diff beyond Myers' budget does not apply")
	}
}
