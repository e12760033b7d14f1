package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrintToken: `berth token` finds the token through the config file, as
// the README's client setup relies on, and names the path it looked at when
// there is none instead of making one up.
func TestPrintToken(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	config := filepath.Join(dir, "config.yaml")
	os.WriteFile(config, []byte("state-dir: "+state+"\n"), 0o644)

	var out, errOut bytes.Buffer
	if rc := run([]string{"token", "--config", config}, &out, &errOut); rc == 0 || !strings.Contains(errOut.String(), filepath.Join(state, "token")) ||
		!strings.Contains(errOut.String(), config) {
		t.Fatalf("no token file: rc %d, %q", rc, errOut.String())
	}
	if _, err := os.Stat(filepath.Join(state, "token")); !os.IsNotExist(err) {
		t.Fatalf("berth token created a token file: %v", err)
	}

	os.MkdirAll(state, 0o700)
	os.WriteFile(filepath.Join(state, "token"), []byte("0123456789abcdef0123\n"), 0o600)
	out.Reset()
	errOut.Reset()
	if rc := run([]string{"token", "--config", config}, &out, &errOut); rc != 0 || out.String() != "0123456789abcdef0123\n" {
		t.Fatalf("token from the state dir in the config file: rc %d, %q, %q", rc, out.String(), errOut.String())
	}
}
