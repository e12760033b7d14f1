package server

import (
	"fmt"
	"sort"
	"strings"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// The diff of an edit is meant for reading (by a model or a person), so it
// should be the small diff a person would write; but edits can touch
// 16 MiB files, so no step may be quadratic without a bound. Lines are
// compared as interned ids; Myers' O(ND) algorithm runs under a work
// budget, and where it gives up, lines that occur exactly once on both
// sides (patience diff's anchors) split the problem into smaller ones.
// With no anchors left, a region is shown as deleted and inserted whole,
// which is still a correct diff.

const (
	fsDiffContext = 3
	// fsDiffMaxD bounds one Myers run's edit distance (its memory grows
	// with the square of it).
	fsDiffMaxD = 1000
	// fsDiffBudget bounds the steps of all Myers runs of one diff.
	fsDiffBudget = 20_000_000
)

type fsDiffOp struct {
	kind byte // '=', '-', '+'
	// aPos and bPos count the old and new lines before this op; the op's
	// own line is al[aPos] for '=' and '-', bl[bPos] for '+'.
	aPos, bPos int
}

// fsSplitLines splits s after every "\n"; a last line without one is kept
// as it is.
func fsSplitLines(s string) []string {
	if s == "" {
		return nil
	}
	lines := make([]string, 0, strings.Count(s, "\n")+1)
	for len(s) > 0 {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			lines = append(lines, s)
			break
		}
		lines = append(lines, s[:i+1])
		s = s[i+1:]
	}
	return lines
}

// fsUnifiedDiff returns the unified diff from old to new of the file at the
// absolute path p, with git's a/ and b/ prefixes; "" if they are equal.
func fsUnifiedDiff(p, old, new string) string {
	if old == new {
		return ""
	}
	al, bl := fsSplitLines(old), fsSplitLines(new)
	ops := fsDiffLines(al, bl)
	return fsFormatUnified("a"+p, "b"+p, al, bl, ops)
}

type fsDiffer struct {
	a, b []int
	ops  []fsDiffOp
	work int
}

func fsDiffLines(al, bl []string) []fsDiffOp {
	ids := make(map[string]int, len(al))
	intern := func(lines []string) []int {
		out := make([]int, len(lines))
		for i, l := range lines {
			id, ok := ids[l]
			if !ok {
				id = len(ids)
				ids[l] = id
			}
			out[i] = id
		}
		return out
	}
	d := &fsDiffer{a: intern(al), b: intern(bl)}
	d.ops = make([]fsDiffOp, 0, max(len(al), len(bl)))
	d.diff(0, len(al), 0, len(bl))
	return d.ops
}

func (d *fsDiffer) equal(a, b int)  { d.ops = append(d.ops, fsDiffOp{'=', a, b}) }
func (d *fsDiffer) delete(a, b int) { d.ops = append(d.ops, fsDiffOp{'-', a, b}) }
func (d *fsDiffer) insert(a, b int) { d.ops = append(d.ops, fsDiffOp{'+', a, b}) }

// diff appends the ops turning a[aLo:aHi] into b[bLo:bHi].
func (d *fsDiffer) diff(aLo, aHi, bLo, bHi int) {
	for aLo < aHi && bLo < bHi && d.a[aLo] == d.b[bLo] {
		d.equal(aLo, bLo)
		aLo, bLo = aLo+1, bLo+1
	}
	suffix := 0
	for aLo < aHi-suffix && bLo < bHi-suffix && d.a[aHi-1-suffix] == d.b[bHi-1-suffix] {
		suffix++
	}
	aHi, bHi = aHi-suffix, bHi-suffix
	switch {
	case aLo == aHi:
		for j := bLo; j < bHi; j++ {
			d.insert(aLo, j)
		}
	case bLo == bHi:
		for i := aLo; i < aHi; i++ {
			d.delete(i, bLo)
		}
	case !d.myers(aLo, aHi, bLo, bHi):
		anchors := d.anchors(aLo, aHi, bLo, bHi)
		if len(anchors) == 0 {
			for i := aLo; i < aHi; i++ {
				d.delete(i, bLo)
			}
			for j := bLo; j < bHi; j++ {
				d.insert(aHi, j)
			}
			break
		}
		pa, pb := aLo, bLo
		for _, an := range anchors {
			d.diff(pa, an[0], pb, an[1])
			d.equal(an[0], an[1])
			pa, pb = an[0]+1, an[1]+1
		}
		d.diff(pa, aHi, pb, bHi)
	}
	for k := range suffix {
		d.equal(aHi+k, bHi+k)
	}
}

// myers appends a shortest edit script for the range, or reports false
// (appending nothing) when that would exceed the budget.
func (d *fsDiffer) myers(aLo, aHi, bLo, bHi int) bool {
	n, m := aHi-aLo, bHi-bLo
	maxD := min(n+m, fsDiffMaxD)
	off := maxD + 1
	v := make([]int, 2*maxD+3)
	// trace[dd] is v before step dd, for k in [-dd-1, dd+1].
	var trace [][]int
	for dd := 0; dd <= maxD; dd++ {
		trace = append(trace, append([]int(nil), v[off-dd-1:off+dd+2]...))
		for k := -dd; k <= dd; k += 2 {
			var x int
			if k == -dd || (k != dd && v[off+k-1] < v[off+k+1]) {
				x = v[off+k+1]
			} else {
				x = v[off+k-1] + 1
			}
			y := x - k
			start := x
			for x < n && y < m && d.a[aLo+x] == d.b[bLo+y] {
				x, y = x+1, y+1
			}
			d.work += x - start + 1
			v[off+k] = x
			if x >= n && y >= m {
				d.backtrack(trace, dd, aLo, bLo, n, m)
				return true
			}
		}
		if d.work > fsDiffBudget {
			return false
		}
	}
	return false
}

func (d *fsDiffer) backtrack(trace [][]int, dist, aLo, bLo, n, m int) {
	rev := make([]fsDiffOp, 0, n+m)
	x, y := n, m
	for dd := dist; dd > 0; dd-- {
		vs := trace[dd]
		at := func(k int) int { return vs[k+dd+1] }
		k := x - y
		prevK := k - 1
		if k == -dd || (k != dd && at(k-1) < at(k+1)) {
			prevK = k + 1
		}
		prevX := at(prevK)
		prevY := prevX - prevK
		for x > prevX && y > prevY {
			x, y = x-1, y-1
			rev = append(rev, fsDiffOp{'=', aLo + x, bLo + y})
		}
		if prevK == k+1 {
			rev = append(rev, fsDiffOp{'+', aLo + x, bLo + y - 1})
		} else {
			rev = append(rev, fsDiffOp{'-', aLo + x - 1, bLo + y})
		}
		x, y = prevX, prevY
	}
	for x > 0 && y > 0 {
		x, y = x-1, y-1
		rev = append(rev, fsDiffOp{'=', aLo + x, bLo + y})
	}
	for i := len(rev) - 1; i >= 0; i-- {
		d.ops = append(d.ops, rev[i])
	}
}

// anchors returns pairs (i, j) of lines a[i] == b[j] that occur exactly
// once in each range, in increasing order on both sides (the longest such
// chain, found as in patience sorting).
func (d *fsDiffer) anchors(aLo, aHi, bLo, bHi int) [][2]int {
	type seen struct{ na, nb, ia, ib int }
	count := make(map[int]*seen)
	for i := aLo; i < aHi; i++ {
		s := count[d.a[i]]
		if s == nil {
			s = &seen{}
			count[d.a[i]] = s
		}
		s.na++
		s.ia = i
	}
	for j := bLo; j < bHi; j++ {
		if s := count[d.b[j]]; s != nil {
			s.nb++
			s.ib = j
		}
	}
	var pairs [][2]int
	for i := aLo; i < aHi; i++ {
		if s := count[d.a[i]]; s.na == 1 && s.nb == 1 {
			pairs = append(pairs, [2]int{s.ia, s.ib})
		}
	}
	// Longest increasing subsequence on the b side.
	var tails []int // index into pairs of the smallest tail of each length
	prev := make([]int, len(pairs))
	for p, pr := range pairs {
		l := sort.Search(len(tails), func(t int) bool { return pairs[tails[t]][1] >= pr[1] })
		if l > 0 {
			prev[p] = tails[l-1]
		} else {
			prev[p] = -1
		}
		if l == len(tails) {
			tails = append(tails, p)
		} else {
			tails[l] = p
		}
	}
	if len(tails) == 0 {
		return nil
	}
	out := make([][2]int, len(tails))
	for p, i := tails[len(tails)-1], len(tails)-1; i >= 0; p, i = prev[p], i-1 {
		out[i] = pairs[p]
	}
	return out
}

// fsFormatUnified writes ops as unified diff hunks the way GNU diff -u and
// git do: 3 lines of context, hunks closer than twice that merged, "-l,n"
// ranges with ",1" left out and an empty range naming the line before it,
// and a marker after a last line that has no newline.
func fsFormatUnified(aName, bName string, al, bl []string, ops []fsDiffOp) string {
	var sb strings.Builder
	sb.WriteString("--- " + aName + "\n+++ " + bName + "\n")
	for i := 0; i < len(ops); {
		for i < len(ops) && ops[i].kind == '=' {
			i++
		}
		if i == len(ops) {
			break
		}
		start := max(0, i-fsDiffContext)
		end := i // one past the last change of this hunk
		for j := i; j < len(ops); {
			if ops[j].kind != '=' {
				j++
				end = j
				continue
			}
			r := j
			for r < len(ops) && ops[r].kind == '=' {
				r++
			}
			if r == len(ops) || r-j > 2*fsDiffContext {
				break
			}
			j = r
		}
		stop := min(len(ops), end+fsDiffContext)
		if !fsWriteHunk(&sb, al, bl, ops[start:stop]) {
			fmt.Fprintf(&sb, "[diff cut here: it is longer than %d bytes]\n", wire.MaxDiffBytes)
			break
		}
		i = stop
	}
	return sb.String()
}

func fsWriteHunk(sb *strings.Builder, al, bl []string, ops []fsDiffOp) bool {
	na, nb := 0, 0
	for _, op := range ops {
		switch op.kind {
		case '=':
			na, nb = na+1, nb+1
		case '-':
			na++
		case '+':
			nb++
		}
	}
	header := fmt.Sprintf("@@ -%s +%s @@\n", fsHunkRange(ops[0].aPos, na), fsHunkRange(ops[0].bPos, nb))
	if sb.Len()+len(header) > wire.MaxDiffBytes {
		return false
	}
	sb.WriteString(header)
	for _, op := range ops {
		var line string
		switch op.kind {
		case '=':
			line = al[op.aPos]
		case '-':
			line = al[op.aPos]
		case '+':
			line = bl[op.bPos]
		}
		text, ok := strings.CutSuffix(line, "\n")
		n := 2 + len(text)
		if !ok {
			n += len("\\ No newline at end of file\n")
		}
		if sb.Len()+n > wire.MaxDiffBytes {
			return false
		}
		if op.kind == '=' {
			sb.WriteByte(' ')
		} else {
			sb.WriteByte(op.kind)
		}
		sb.WriteString(text)
		sb.WriteByte('\n')
		if !ok {
			sb.WriteString("\\ No newline at end of file\n")
		}
	}
	return true
}

func fsHunkRange(start, n int) string {
	switch n {
	case 0:
		return fmt.Sprintf("%d,0", start)
	case 1:
		return fmt.Sprintf("%d", start+1)
	}
	return fmt.Sprintf("%d,%d", start+1, n)
}
