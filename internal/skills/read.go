package skills

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/containerd/errdefs"
)

// errMissing says a file is not there, or a parent of it is not a
// directory: for a skill, that its directory is not a skill.
var errMissing = errors.New("file does not exist")

// errChanged says a file changed between two windows of one read.
var errChanged = errors.New("file changed while being read")

// headLines is the first window of a head read: enough for any sensible
// front matter, small enough that listing a thousand skills does not
// fetch a thousand bodies.
const headLines = 64

// readText reads the text file at p, at most maxBytes, through as many
// windows of lines as it takes. With head it stops as soon as the front
// matter is complete (or known to be absent), because a listing only
// needs the front matter.
//
// Errors: errMissing; a FailedPrecondition error when the file is there
// but unusable (a directory, not text, too large, unreadable), which a
// listing reports per skill; anything else (the agent unreachable, a
// canceled context) ends the caller's operation.
func readText(ctx context.Context, fsys FS, p string, maxBytes int, head bool) (text, revision string, err error) {
	for attempt := 0; ; attempt++ {
		text, revision, err = readTextOnce(ctx, fsys, p, maxBytes, head)
		if !errors.Is(err, errChanged) {
			return text, revision, err
		}
		if attempt == 2 {
			return "", "", preconditionf("%s keeps changing while it is read; try again once it is written", p)
		}
	}
}

func readTextOnce(ctx context.Context, fsys FS, p string, maxBytes int, head bool) (string, string, error) {
	var b strings.Builder
	offset, revision := 0, ""
	limit := wire.ReadMaxLimit
	if head {
		limit = headLines
	}
	tooLarge := func(size int64) error {
		return preconditionf("%s is %d bytes long; at most %d are allowed", p, size, maxBytes)
	}
	for {
		res, err := fsys.ReadText(ctx, wire.ReadTextRequest{Path: p, Offset: offset, Limit: limit, MaxBytes: maxBytes})
		if err != nil {
			switch code := remoteCode(err); {
			case code == wire.CodeNotFound || code == wire.CodeNotDirectory:
				return "", "", errMissing
			case isRemote(err):
				var re *client.RemoteError
				errors.As(err, &re)
				return "", "", preconditionf("cannot read %s: %s", p, re.Message)
			}
			return "", "", fmt.Errorf("reading %s: %w", p, err)
		}
		if res.Binary {
			return "", "", preconditionf("%s is not text: it holds NUL bytes or invalid UTF-8", p)
		}
		if res.Size > int64(maxBytes) {
			return "", "", tooLarge(res.Size)
		}
		if offset > 0 && res.Revision != revision {
			return "", "", errChanged
		}
		revision = res.Revision
		if b.Len()+len(res.Text) > maxBytes {
			return "", "", tooLarge(int64(b.Len() + len(res.Text)))
		}
		b.WriteString(res.Text)
		if head {
			fm, _, state := splitFrontMatter(b.String())
			switch {
			case state != frontMatterOpen && len(fm) > MaxFrontMatterBytes:
				return "", "", preconditionf("%s: %v", p, errFrontMatterTooLong(len(fm)))
			case state != frontMatterOpen:
				return b.String(), revision, nil
			case b.Len() > MaxFrontMatterBytes+len("---\n")+len("\ufeff"):
				// Still open past the cap: no need to read the rest.
				return "", "", preconditionf("%s: %v", p, errFrontMatterTooLong(b.Len()))
			}
		}
		if res.NextOffset == 0 {
			if res.Truncated {
				// A line cut by MaxBytes in a file that fits: it grew.
				return "", "", errChanged
			}
			return b.String(), revision, nil
		}
		if res.NextOffset <= offset {
			return "", "", fmt.Errorf("reading %s: the agent answered window %d with next window %d", p, offset, res.NextOffset)
		}
		offset = res.NextOffset
		limit = wire.ReadMaxLimit
	}
}

// unusable says err is readText's "there, but unusable".
func unusable(err error) bool {
	return errdefs.IsFailedPrecondition(err)
}
