// Command syscalls is a test helper that runs inside a workspace and tries
// what the workspace's hardening must refuse, calling the raw syscalls so the
// answer is the kernel's (and seccomp's), not a missing tool's.
//
//	syscalls probe      one line per probe: "name: ok" or "name: <errno name>"
//	syscalls hog MIB    allocates and touches MIB MiB, printing progress
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: syscalls probe | hog MIB")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "probe":
		probe()
	case "hog":
		mib, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		hog(mib)
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func report(name string, err error) {
	if err == nil {
		fmt.Printf("%s: ok\n", name)
		return
	}
	if errno, ok := err.(unix.Errno); ok {
		fmt.Printf("%s: %s\n", name, unix.ErrnoName(errno))
		return
	}
	fmt.Printf("%s: %v\n", name, err)
}

func probe() {
	fmt.Printf("seccomp: %s\n", seccompMode())
	// A control the profile allows, so a broken helper cannot pass for a
	// refusing kernel.
	_, _, e := unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0)
	report("getpid", errnoOrNil(e))
	// unshare changes the calling thread, so it runs on a locked thread
	// that is never unlocked and dies with its goroutine. (A user namespace
	// cannot be probed from Go: the kernel refuses CLONE_NEWUSER to any
	// multithreaded process; the tests use busybox's unshare -r for it.)
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		_, _, e := unix.RawSyscall(unix.SYS_UNSHARE, unix.CLONE_NEWNS, 0, 0)
		done <- errnoOrNil(e)
	}()
	report("unshare_mount", <-done)
	// KEYCTL_GET_KEYRING_ID of the session keyring, creating it.
	session := int32(unix.KEY_SPEC_SESSION_KEYRING)
	_, _, e = unix.RawSyscall6(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, uintptr(session), 1, 0, 0, 0)
	report("keyctl", errnoOrNil(e))
	// BPF_MAP_CREATE of a tiny array map.
	attr := struct{ mapType, keySize, valueSize, maxEntries, flags uint32 }{unix.BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0}
	fd, _, e := unix.RawSyscall(unix.SYS_BPF, unix.BPF_MAP_CREATE, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if e == 0 {
		unix.Close(int(fd))
	}
	report("bpf", errnoOrNil(e))
	// The workspace's init is berth's agent: even the workspace's root must
	// not be able to trace it or reach its file descriptors.
	ptraced := make(chan error)
	go func() {
		runtime.LockOSThread()
		err := unix.PtraceAttach(1)
		if err == nil {
			// Leave the agent as it was, so a failing check fails alone.
			_, _ = unix.Wait4(1, nil, unix.WALL, nil)
			_ = unix.PtraceDetach(1)
			_ = unix.Kill(1, unix.SIGCONT)
		}
		ptraced <- err
	}()
	report("ptrace_init", <-ptraced)
	_, err := os.Readlink("/proc/1/fd/0")
	report("init_fds", unwrapErrno(err))
	_, err = os.Readlink("/proc/1/root")
	report("init_root", unwrapErrno(err))
}

// unwrapErrno turns an *os.PathError into its errno, for report.
func unwrapErrno(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

func errnoOrNil(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// seccompMode is the Seccomp field of /proc/self/status: 0 off, 2 filter.
func seccompMode() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Seccomp:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "absent"
}

// hog touches mib MiB a MiB at a time, so the memory is really used.
func hog(mib int) {
	var keep [][]byte
	for i := 1; i <= mib; i++ {
		b := make([]byte, 1<<20)
		for j := range b {
			if j%4096 == 0 {
				b[j] = byte(i)
			}
		}
		keep = append(keep, b)
		if i%16 == 0 {
			fmt.Printf("%d MiB\n", i)
		}
	}
	fmt.Printf("allocated %d MiB\n", len(keep))
}
