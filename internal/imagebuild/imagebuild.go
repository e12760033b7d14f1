// Package imagebuild turns a root filesystem directory into an OCI image
// archive (an OCI image layout packed as a tar stream) that containerd's
// importer and `ctr images import` accept, so that images can be brought to a
// host without a registry and tests can build their images locally.
//
// It owns only the archive format: it does not talk to containerd, pull, or
// modify the root filesystem it reads.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// AnnotationImageName is the index.json annotation containerd's importer
// takes an image's full name from (containerd's images.AnnotationImageName).
const AnnotationImageName = "io.containerd.image.name"

// DefaultPathEnv is the PATH most images set; callers that build images from
// bare root filesystems usually want it in Config.Env.
const DefaultPathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config is the runtime configuration recorded in the image.
type Config struct {
	Env        []string
	WorkingDir string
	User       string
	Entrypoint []string
	Cmd        []string
	Labels     map[string]string

	// Architecture defaults to runtime.GOARCH; the OS is always linux.
	Architecture string
	Variant      string

	// Created is the image's creation time. When set, file modification
	// times later than it are clamped to it (as with SOURCE_DATE_EPOCH), so
	// the same tree and Created always give the same image digest. When
	// zero, the config carries no creation time and mtimes are kept.
	Created time.Time
}

// WriteArchive writes an OCI image archive to w whose single layer holds the
// tree at rootfs, and whose index.json names the image ref (normalized the way
// containerd does: "busybox" becomes "docker.io/library/busybox:latest").
//
// Modes, ownership, symlinks, hard links, FIFOs and security.capability
// attributes are kept; device nodes and sockets are skipped, since the runtime
// provides /dev. The layer is staged in a temporary file to learn its digest
// before it is streamed, so memory use does not grow with the tree.
func WriteArchive(ctx context.Context, w io.Writer, rootfs string, ref string, cfg Config) error {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		// A digest cannot name an image that is yet to be built.
		return fmt.Errorf("image reference %q: must be a tag, not a digest", ref)
	}

	layerFile, err := os.CreateTemp("", "imagebuild-layer-*")
	if err != nil {
		return err
	}
	defer os.Remove(layerFile.Name())
	defer layerFile.Close()

	layer, diffID, err := writeLayer(ctx, layerFile, rootfs, cfg.Created)
	if err != nil {
		return fmt.Errorf("layer of %s: %w", rootfs, err)
	}

	platform := ocispec.Platform{
		Architecture: cfg.Architecture,
		OS:           "linux",
		Variant:      cfg.Variant,
	}
	if platform.Architecture == "" {
		platform.Architecture = runtime.GOARCH
	}
	img := ocispec.Image{
		Platform: platform,
		Config: ocispec.ImageConfig{
			Env:        cfg.Env,
			WorkingDir: cfg.WorkingDir,
			User:       cfg.User,
			Entrypoint: cfg.Entrypoint,
			Cmd:        cfg.Cmd,
			Labels:     cfg.Labels,
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		History: []ocispec.History{{
			CreatedBy: "berth imagebuild",
			Comment:   "root filesystem",
		}},
	}
	if !cfg.Created.IsZero() {
		created := cfg.Created.UTC()
		img.Created = &created
		img.History[0].Created = &created
	}
	configBlob, configDesc, err := jsonBlob(ocispec.MediaTypeImageConfig, img)
	if err != nil {
		return err
	}

	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{layer},
	}
	manifestBlob, manifestDesc, err := jsonBlob(ocispec.MediaTypeImageManifest, manifest)
	if err != nil {
		return err
	}
	manifestDesc.Platform = &platform
	manifestDesc.Annotations = map[string]string{
		AnnotationImageName:       named.String(),
		ocispec.AnnotationRefName: tagged.Tag(),
	}

	index := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifestDesc},
	}
	indexBlob, err := json.Marshal(index)
	if err != nil {
		return err
	}
	layoutBlob, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return err
	}

	if _, err := layerFile.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return writeLayout(w, cfg.Created, []layoutEntry{
		{name: ocispec.ImageLayoutFile, size: int64(len(layoutBlob)), r: bytes.NewReader(layoutBlob)},
		{name: ocispec.ImageIndexFile, size: int64(len(indexBlob)), r: bytes.NewReader(indexBlob)},
		{name: blobPath(configDesc.Digest), size: configDesc.Size, r: bytes.NewReader(configBlob)},
		{name: blobPath(manifestDesc.Digest), size: manifestDesc.Size, r: bytes.NewReader(manifestBlob)},
		{name: blobPath(layer.Digest), size: layer.Size, r: layerFile},
	})
}

type layoutEntry struct {
	name string
	size int64
	r    io.Reader
}

// writeLayout packs the OCI layout. The blob directories get their own entries
// because some extractors do not create parent directories.
func writeLayout(w io.Writer, mtime time.Time, entries []layoutEntry) error {
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	for _, e := range entries {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: e.size, ModTime: mtime}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.CopyN(tw, e.r, e.size); err != nil {
			return fmt.Errorf("write %s: %w", e.name, err)
		}
	}
	return tw.Close()
}

func blobPath(d digest.Digest) string {
	return "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

func jsonBlob(mediaType string, v any) ([]byte, ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return b, ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}, nil
}

// countingWriter hashes and counts what passes through it.
type countingWriter struct {
	h hash.Hash
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	return len(p), nil
}

func (c *countingWriter) digest() digest.Digest {
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(c.h.Sum(nil)))
}

// writeLayer writes the gzipped layer tar of rootfs to out and returns its
// descriptor and its diff ID (the digest of the uncompressed tar).
func writeLayer(ctx context.Context, out io.Writer, rootfs string, clamp time.Time) (ocispec.Descriptor, digest.Digest, error) {
	compressed := &countingWriter{h: sha256.New()}
	uncompressed := &countingWriter{h: sha256.New()}

	// BestSpeed: a Debian tree is a few hundred MB and the archive is
	// usually imported on the same host, so time matters more than size.
	zw, err := gzip.NewWriterLevel(io.MultiWriter(out, compressed), gzip.BestSpeed)
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	tw := tar.NewWriter(io.MultiWriter(zw, uncompressed))
	if err := writeTree(ctx, tw, rootfs, clamp); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	if err := tw.Close(); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	if err := zw.Close(); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	desc := ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageLayerGzip,
		Digest:    compressed.digest(),
		Size:      compressed.n,
	}
	return desc, uncompressed.digest(), nil
}

// writeTree walks rootfs in lexical order, which together with clamped
// mtimes makes the layer reproducible. It reads through an os.Root so that
// no symlink in the tree can lead it to a file outside rootfs.
func writeTree(ctx context.Context, tw *tar.Writer, rootfs string, clamp time.Time) error {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return err
	}
	defer root.Close()

	type inode struct{ dev, ino uint64 }
	linked := make(map[inode]string) // first path seen for each multiply linked file

	return fs.WalkDir(root.FS(), ".", func(name string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if name == "." {
			// The snapshotter creates the root; its mode is not the image's.
			return nil
		}
		fi, err := root.Lstat(name)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat information", name)
		}
		hdr := &tar.Header{
			Name:    name,
			Mode:    tarMode(fi.Mode()),
			Uid:     int(st.Uid),
			Gid:     int(st.Gid),
			ModTime: fi.ModTime().Truncate(time.Second),
		}
		if !clamp.IsZero() && hdr.ModTime.After(clamp) {
			hdr.ModTime = clamp.Truncate(time.Second)
		}

		switch fi.Mode().Type() {
		case fs.ModeDir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case fs.ModeSymlink:
			hdr.Typeflag = tar.TypeSymlink
			if hdr.Linkname, err = root.Readlink(name); err != nil {
				return err
			}
		case fs.ModeNamedPipe:
			hdr.Typeflag = tar.TypeFifo
		case 0:
			hdr.Typeflag = tar.TypeReg
			if st.Nlink > 1 {
				key := inode{uint64(st.Dev), st.Ino}
				if first, ok := linked[key]; ok {
					hdr.Typeflag = tar.TypeLink
					hdr.Linkname = first
					break
				}
				linked[key] = name
			}
			hdr.Size = fi.Size()
			if capability, ok := fileCapability(rootfs, name); ok {
				hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": capability}
			}
		default:
			return nil // device nodes and sockets
		}

		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := root.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		// CopyN so that a file that changes size under us fails loudly
		// instead of producing a corrupt tar.
		if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
}

// tarMode converts Go's file mode bits to the Unix ones tar stores.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// fileCapability reads the security.capability attribute, which Debian uses
// instead of setuid for some binaries (ping, for one). The path was just
// found by walking the tree and is a regular file, so following it is safe.
func fileCapability(rootfs, name string) (string, bool) {
	path := rootfs + "/" + name
	buf := make([]byte, 64)
	for {
		n, err := syscall.Getxattr(path, "security.capability", buf)
		if errors.Is(err, syscall.ERANGE) && len(buf) < 1<<16 {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil || n == 0 {
			return "", false
		}
		return string(buf[:n]), true
	}
}
