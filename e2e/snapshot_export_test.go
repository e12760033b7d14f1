package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// TestSnapshotExport exports a version that builds on another (after a
// rollback) as an image and starts a new workspace from it.
func TestSnapshotExport(t *testing.T) {
	e := newEnv(t)
	c := e.stdioMcpgo()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "exp"}).decode(t, &struct{}{})
	e.execIn(t, "exp", "sh", "-c", "echo one > /data/a")
	mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "exp"}).decode(t, &struct{}{})
	e.execIn(t, "exp", "sh", "-c", "echo two > /data/b")
	mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "exp"}).decode(t, &struct{}{})
	mustCall(t, c, "snapshot_rollback", map[string]any{"bot_id": "exp", "version": 1}).decode(t, &struct{}{})
	e.execIn(t, "exp", "sh", "-c", "echo three > /data/c")
	var v4 snapOut
	mustCall(t, c, "snapshot_create", map[string]any{"bot_id": "exp"}).decode(t, &v4)

	var img struct {
		Name   string `json:"name"`
		Digest string `json:"digest"`
	}
	mustCall(t, c, "snapshot_export", map[string]any{"bot_id": "exp", "version": v4.Version}).decode(t, &img)
	if img.Name != "berth.local/snapshots/exp:v4" || !strings.HasPrefix(img.Digest, "sha256:") {
		t.Fatalf("snapshot_export: %+v", img)
	}
	var images struct {
		Images []struct {
			Name string `json:"name"`
		} `json:"images"`
	}
	mustCall(t, c, "image_list", map[string]any{}).decode(t, &images)
	found := false
	for _, i := range images.Images {
		found = found || i.Name == img.Name
	}
	if !found {
		t.Errorf("image_list lacks %s: %+v", img.Name, images)
	}

	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "from-exp", "image": img.Name}).decode(t, &struct{}{})
	if got := e.execIn(t, "from-exp", "sh", "-c", "cat /data/a /data/c; test -e /data/b && echo b-present; true"); got != "one\nthree\n" {
		t.Errorf("a workspace from version 4 holds %q, want versions 1 and 4's files only", got)
	}
	if res := mustCall(t, c, "snapshot_export", map[string]any{"bot_id": "exp", "version": 9}); !res.IsError || !strings.Contains(res.Text, "no snapshot version 9") {
		t.Errorf("export of a missing version: %+v", res)
	}

	// The image keeps its layers when the workspace and its versions are
	// gone and containerd collects garbage: all of it can still be read.
	mustCall(t, c, "workspace_delete", map[string]any{"bot_id": "exp"}).decode(t, &struct{}{})
	ctx := namespaces.WithNamespace(context.Background(), e.namespace)
	leasesSvc := testenv.Client(t).LeasesService()
	l, err := leasesSvc.Create(ctx, leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	if err := leasesSvc.Delete(ctx, l, leases.SynchronousDelete); err != nil {
		t.Fatal(err)
	}
	e.ctr(t, nil, "images", "export", filepath.Join(t.TempDir(), "exp.tar"), img.Name)

	// image_delete refuses an image a workspace was made from, then takes it.
	if res := mustCall(t, c, "image_delete", map[string]any{"image": img.Name}); !res.IsError || !strings.Contains(res.Text, "used by workspace(s) from-exp") {
		t.Errorf("deleting an image in use: %+v", res)
	}
	mustCall(t, c, "workspace_delete", map[string]any{"bot_id": "from-exp"}).decode(t, &struct{}{})
	mustCall(t, c, "image_delete", map[string]any{"image": img.Name}).decode(t, &struct{}{})
	mustCall(t, c, "image_list", map[string]any{}).decode(t, &images)
	for _, i := range images.Images {
		if i.Name == img.Name {
			t.Errorf("image_list still has %s", img.Name)
		}
	}
	if res := mustCall(t, c, "image_delete", map[string]any{"image": img.Name}); !res.IsError || !strings.Contains(res.Text, "not found") {
		t.Errorf("deleting it again: %+v", res)
	}
}
