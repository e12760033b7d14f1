package mcpproxy

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/containerd/errdefs"
)

// Opening a proxy session answers by the error's class, like every other
// berth endpoint; an error of no class is the bot's server not answering.
func TestHTTPStatusByClass(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("%w: no MCP server x", errdefs.ErrNotFound), http.StatusNotFound},
		{fmt.Errorf("%w: too many sessions", errdefs.ErrResourceExhausted), http.StatusTooManyRequests},
		{fmt.Errorf("%w: bad name", errdefs.ErrInvalidArgument), http.StatusBadRequest},
		{fmt.Errorf("%w: workspace stopped", errdefs.ErrFailedPrecondition), http.StatusPreconditionFailed},
		{fmt.Errorf("%w: agent gone", errdefs.ErrUnavailable), http.StatusServiceUnavailable},
		{errors.New("server exited"), http.StatusBadGateway},
	} {
		if got := httpStatus(c.err); got != c.want {
			t.Errorf("httpStatus(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
