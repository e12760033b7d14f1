package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"strconv"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// ErrNotAgent means that what listens at a workspace's agent socket is not
// that workspace's agent: the socket was replaced by a symlink or another
// file, or is served by a process other than the workspace's init. The
// directory holding the socket is writable from inside the workspace, so
// this is what a hostile tenant pointing berth at another workspace (or at
// a process of its own) looks like. Retrying does not help; restarting the
// workspace does.
var ErrNotAgent = errors.New("the workspace's agent socket is not served by its agent")

// dialAgent connects to the agent socket at socketPath. It never trusts the
// path: the socket is opened without following any symlink under its
// directory, connected through that handle (so a concurrent swap cannot
// redirect the connect), and, when wantPID is not zero, the listening
// process must be wantPID (the workspace's init as the host sees it),
// checked with SO_PEERCRED before a single byte is sent.
func dialAgent(ctx context.Context, socketPath string, wantPID uint32) (net.Conn, error) {
	if err := wire.CheckSocketPath(socketPath); err != nil {
		return nil, err
	}
	dir, name := filepath.Split(socketPath)
	if dir == "" {
		dir = "."
	}
	// The directory itself belongs to the host (the workspace sees only its
	// contents), so opening it by path is safe; what is inside is not.
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer func() { _ = unix.Close(dfd) }()
	fd, err := unix.Openat2(dfd, name, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		// ENOENT is the normal state before the agent listens: callers
		// that wait for it see fs.ErrNotExist and keep waiting.
		return nil, &fs.PathError{Op: "open", Path: socketPath, Err: err}
	}
	defer func() { _ = unix.Close(fd) }()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: socketPath, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%w: %s is %s, not a socket (something in the workspace replaced it)",
			ErrNotAgent, socketPath, describeFileType(st.Mode))
	}
	// connect(2) on the handle's magic link reaches exactly the inode
	// opened above, whatever the name points at by now.
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", socketPath, err)
	}
	if wantPID == 0 {
		return conn, nil
	}
	pid, err := peerPID(conn)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("dial %s: reading the peer's credentials: %w", socketPath, err)
	}
	if pid != wantPID {
		_ = conn.Close()
		return nil, fmt.Errorf("%w: %s is served by pid %d, not by the workspace's init (pid %d); something in the workspace replaced the socket",
			ErrNotAgent, socketPath, pid, wantPID)
	}
	return conn, nil
}

// peerPID is the pid of the process that made the listening socket conn is
// connected to, in the caller's pid namespace.
func peerPID(conn net.Conn) (uint32, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return 0, fmt.Errorf("not a unix connection: %T", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	if cred.Pid <= 0 {
		return 0, fmt.Errorf("peer pid %d", cred.Pid)
	}
	return uint32(cred.Pid), nil
}

func describeFileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a fifo"
	default:
		return "a special file"
	}
}
