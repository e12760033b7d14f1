package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/workspace"
)

// doctor checks what berth needs on this host and says how to fix what is missing.
func doctor(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, _, err := loadConfig("doctor", args, false, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rt, err := newRuntime(cfg)
	if err != nil {
		return err
	}
	defer rt.Close()

	failed := 0
	check := func(name string, fn func() (string, error)) {
		detail, err := fn()
		if err != nil {
			failed++
			fmt.Fprintf(stdout, "FAIL  %-12s %v\n", name, err)
			return
		}
		fmt.Fprintf(stdout, "ok    %-12s %s\n", name, detail)
	}
	check("containerd", func() (string, error) {
		v, err := rt.Version(ctx)
		return fmt.Sprintf("%s at %s (namespace %s)", v, cfg.ContainerdAddress, cfg.Namespace), err
	})
	check("runc", func() (string, error) {
		path, err := exec.LookPath("runc")
		if err != nil {
			return "", errors.New("runc is not on PATH: install it (apt-get install runc)")
		}
		out, err := exec.CommandContext(ctx, path, "--version").Output()
		first, _, _ := strings.Cut(string(out), "\n")
		return path + ": " + first, err
	})
	check("snapshotter", func() (string, error) {
		return cfg.Snapshotter, rt.CheckSnapshotter(ctx, cfg.Snapshotter)
	})
	check("cgroups", cgroupCheck)
	check("agent", func() (string, error) {
		return cfg.AgentBinary + " is static", workspace.CheckAgentBinary(cfg.AgentBinary)
	})
	check("state-dir", func() (string, error) {
		if err := workspace.CheckStateDir(cfg.StateDir); err != nil {
			return "", err
		}
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			return "", fmt.Errorf("%v: run as root or choose --state-dir", err)
		}
		f, err := os.CreateTemp(cfg.StateDir, ".doctor-*")
		if err != nil {
			return "", fmt.Errorf("%s is not writable: %v", cfg.StateDir, err)
		}
		f.Close()
		os.Remove(f.Name())
		return cfg.StateDir + " is writable", nil
	})
	check("cdi", func() (string, error) {
		var found []string
		for _, dir := range cfg.CDISpecDirs {
			specs, _ := filepath.Glob(filepath.Join(dir, "*.*"))
			found = append(found, specs...)
		}
		return fmt.Sprintf("%d spec file(s) in %v", len(found), cfg.CDISpecDirs), nil
	})
	if failed > 0 {
		return fmt.Errorf("%d check(s) failed", failed)
	}
	return nil
}

// cgroupCheck reports the cgroup version and the controllers berth's limits use.
func cgroupCheck() (string, error) {
	if data, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		have := strings.Fields(string(data))
		var missing []string
		for _, c := range []string{"cpu", "memory", "pids"} {
			if !strings.Contains(" "+strings.Join(have, " ")+" ", " "+c+" ") {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			return "", fmt.Errorf("cgroup v2 lacks controllers %v: limits on them will fail", missing)
		}
		return "v2 with cpu, memory, pids", nil
	}
	var missing []string
	for _, c := range []string{"cpu", "memory", "pids"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c)); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("cgroup v1 hierarchies %v are not mounted under /sys/fs/cgroup", missing)
	}
	return "v1 with cpu, memory, pids", nil
}
