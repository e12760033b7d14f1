package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// errReaperStopped is returned for children that can no longer be waited for
// because the agent is shutting down.
var errReaperStopped = errors.New("agent reaper stopped")

// reaperSweep is a safety net for the SIGCHLD wakeups. They cannot be lost
// with the loop below, but if anything in the process ever resets the SIGCHLD
// disposition, orphans would pile up silently; a slow sweep bounds that.
const reaperSweep = 2 * time.Second

// reaper waits for every child of the agent: the processes it starts and the
// orphans the kernel reparents to it as init (or as a child subreaper).
//
// Waiting for "any child" (wait4(-1)) is the only way to collect orphans, and
// it steals the exit status from anyone else waiting for a particular child,
// so exec.Cmd.Wait and os.Process.Wait cannot be used in the agent. Children
// that someone cares about are started through start/startCmd instead, which
// register the pid; the reaper hands their status over and discards the rest.
type reaper struct {
	log *slog.Logger

	// mu is held both around starting and registering a child and around
	// each wait4 together with the lookup of its result. That ordering closes
	// two races: a child that exits before it is registered is not reaped
	// until the registration is in place, and a pid cannot be reaped and
	// reused by a new child between wait4 and the lookup. It also keeps wait4
	// away from the brief window in which the Go runtime itself waits for a
	// child whose exec failed.
	mu      sync.Mutex
	waiting map[int]*child
	stopped bool

	stopCh chan struct{}
	reaped atomic.Uint64
}

func newReaper(log *slog.Logger) *reaper {
	return &reaper{log: log, waiting: make(map[int]*child), stopCh: make(chan struct{})}
}

// child is a process started through the reaper.
type child struct {
	pid  int
	r    *reaper
	done chan struct{} // closed once status is set
	// status is written once, under r.mu, before done is closed.
	status unix.WaitStatus
}

// Pid returns the child's process id.
func (c *child) Pid() int { return c.pid }

// Done is closed once the child has exited and its status is available.
func (c *child) Done() <-chan struct{} { return c.done }

// Wait blocks until the child exits, ctx is done, or the reaper stops.
func (c *child) Wait(ctx context.Context) (unix.WaitStatus, error) {
	select {
	case <-c.done:
		return c.status, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-c.r.stopCh:
		// The reaper's last sweep may have delivered the status just before
		// stopping; prefer that over the error.
		select {
		case <-c.done:
			return c.status, nil
		default:
			return 0, errReaperStopped
		}
	}
}

// Signal sends sig to the child unless it has already been reaped. Holding
// the reaper's lock guarantees the pid still names our child (a zombie keeps
// its pid until reaped), so the signal cannot hit an unrelated process that
// reused the pid.
func (c *child) Signal(sig unix.Signal) error {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	select {
	case <-c.done:
		return os.ErrProcessDone
	default:
	}
	return unix.Kill(c.pid, sig)
}

// start runs fn, which must start exactly one child process and return its
// pid, and registers that pid for its exit status. fn runs with the reaper's
// lock held, so it must not block on anything but starting the process.
func (r *reaper) start(fn func() (pid int, err error)) (*child, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil, errReaperStopped
	}
	pid, err := fn()
	if err != nil {
		return nil, err
	}
	if pid <= 0 {
		return nil, fmt.Errorf("start returned invalid pid %d", pid)
	}
	c := &child{pid: pid, r: r, done: make(chan struct{})}
	r.waiting[pid] = c
	return c, nil
}

// startCmd starts cmd through the reaper. The caller must never call
// cmd.Wait or cmd.Process.Wait; the returned child reports the exit instead.
//
// exec.Cmd only finishes its own bookkeeping in Wait: it copies non-file
// stdio in goroutines and closes pipe ends there, and CommandContext watches
// the context until then. Such commands would leak goroutines and
// descriptors here, so they are refused: pass *os.File (for example the ends
// of an os.Pipe) for stdio and cancel through child.Signal.
func (r *reaper) startCmd(cmd *exec.Cmd) (*child, error) {
	if cmd.Stdin != nil {
		if _, ok := cmd.Stdin.(*os.File); !ok {
			return nil, errors.New("reaper: cmd.Stdin must be nil or an *os.File")
		}
	}
	if cmd.Stdout != nil {
		if _, ok := cmd.Stdout.(*os.File); !ok {
			return nil, errors.New("reaper: cmd.Stdout must be nil or an *os.File")
		}
	}
	if cmd.Stderr != nil {
		if _, ok := cmd.Stderr.(*os.File); !ok {
			return nil, errors.New("reaper: cmd.Stderr must be nil or an *os.File")
		}
	}
	if cmd.Cancel != nil {
		return nil, errors.New("reaper: commands from exec.CommandContext are not supported; use child.Signal")
	}
	return r.start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
}

// reapAll waits for every child that has exited, without blocking. It
// reports whether the agent has no children left at all (ECHILD), which, for
// init or a subreaper, means no descendants are left: a dying process's
// children are reparented to us before it becomes a zombie.
func (r *reaper) reapAll() (none bool) {
	for {
		r.mu.Lock()
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			r.mu.Unlock()
			continue
		}
		if err != nil || pid <= 0 {
			r.mu.Unlock()
			if err == unix.ECHILD {
				return true
			}
			if err != nil {
				r.log.Error("wait4 failed", "err", err)
			}
			return false
		}
		r.reaped.Add(1)
		c := r.waiting[pid]
		if c != nil {
			delete(r.waiting, pid)
			c.status = ws
			close(c.done)
		}
		r.mu.Unlock()
		r.log.Debug("reaped", "pid", pid, "status", describeStatus(ws), "registered", c != nil)
	}
}

// run reaps on every SIGCHLD until ctx is done, then makes a last sweep and
// marks the reaper stopped so that waiters do not hang.
func (r *reaper) run(ctx context.Context) {
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	defer signal.Stop(sigchld)
	sweep := time.NewTicker(reaperSweep)
	defer sweep.Stop()

	// Children may have exited before SIGCHLD was being watched.
	r.reapAll()
	for {
		select {
		case <-ctx.Done():
			r.reapAll()
			r.mu.Lock()
			r.stopped = true
			close(r.stopCh)
			r.mu.Unlock()
			return
		case <-sigchld:
		case <-sweep.C:
		}
		r.reapAll()
	}
}

func describeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by %v", ws.Signal())
	default:
		return fmt.Sprintf("status %#x", uint32(ws))
	}
}
