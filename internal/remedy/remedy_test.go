package remedy

import (
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
)

func TestRemedyKeepsClassAndMessage(t *testing.T) {
	base := fmt.Errorf("%w: workspace alpha has no MCP server %q", errdefs.ErrNotFound, "x")
	err := fmt.Errorf("calling: %w", With(ListMCPServers, base))
	if Of(err) != ListMCPServers {
		t.Fatalf("Of = %v, want ListMCPServers", Of(err))
	}
	if !errdefs.IsNotFound(err) {
		t.Fatal("the error lost its class")
	}
	if err.Error() != "calling: "+base.Error() {
		t.Fatalf("message changed: %q", err)
	}
	if Of(errors.New("plain")) != None || Of(nil) != None {
		t.Fatal("an error without a remedy must say None")
	}
	if With(Start, nil) != nil {
		t.Fatal("With(nil) must stay nil")
	}
}
