package binary

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestIsStatic(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	os.WriteFile(src, []byte("package main\nfunc main() {}\n"), 0o644)
	build := func(name string, cgo string, extra ...string) string {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", append([]string{"build", "-o", out}, append(extra, src)...)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, b)
		}
		return out
	}
	static := build("static", "0")
	dynamic := build("dynamic", "1", "-linkshared=false", "-ldflags=-linkmode=external")
	if ok, err := IsStatic(static); err != nil || !ok {
		t.Fatalf("static binary: %v %v", ok, err)
	}
	if ok, err := IsStatic(dynamic); err != nil || ok {
		t.Fatalf("dynamic binary: %v %v", ok, err)
	}
	if _, err := IsStatic(src); err == nil {
		t.Fatal("a Go source file is not an executable")
	}
}
