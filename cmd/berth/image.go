package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/internal/imagebuild"
	"github.com/berth-dev/berth/internal/workspace"
)

// image handles `berth image pack` and `berth image import`.
func image(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("image needs a subcommand: pack or import")
	}
	switch args[0] {
	case "pack":
		return imagePack(ctx, args[1:], stdout)
	case "import":
		return imageImport(ctx, args[1:], stdout)
	}
	return fmt.Errorf("unknown image subcommand %q (want pack or import)", args[0])
}

func imagePack(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("berth image pack", flag.ContinueOnError)
	rootfs := fs.String("rootfs", "", "root filesystem directory to pack")
	ref := fs.String("ref", "", "image name, e.g. docker.io/library/debian:bookworm-slim")
	out := fs.String("out", "", "OCI archive to write")
	workdir := fs.String("workdir", "", "image working directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rootfs == "" || *ref == "" || *out == "" {
		return errors.New("image pack needs --rootfs, --ref and --out")
	}
	tmp := *out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	cfg := imagebuild.Config{Env: []string{imagebuild.DefaultPathEnv}, WorkingDir: *workdir, Cmd: []string{"/bin/sh"}, Created: time.Now().UTC()}
	if err := imagebuild.WriteArchive(ctx, f, *rootfs, *ref, cfg); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%s)\n", *out, *ref)
	return nil
}

func imageImport(ctx context.Context, args []string, stdout io.Writer) error {
	var name string
	cfg, fs, err := loadConfig("image import", args, false, func(fs *flag.FlagSet) {
		fs.StringVar(&name, "name", "", "name for the archive's image when the archive does not name it")
	})
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("image import needs exactly one archive path")
	}
	path, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		return err
	}
	rt, err := newRuntime(cfg)
	if err != nil {
		return err
	}
	defer rt.Close()
	mgr := workspace.NewManager(rt, managerOptions(cfg, newLogger(os.Stderr, cfg.LogLevel)))
	imgs, err := mgr.ImportImages(ctx, path, name)
	if err != nil {
		return err
	}
	for _, img := range imgs {
		fmt.Fprintf(stdout, "imported %s %s\n", img.Name, img.Digest)
	}
	return nil
}
