package skills

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/containerd/errdefs"
)

// skillError carries a message a model can act on and the errdefs class
// a caller maps to a result (errdefs.IsNotFound and friends see it),
// while errors.As still reaches an underlying *client.RemoteError.
type skillError struct {
	class error
	err   error
}

func (e *skillError) Error() string   { return e.err.Error() }
func (e *skillError) Unwrap() []error { return []error{e.class, e.err} }

func classed(class error, format string, args ...any) error {
	return &skillError{class: class, err: fmt.Errorf(format, args...)}
}

func invalidf(format string, args ...any) error {
	return classed(errdefs.ErrInvalidArgument, format, args...)
}

func notFoundf(format string, args ...any) error {
	return classed(errdefs.ErrNotFound, format, args...)
}

func preconditionf(format string, args ...any) error {
	return classed(errdefs.ErrFailedPrecondition, format, args...)
}

func existsf(format string, args ...any) error {
	return classed(errdefs.ErrAlreadyExists, format, args...)
}

// quote quotes text from a model or the workspace for a message, cut so
// that a huge name cannot make a huge error.
func quote(s string) string {
	const maxLen = 80
	if len(s) <= maxLen {
		return strconv.Quote(s)
	}
	cut := maxLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}
