// Command swapper plays the attacker of the race tests: run inside a
// workspace as its (non-root) user, it swaps two paths (a directory and a
// symlink to berth's socket directory) with renameat2(RENAME_EXCHANGE) as
// fast as it can, so that a file operation that checks a path and then
// uses it again finds the other one the second time. It reports how many
// swaps it made on stdout, every 100000 and when it ends.
//
// Usage: swapper A B
package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: swapper A B")
		os.Exit(2)
	}
	a, b := os.Args[1], os.Args[2]
	var n atomic.Int64
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		fmt.Printf("swaps %d, stopped\n", n.Load())
		os.Exit(0)
	}()
	for {
		if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
			fmt.Fprintf(os.Stderr, "swapper: exchanging %s and %s: %v\n", a, b, err)
			os.Exit(1)
		}
		if v := n.Add(1); v%100000 == 0 {
			fmt.Printf("swaps %d\n", v)
		}
	}
}
