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
	// The host's own /etc/berth/config.yaml (left by make run or make
	// install) must not leak into these tests: the default file they see is
	// one that does not exist.
	cfg.ConfigFile = filepath.Join(t.TempDir(), "absent.yaml")
	return resolveWith(t, cfg, args)
}

// unsetConfigEnv removes BERTH_CONFIG for the test (the test scripts set
// it empty so that a host's config file never leaks into tests; an empty
// value means "no file", which is not what a default-file test wants).
func unsetConfigEnv(t *testing.T) {
	t.Helper()
	t.Setenv("BERTH_CONFIG", "") // restores the value after the test
	os.Unsetenv("BERTH_CONFIG")
}

func resolveWith(t *testing.T, cfg Config, args []string) (Config, error) {
	t.Helper()
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

// TestDefaultFile: the default config file is read without --config, so a
// plain `berth serve --stdio` finds what make run or make install set up;
// flags and the environment still win over it; an absent default file means
// the built-in defaults, and an empty --config reads no file.
func TestDefaultFile(t *testing.T) {
	unsetConfigEnv(t)
	if Defaults().ConfigFile != "/etc/berth/config.yaml" {
		t.Fatalf("default config file is %q; README, scripts/run.sh and scripts/install.sh say /etc/berth/config.yaml", Defaults().ConfigFile)
	}
	file := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(file, []byte("containerd: /var/lib/berth-run/ctd/containerd.sock\nstate-dir: /var/lib/berth-run/state\nnamespace: from-file\n"), 0o644)
	withDefault := Defaults()
	withDefault.ConfigFile = file

	cfg, err := resolveWith(t, withDefault, []string{"--stdio"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ContainerdAddress != "/var/lib/berth-run/ctd/containerd.sock" || cfg.StateDir != "/var/lib/berth-run/state" ||
		cfg.Namespace != "from-file" || cfg.ConfigFile != file {
		t.Fatalf("default file not read: %+v", cfg)
	}

	t.Setenv("BERTH_NAMESPACE", "from-env")
	cfg, err = resolveWith(t, withDefault, []string{"--stdio", "--state-dir", "/flag/state"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/flag/state" || cfg.Namespace != "from-env" || cfg.ContainerdAddress != "/var/lib/berth-run/ctd/containerd.sock" {
		t.Fatalf("flag and environment must win over the default file: %+v", cfg)
	}

	// --config '' and BERTH_CONFIG= turn the default file off.
	cfg, err = resolveWith(t, withDefault, []string{"--config", ""})
	if err != nil || cfg.ContainerdAddress != Defaults().ContainerdAddress || cfg.ConfigFile != "" {
		t.Fatalf("--config '' still read %q: %+v, %v", file, cfg, err)
	}
	t.Setenv("BERTH_CONFIG", "")
	cfg, err = resolveWith(t, withDefault, nil)
	if err != nil || cfg.ContainerdAddress != Defaults().ContainerdAddress {
		t.Fatalf("BERTH_CONFIG= still read %q: %+v, %v", file, cfg, err)
	}
}

// TestMissingConfigFile: only the default file may be absent. A file named
// by --config or BERTH_CONFIG that is not there is an error, because
// ignoring it would silently run on other settings than the ones meant.
func TestMissingConfigFile(t *testing.T) {
	absent := filepath.Join(t.TempDir(), "absent.yaml")
	withDefault := Defaults()
	withDefault.ConfigFile = absent
	cfg, err := resolveWith(t, withDefault, nil)
	if err != nil || cfg.ConfigFile != "" || cfg.StateDir != Defaults().StateDir {
		t.Fatalf("absent default file: %+v, %v", cfg, err)
	}
	if _, err := resolve(t, []string{"--config", absent}); err == nil || !strings.Contains(err.Error(), absent) {
		t.Fatalf("--config of a missing file: %v", err)
	}
	t.Setenv("BERTH_CONFIG", absent)
	if _, err := resolve(t, nil); err == nil || !strings.Contains(err.Error(), absent) {
		t.Fatalf("BERTH_CONFIG of a missing file: %v", err)
	}
}

// TestServeKeysInSharedFile: the one config file holds serve's settings too
// (tokens-file, allowed-origins), and `berth doctor` or `berth image`, which
// do not have those flags, still read it.
func TestServeKeysInSharedFile(t *testing.T) {
	unsetConfigEnv(t)
	file := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(file, []byte("namespace: shared\ntokens-file: /etc/berth/tokens.yaml\nallowed-origins: [https://a.example]\n"), 0o644)
	cfg := Defaults()
	cfg.ConfigFile = file
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	Register(fs, &cfg, false)
	if err := Resolve(fs, nil); err != nil {
		t.Fatalf("a non-serve command refused serve's keys: %v", err)
	}
	if cfg.Namespace != "shared" || cfg.TokensFile != "" {
		t.Fatalf("doctor's settings: %+v", cfg)
	}
	os.WriteFile(file, []byte("tokens-flie: /etc/berth/tokens.yaml\n"), 0o644)
	fs = flag.NewFlagSet("doctor", flag.ContinueOnError)
	Register(fs, &cfg, false)
	if err := Resolve(fs, nil); err == nil || !strings.Contains(err.Error(), "tokens-flie") {
		t.Fatalf("typo in a shared file: %v", err)
	}
}
