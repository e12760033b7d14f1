// Package contrib holds the files `make install` puts on a host: the systemd
// unit and the example config. Its tests run `make install DESTDIR=...` and
// check what it lays out, and that systemd accepts the unit.
package contrib

import (
	"bytes"
	"debug/elf"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/config"
)

var (
	installOnce sync.Once
	installDir  string
	installErr  error
)

// installed runs `make install DESTDIR=...` once for the package's tests and
// returns the DESTDIR; tests that change files work on a copy. The binary is
// built outside bin/, so a test never rewrites bin/berth under the end-to-end
// tests that run from it.
func installed(t *testing.T) string {
	t.Helper()
	installOnce.Do(func() {
		if installDir, installErr = os.MkdirTemp("", "berth-install-"); installErr != nil {
			return
		}
		cmd := exec.Command("make", "--no-print-directory", "-C", "..", "install",
			"DESTDIR="+installDir, "BIN="+filepath.Join(installDir, "build", "berth"))
		if out, err := cmd.CombinedOutput(); err != nil {
			installErr = fmt.Errorf("make install DESTDIR=%s: %v\n%s", installDir, err, out)
		}
	})
	if installErr != nil {
		t.Fatal(installErr)
	}
	return installDir
}

// copyOf returns a copy of the make install layout that a test may change.
func copyOf(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command("cp", "-a", installed(t), d).CombinedOutput(); err != nil {
		t.Fatalf("copy the install layout: %v\n%s", err, out)
	}
	return d
}

// reinstall runs scripts/install.sh (what make install runs after building)
// again into destdir, with the binary make install built.
func reinstall(t *testing.T, destdir string) {
	t.Helper()
	cmd := exec.Command("../scripts/install.sh")
	cmd.Env = append(os.Environ(), "DESTDIR="+destdir, "BIN="+filepath.Join(installed(t), "build", "berth"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/install.sh DESTDIR=%s: %v\n%s", destdir, err, out)
	}
}

func TestMain(m *testing.M) {
	rc := m.Run()
	if installDir != "" {
		os.RemoveAll(installDir)
	}
	os.Exit(rc)
}

func TestInstallLayout(t *testing.T) {
	d := installed(t)

	want := map[string]os.FileMode{
		"usr/local/bin/berth":                           0o755,
		"usr/local/lib/systemd/system/berth.service":    0o644,
		"usr/local/share/doc/berth/config.example.yaml": 0o644,
		"etc/berth/config.yaml":                         0o644,
	}
	for rel, mode := range want {
		fi, err := os.Stat(filepath.Join(d, rel))
		if err != nil {
			t.Errorf("make install did not lay out %s: %v", rel, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", rel, fi.Mode().Perm(), mode)
		}
	}

	// The agent runs inside arbitrary images: the installed binary must be
	// static (no ELF interpreter) and it must run.
	bin := filepath.Join(d, "usr/local/bin/berth")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked", bin)
		}
	}
	f.Close()
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "berth ") {
		t.Errorf("installed berth version: %v, %q", err, out)
	}

	unit, err := os.ReadFile(filepath.Join(d, "usr/local/lib/systemd/system/berth.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"ExecStart=/usr/local/bin/berth serve --http ${BERTH_HTTP}",
		"After=containerd.service network-online.target",
		"Wants=containerd.service network-online.target",
		"WantedBy=multi-user.target",
	} {
		if !bytes.Contains(unit, []byte("\n"+line+"\n")) {
			t.Errorf("berth.service lacks %q", line)
		}
	}

	// The installed config is what a plain `berth serve` reads: the host's
	// containerd, the berth namespace, /var/lib/berth; and it names no
	// transport, so the same file serves --http and --stdio.
	cfg := config.Defaults()
	cfg.ConfigFile = filepath.Join(d, "etc/berth/config.yaml")
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	config.Register(fs, &cfg, true)
	t.Setenv("BERTH_CONFIG", cfg.ConfigFile)
	if err := config.Resolve(fs, []string{"--stdio"}); err != nil {
		t.Fatalf("installed config: %v", err)
	}
	if cfg.ContainerdAddress != "/run/containerd/containerd.sock" || cfg.Namespace != "berth" ||
		cfg.StateDir != "/var/lib/berth" || cfg.HTTPAddr != "" {
		t.Fatalf("installed config resolves to %+v", cfg)
	}
}

// TestInstallKeepsConfig: a second make install keeps the admin's config,
// and replaces the one make run wrote (its private containerd does not start
// at boot), keeping it aside.
func TestInstallKeepsConfig(t *testing.T) {
	d := copyOf(t)
	config := filepath.Join(d, "etc/berth/config.yaml")
	mine := "# mine\nnamespace: prod\n"
	os.WriteFile(config, []byte(mine), 0o644)
	reinstall(t, d)
	if got, _ := os.ReadFile(config); string(got) != mine {
		t.Fatalf("make install replaced the admin's config with %q", got)
	}

	marker := runMarker(t)
	fromRun := marker + "\ncontainerd: /var/lib/berth-run/ctd/containerd.sock\n"
	os.WriteFile(config, []byte(fromRun), 0o644)
	reinstall(t, d)
	got, _ := os.ReadFile(config)
	example, _ := os.ReadFile("config.example.yaml")
	if !bytes.Equal(got, example) {
		t.Fatalf("make install kept make run's config: %q", got)
	}
	if saved, _ := os.ReadFile(config + ".make-run"); string(saved) != fromRun {
		t.Fatalf("make run's config was not kept aside: %q", saved)
	}
}

// runMarker returns the first line of the config scripts/run.sh writes, and
// checks that install.sh looks for the same line.
func runMarker(t *testing.T) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^run_marker="(.+)"$`)
	var markers []string
	for _, script := range []string{"../scripts/run.sh", "../scripts/install.sh"} {
		data, err := os.ReadFile(script)
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindSubmatch(data)
		if m == nil {
			t.Fatalf("%s defines no run_marker", script)
		}
		markers = append(markers, string(m[1]))
	}
	if markers[0] != markers[1] {
		t.Fatalf("run.sh writes %q but install.sh looks for %q", markers[0], markers[1])
	}
	return markers[0]
}

// TestUnitVerifies runs systemd-analyze verify on the installed unit, in a
// root that holds what make install laid out plus the host's own units (the
// targets berth.service is ordered against). verify prints problems it
// merely ignores (an unknown key, a bad value) and still exits 0, so any
// output fails the test too.
func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd; make test installs it): berth.service NOT verified")
	}
	d := copyOf(t)
	os.MkdirAll(filepath.Join(d, "usr/lib"), 0o755)
	if out, err := exec.Command("cp", "-a", "/usr/lib/systemd", filepath.Join(d, "usr/lib/")).CombinedOutput(); err != nil {
		t.Fatalf("copy the host's units: %v\n%s", err, out)
	}
	verify := func() (string, error) {
		out, err := exec.Command(analyze, "verify", "--man=false", "--root="+d, "/usr/local/lib/systemd/system/berth.service").CombinedOutput()
		return string(out), err
	}
	if out, err := verify(); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify berth.service: %v\n%s", err, out)
	}

	// The check can fail: a unit whose binary is missing, or with a key
	// systemd does not know, is reported.
	unitPath := filepath.Join(d, "usr/local/lib/systemd/system/berth.service")
	unit, _ := os.ReadFile(unitPath)
	os.WriteFile(unitPath, bytes.Replace(unit, []byte("[Service]\n"), []byte("[Service]\nRestartSecs=2s\n"), 1), 0o644)
	if out, err := verify(); err == nil && !strings.Contains(out, "RestartSecs") {
		t.Fatalf("verify accepted an unknown key: %s", out)
	}
	os.WriteFile(unitPath, unit, 0o644)
	os.Remove(filepath.Join(d, "usr/local/bin/berth"))
	if out, err := verify(); err == nil && !strings.Contains(out, "berth") {
		t.Fatalf("verify accepted a unit whose binary is missing: %s", out)
	}
}
