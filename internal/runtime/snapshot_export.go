package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ExportSnapshot names an OCI image ref whose layers are base's and then
// the layers of the committed snapshot key and of the snapshots it builds
// on. A snapshot does not keep its layer (that would store each version
// twice), so each is computed from the snapshot and its parent, once per
// export, uncompressed (its digest is also its diff ID); versions made
// before that kept their layer, which is used as is. berth writes a new
// config and manifest and points the image record at them. The image
// then serves like any other: workspace_create from it, or `ctr image
// export`. An existing image named ref is replaced, labels included.
func (r *Containerd) ExportSnapshot(ctx context.Context, snapshotter, key, base, ref string, labels map[string]string) (Image, error) {
	c, ctx, err := r.connect(ctx)
	if err != nil {
		return Image{}, err
	}
	lctx, done, err := r.snapshotLease(ctx, c, "export", key)
	if err != nil {
		return Image{}, err
	}
	defer done(false)
	layers, err := r.snapshotLayers(lctx, c, snapshotter, key)
	if err != nil {
		return Image{}, err
	}
	baseImg, err := c.GetImage(ctx, base)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", base, r.wrap(err))
	}
	cs := c.ContentStore()
	manifest, err := images.Manifest(ctx, cs, baseImg.Target(), platforms.Default())
	if err != nil {
		return Image{}, fmt.Errorf("manifest of %s: %w", base, r.wrap(err))
	}
	var config ocispec.Image
	if err := readJSONBlob(ctx, cs, manifest.Config, &config); err != nil {
		return Image{}, fmt.Errorf("config of %s: %w", base, err)
	}
	now := time.Now().UTC()
	config.Created = &now
	for _, l := range layers {
		config.RootFS.DiffIDs = append(config.RootFS.DiffIDs, l.Digest)
		config.History = append(config.History, ocispec.History{Created: &now, CreatedBy: "berth snapshot " + key})
	}

	configDesc, err := writeJSONBlob(lctx, cs, ocispec.MediaTypeImageConfig, config, nil)
	if err != nil {
		return Image{}, fmt.Errorf("write image config: %w", r.wrap(err))
	}
	out := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    append(append([]ocispec.Descriptor(nil), manifest.Layers...), layers...),
	}
	// The manifest holds its config and layers for the garbage collector.
	refs := map[string]string{"containerd.io/gc.ref.content.config": configDesc.Digest.String()}
	for i, l := range out.Layers {
		refs[fmt.Sprintf("containerd.io/gc.ref.content.l.%d", i)] = l.Digest.String()
	}
	manifestDesc, err := writeJSONBlob(lctx, cs, ocispec.MediaTypeImageManifest, out, refs)
	if err != nil {
		return Image{}, fmt.Errorf("write image manifest: %w", r.wrap(err))
	}
	rec := images.Image{Name: ref, Labels: labels, Target: manifestDesc, CreatedAt: now, UpdatedAt: now}
	is := c.ImageService()
	if _, err := is.Create(lctx, rec); errdefs.IsAlreadyExists(err) {
		_, err = is.Update(lctx, rec, "target", "labels")
		if err != nil {
			return Image{}, fmt.Errorf("replace image %s: %w", ref, r.wrap(err))
		}
	} else if err != nil {
		return Image{}, fmt.Errorf("create image %s: %w", ref, r.wrap(err))
	}
	var size int64
	for _, l := range out.Layers {
		size += l.Size
	}
	return Image{Name: ref, Digest: manifestDesc.Digest.String(), Size: size, CreatedAt: now, Labels: labels}, nil
}

// snapshotLayers returns the layers of the committed snapshot key and of
// the berth snapshots below it, bottom first, down to the image's own. ctx
// must carry a lease: the layers computed here belong to no image yet.
func (r *Containerd) snapshotLayers(ctx context.Context, c *containerd.Client, snapshotter, key string) ([]ocispec.Descriptor, error) {
	sn := c.SnapshotService(snapshotter)
	var layers []ocispec.Descriptor
	for k := key; k != ""; {
		info, err := sn.Stat(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", k, r.wrap(err))
		}
		if info.Labels[LabelSnapshotLayer] == "" {
			if k == key {
				return nil, fmt.Errorf("%w: snapshot %s has no layer of berth's", errdefs.ErrInvalidArgument, key)
			}
			break // the image's own layers
		}
		desc, err := r.snapshotLayer(ctx, c, sn, info)
		if err != nil {
			return nil, fmt.Errorf("layer of snapshot %s: %w", k, err)
		}
		layers = append([]ocispec.Descriptor{desc}, layers...)
		k = info.Parent
	}
	return layers, nil
}

// snapshotLayer returns the layer a berth snapshot was made from: the one
// it kept, or one computed from it and its parent.
func (r *Containerd) snapshotLayer(ctx context.Context, c *containerd.Client, sn snapshots.Snapshotter, info snapshots.Info) (ocispec.Descriptor, error) {
	if ref := info.Labels[labelLayerRef]; ref != "" {
		dgst, err := digest.Parse(ref)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("layer digest %q: %w", ref, err)
		}
		ci, err := c.ContentStore().Info(ctx, dgst)
		if err != nil {
			return ocispec.Descriptor{}, r.wrap(err)
		}
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: dgst, Size: ci.Size}, nil
	}
	suffix := randomSuffix()
	var lower []mount.Mount
	if info.Parent != "" {
		lowerKey := info.Name + ".export-lower-" + suffix
		m, err := sn.View(ctx, lowerKey, info.Parent)
		if err != nil {
			return ocispec.Descriptor{}, r.wrap(err)
		}
		defer r.removeQuietly(ctx, sn, lowerKey)
		lower = m
	}
	upperKey := info.Name + ".export-" + suffix
	upper, err := sn.View(ctx, upperKey, info.Name)
	if err != nil {
		return ocispec.Descriptor{}, r.wrap(err)
	}
	defer r.removeQuietly(ctx, sn, upperKey)
	desc, err := c.DiffService().Compare(ctx, lower, upper,
		diff.WithMediaType(ocispec.MediaTypeImageLayer),
		diff.WithReference("berth-export-"+info.Name+"-"+suffix))
	return desc, r.wrap(err)
}

func readJSONBlob(ctx context.Context, cs content.Provider, desc ocispec.Descriptor, v any) error {
	data, err := content.ReadBlob(ctx, cs, desc)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

func writeJSONBlob(ctx context.Context, cs content.Ingester, mediaType string, v any, labels map[string]string) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	var opts []content.Opt
	if labels != nil {
		opts = append(opts, content.WithLabels(labels))
	}
	if err := content.WriteBlob(ctx, cs, desc.Digest.String(), bytes.NewReader(data), desc, opts...); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}
