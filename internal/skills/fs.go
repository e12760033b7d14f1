package skills

import (
	"context"
	"errors"
	"io"

	"github.com/berth-dev/berth/internal/agent"
)

// FS is the part of the workspace file API skills need; *agent.Client
// implements it. Errors from the workspace are *agent.RemoteError values
// whose Code (agent.CodeNotFound, ...) this package acts on.
type FS interface {
	List(ctx context.Context, req agent.ListRequest) (agent.ListResult, error)
	ReadText(ctx context.Context, req agent.ReadTextRequest) (agent.ReadTextResult, error)
	Write(ctx context.Context, req agent.WriteRequest, body io.Reader) (agent.WriteResult, error)
	Delete(ctx context.Context, path string, recursive bool) error
	Copy(ctx context.Context, src, dst string, overwrite bool) (agent.FileInfo, error)
	Stat(ctx context.Context, path string) (agent.FileInfo, error)
	// Mkdir is needed because Copy, unlike Write, does not create the
	// destination's parent: adopting a skill into a user root that does
	// not exist yet must create the root first.
	Mkdir(ctx context.Context, path string, parents bool) (agent.FileInfo, error)
}

var _ FS = (*agent.Client)(nil)

// remoteCode is the agent's error code of err, or "" when err is not an
// answer from the agent (a transport failure, a canceled context).
func remoteCode(err error) string {
	var re *agent.RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	return ""
}

// isRemote says err is an answer from the agent about the file itself,
// as opposed to a failure to reach the agent or a canceled call, which
// must end the whole operation.
func isRemote(err error) bool {
	var re *agent.RemoteError
	return errors.As(err, &re) && re.Code != agent.CodeCanceled
}
