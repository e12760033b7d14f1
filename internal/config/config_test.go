package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func resolve(t *testing.T, args []string) (Config, error) {
	t.Helper()
	cfg := Defaults()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	Register(fs, &cfg, true)
	err := Resolve(fs, args)
	return cfg, err
}

// TestPrecedence: flag over environment over file over default.
func TestPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "berth.yaml")
	os.WriteFile(file, []byte("namespace: from-file\nsnapshotter: native\nstop-grace: 3s\ncdi-spec-dirs: [/a, /b]\nno-auth: true\n"), 0o644)
	t.Setenv("BERTH_CONFIG", file)
	t.Setenv("BERTH_SNAPSHOTTER", "from-env")
	t.Setenv("BERTH_STATE_DIR", "/env/state")
	cfg, err := resolve(t, []string{"--state-dir", "/flag/state"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/flag/state" || cfg.Snapshotter != "from-env" || cfg.Namespace != "from-file" ||
		cfg.StopGrace != 3*time.Second || strings.Join(cfg.CDISpecDirs, ",") != "/a,/b" || !cfg.NoAuth {
		t.Fatalf("precedence wrong: %+v", cfg)
	}
	if cfg.ContainerdAddress != "/run/containerd/containerd.sock" {
		t.Fatalf("default lost: %q", cfg.ContainerdAddress)
	}
}

func TestConfigFileErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "berth.yaml")
	os.WriteFile(file, []byte("namespcae: typo\n"), 0o644)
	if _, err := resolve(t, []string{"--config", file}); err == nil || !strings.Contains(err.Error(), `unknown key "namespcae"`) {
		t.Fatalf("typo in config file: %v", err)
	}
	os.WriteFile(file, []byte("stop-grace: soon\n"), 0o644)
	if _, err := resolve(t, []string{"--config", file}); err == nil || !strings.Contains(err.Error(), "stop-grace") {
		t.Fatalf("bad value: %v", err)
	}
	t.Setenv("BERTH_AGENT_TIMEOUT", "never")
	if _, err := resolve(t, nil); err == nil || !strings.Contains(err.Error(), "BERTH_AGENT_TIMEOUT") {
		t.Fatalf("bad env value should name the variable: %v", err)
	}
}

func TestValidate(t *testing.T) {
	cfg := Defaults()
	cfg.StateDir = "relative"
	if err := cfg.Validate(); err == nil {
		t.Fatal("relative state dir accepted")
	}
	cfg = Defaults()
	cfg.LogLevel = "loud"
	if err := cfg.Validate(); err == nil {
		t.Fatal("bad log level accepted")
	}
}

func TestUsageNamesEveryEnvVar(t *testing.T) {
	cfg := Defaults()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	Register(fs, &cfg, true)
	u := Usage(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(u, "--"+f.Name) || !strings.Contains(u, EnvName(f.Name)) {
			t.Errorf("usage lacks %s / %s", f.Name, EnvName(f.Name))
		}
	})
}
