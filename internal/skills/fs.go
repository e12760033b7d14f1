package skills

import (
	"context"
	"errors"
	"io"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
)

// FS is the part of the workspace file API skills need; *client.Client
// implements it. Errors from the workspace are *client.RemoteError values
// whose Code (wire.CodeNotFound, ...) this package acts on.
type FS interface {
	List(ctx context.Context, req wire.ListRequest) (wire.ListResult, error)
	ReadText(ctx context.Context, req wire.ReadTextRequest) (wire.ReadTextResult, error)
	Write(ctx context.Context, req wire.WriteRequest, body io.Reader) (wire.WriteResult, error)
	Delete(ctx context.Context, path string, recursive bool) error
	Copy(ctx context.Context, src, dst string, overwrite bool) (wire.FileInfo, error)
	Stat(ctx context.Context, path string) (wire.FileInfo, error)
	// Mkdir is needed because Copy, unlike Write, does not create the
	// destination's parent: adopting a skill into a user root that does
	// not exist yet must create the root first.
	Mkdir(ctx context.Context, path string, parents bool) (wire.FileInfo, error)
}

var _ FS = (*client.Client)(nil)

// remoteCode is the agent's error code of err, or "" when err is not an
// answer from the agent (a transport failure, a canceled context).
func remoteCode(err error) string {
	var re *client.RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	return ""
}

// isRemote says err is an answer from the agent about the file itself,
// as opposed to a failure to reach the agent or a canceled call, which
// must end the whole operation.
func isRemote(err error) bool {
	var re *client.RemoteError
	return errors.As(err, &re) && re.Code != wire.CodeCanceled
}
