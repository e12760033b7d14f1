// Package binary answers questions about executables on the host. It
// exists so that the agent binary berth mounts into workspaces and the
// busybox it packs into test images are checked the same way.
package binary

import (
	"debug/elf"
	"fmt"
)

// IsStatic reports whether the ELF executable at path is statically linked,
// i.e. runs in any root filesystem without a dynamic loader or libc.
func IsStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}
