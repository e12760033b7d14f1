package skills

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/containerd/errdefs"
)

const (
	indexVersion = 1
	// maxIndexBytes caps the index: room for tens of thousands of names,
	// far more than the roots can hold.
	maxIndexBytes = 1 << 20
	// indexAttempts bounds the retries of an index update that lost a race
	// with another writer.
	indexAttempts = 3
)

// indexFile is the index's format. A file without "version" is taken as
// version 1, so a hand-written {"disabled": [...]} works.
type indexFile struct {
	Version  int      `json:"version"`
	Disabled []string `json:"disabled"`
}

// index is the index as read: the disabled names, and the revision to
// write against (empty when there is no index file yet).
type index struct {
	disabled map[string]bool
	revision string
}

// readIndex reads the index of userRoot. No file means nothing is
// disabled. A file that cannot be understood is an error, never taken as
// empty: that would silently enable every disabled skill, and the next
// update would overwrite what the user wrote.
func readIndex(ctx context.Context, fsys FS, userRoot string) (index, error) {
	p := indexPath(userRoot)
	text, rev, err := readText(ctx, fsys, p, maxIndexBytes, false)
	switch {
	case errors.Is(err, errMissing):
		return index{disabled: map[string]bool{}}, nil
	case unusable(err):
		return index{}, preconditionf("skills index %s is unusable (%v); fix it or delete it (deleting it enables every skill)", p, err)
	case err != nil:
		return index{}, err
	}
	var f indexFile
	dec := json.NewDecoder(bytes.NewReader([]byte(text)))
	if err := dec.Decode(&f); err != nil {
		return index{}, preconditionf("skills index %s is not valid JSON (%v); fix it to look like {\"version\":1,\"disabled\":[\"name\"]}, or delete it (deleting it enables every skill)", p, err)
	}
	if dec.More() {
		return index{}, preconditionf("skills index %s holds more than one JSON value; fix it to look like {\"version\":1,\"disabled\":[\"name\"]}", p)
	}
	if f.Version != 0 && f.Version != indexVersion {
		return index{}, preconditionf("skills index %s has version %d; this berth understands version %d only", p, f.Version, indexVersion)
	}
	idx := index{disabled: make(map[string]bool, len(f.Disabled)), revision: rev}
	for _, name := range f.Disabled {
		idx.disabled[name] = true
	}
	return idx, nil
}

// updateIndex applies change to the disabled set and writes the index if
// change reports a change. The write names the revision it read, so a
// concurrent update is retried rather than lost. ctx should be detached
// from the caller's cancellation: see mutationContext.
func updateIndex(ctx context.Context, fsys FS, userRoot string, change func(disabled map[string]bool) bool) error {
	p := indexPath(userRoot)
	for range indexAttempts {
		idx, err := readIndex(ctx, fsys, userRoot)
		if err != nil {
			return err
		}
		if !change(idx.disabled) {
			return nil
		}
		f := indexFile{Version: indexVersion, Disabled: make([]string, 0, len(idx.disabled))}
		for name := range idx.disabled {
			f.Disabled = append(f.Disabled, name)
		}
		// Sorted, so that the file does not churn and diffs read well.
		slices.Sort(f.Disabled)
		data, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			return err
		}
		data = append(data, '\n')
		_, err = fsys.Write(ctx, wire.WriteRequest{Path: p, ExpectedRevision: idx.revision, MakeParents: true}, bytes.NewReader(data))
		if remoteCode(err) == wire.CodeConflict {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing skills index %s: %w", p, err)
		}
		return nil
	}
	return classed(errdefs.ErrConflict, "skills index %s kept changing while it was updated; try again", p)
}
