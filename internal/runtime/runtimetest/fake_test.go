package runtimetest

import (
	"archive/tar"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestFake(t *testing.T) {
	Suite(t, func(t *testing.T) Env {
		f := NewFake()
		img := f.AddImage("docker.io/berth-test/busybox:latest", "PATH=/bin")
		return Env{
			Runtime: f, Image: img.Name, Snapshotter: DefaultSnapshotter, Args: []string{"sleep", "3600"},
			Archive: indexArchive(t, img.Name),
			Crash: func(t *testing.T, id string) {
				if err := f.Exit(id, 137); err != nil {
					t.Fatal(err)
				}
			},
		}
	})
}

// indexArchive writes an OCI archive that names image ref in its
// index.json, which is all of an archive Fake reads.
func indexArchive(t *testing.T, ref string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType":   "application/vnd.oci.image.manifest.v1+json",
			"annotations": map[string]string{"io.containerd.image.name": ref},
		}},
	})
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Name: "index.json", Mode: 0o644, Size: int64(len(index))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(index); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
