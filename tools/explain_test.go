package tools

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/remedy"
	"github.com/containerd/errdefs"
)

// Every remedy the packages below can attach is worded here, naming the
// tool that carries it out; an error without one is left as it is.
func TestExplainWordsEveryRemedy(t *testing.T) {
	for r := remedy.Create; r <= remedy.PreserveData; r++ {
		a := advice[r]
		if a == "" {
			t.Errorf("remedy %d has no advice", r)
			continue
		}
		if !strings.Contains(a, "_") {
			t.Errorf("advice %q for remedy %d names no tool", a, r)
		}
		err := fmt.Errorf("wrapped: %w", remedy.With(r, fmt.Errorf("%w: what went wrong", errdefs.ErrNotFound)))
		if got, want := Explain(err), "wrapped: not found: what went wrong; "+a; got != want {
			t.Errorf("Explain = %q, want %q", got, want)
		}
	}
	if got := Explain(errors.New("plain")); got != "plain" {
		t.Errorf("Explain(plain) = %q", got)
	}
	if _, ok := advice[remedy.PreserveData+1]; ok {
		t.Error("a remedy past PreserveData has advice: extend the loop above")
	}
}
