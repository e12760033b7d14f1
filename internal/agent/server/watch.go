package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// File watches: one inotify instance for the whole agent (the kernel
// allows few instances per user, shared by every workspace of the host),
// with one kernel watch per watched directory, shared by every stream that
// watches an entry of it.
//
// A path is watched as an entry of its directory, not as an inode: tools
// and editors replace files by renaming a new one over them, which an
// inode watch would lose. The directory is opened the way the file tools
// open it (fsParent), checked to be neither berth's nor outside the
// workspace's root, and the kernel watch is placed through that handle
// (/proc/self/fd/N), so a path swapped after the checks cannot redirect it.

// watchMask is what counts as a change of an entry, plus the directory's
// own end.
const watchMask = unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_ATTRIB | unix.IN_CREATE |
	unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// watchMaxRequest bounds a WatchRequest's body.
const watchMaxRequest = wire.MaxWatchPaths*(wire.MaxPathLength+8) + 1024

// watchWriteTimeout bounds one event write to a host that does not read.
const watchWriteTimeout = 30 * time.Second

type watcher struct {
	s *server

	mu    sync.Mutex
	in    *os.File // the inotify instance; nil until the first watch
	dirs  map[int]*watchDir
	count int // registrations over all streams, at most wire.MaxWatches
}

// watchDir is one kernel watch and the entries watched in it.
type watchDir struct {
	wd   int
	regs []*watchReg
}

// watchReg is one path of one stream.
type watchReg struct {
	st   *watchStream
	path string // as resolved, reported in events
	name string // the entry in its directory
	wd   int
}

// watchStream collects the changes one request reports.
type watchStream struct {
	mu    sync.Mutex
	dirty []string // changed since the last event, each once
	lost  []string
	live  int // registrations not lost
	wake  chan struct{}
}

func (st *watchStream) mark(path string, lost bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if lost {
		st.lost = append(st.lost, path)
		st.live--
	} else if !containsString(st.dirty, path) {
		st.dirty = append(st.dirty, path)
	}
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// take returns what changed and what was lost since the last call, and
// whether anything is still watched.
func (st *watchStream) take() (dirty, lost []string, live bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	dirty, lost = st.dirty, st.lost
	st.dirty, st.lost = nil, nil
	return dirty, lost, st.live > 0
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (s *server) routeWatch(mux *http.ServeMux) {
	w := &watcher{s: s, dirs: map[int]*watchDir{}}
	route(mux, wire.PathWatch, map[string]http.HandlerFunc{http.MethodPost: w.handle})
}

func (w *watcher) handle(rw http.ResponseWriter, r *http.Request) {
	var req wire.WatchRequest
	if err := fsDecodeRequest(rw, r, watchMaxRequest, &req); err != nil {
		w.s.fsWriteError(rw, r, err)
		return
	}
	st := &watchStream{wake: make(chan struct{}, 1)}
	regs, err := w.add(st, req.Paths)
	if err != nil {
		w.s.fsWriteError(rw, r, err)
		return
	}
	defer w.remove(regs)

	rc := http.NewResponseController(rw)
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	rw.Header().Set("Content-Type", "application/x-ndjson")
	rw.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		return
	}
	enc := json.NewEncoder(rw)
	enc.SetEscapeHTML(false)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-st.wake:
		}
		dirty, lost, live := st.take()
		var changed []string
		for _, p := range dirty {
			if !containsString(lost, p) {
				changed = append(changed, p)
			}
		}
		for _, ev := range []wire.WatchEvent{{Paths: changed}, {Paths: lost, Lost: true}} {
			if len(ev.Paths) == 0 {
				continue
			}
			_ = rc.SetWriteDeadline(time.Now().Add(watchWriteTimeout))
			if enc.Encode(ev) != nil || rc.Flush() != nil {
				return
			}
		}
		if !live {
			return
		}
		// The rate cap: whatever changes meanwhile waits for the next
		// event, each path once.
		t := time.NewTimer(wire.WatchInterval)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// add watches paths for st, all or none.
func (w *watcher) add(st *watchStream, paths []string) ([]*watchReg, error) {
	if len(paths) == 0 {
		return nil, fsErrorf(wire.CodeInvalid, "no paths to watch")
	}
	if len(paths) > wire.MaxWatchPaths {
		return nil, fsErrorf(wire.CodeLimit, "%d paths in one watch; at most %d", len(paths), wire.MaxWatchPaths)
	}
	// A path's entry, and where a symlink there leads: its target's
	// entry, so that following a link to a file sees the file change.
	type target struct {
		path, name string
		dir        *fsDir
	}
	var targets []target
	defer func() {
		for _, t := range targets {
			t.dir.Close()
		}
	}()
	for _, raw := range paths {
		p, err := w.s.fsPath(raw)
		if err != nil {
			return nil, err
		}
		d, name, err := w.entry(p)
		if err != nil {
			return nil, err
		}
		targets = append(targets, target{p, name, d})
		if st, err := d.lstat(name); err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			// Best effort: a link to nothing, or to what cannot be
			// watched, is watched as the link only.
			if real, ok := fsLinkTarget(p); ok && real != p {
				if td, tname, err := w.entry(real); err == nil {
					targets = append(targets, target{p, tname, td})
				}
			}
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.count+len(targets) > wire.MaxWatches {
		return nil, fsErrorf(wire.CodeLimit, "the workspace holds %d watches already; at most %d at once", w.count, wire.MaxWatches)
	}
	if err := w.start(); err != nil {
		return nil, err
	}
	var regs []*watchReg
	for _, t := range targets {
		wd, err := fsEINTR(func() (int, error) {
			return unix.InotifyAddWatch(int(w.in.Fd()), "/proc/self/fd/"+strconv.Itoa(t.dir.fd), watchMask)
		})
		if err != nil {
			w.removeLocked(regs)
			if errors.Is(err, unix.ENOSPC) {
				return nil, fsErrorf(wire.CodeLimit, "the host allows no more file watches (fs.inotify.max_user_watches)")
			}
			return nil, fsClassify(&fs.PathError{Op: "watch", Path: t.path, Err: err})
		}
		dir := w.dirs[wd]
		if dir == nil {
			dir = &watchDir{wd: wd}
			w.dirs[wd] = dir
		}
		reg := &watchReg{st: st, path: t.path, name: t.name, wd: wd}
		dir.regs = append(dir.regs, reg)
		regs = append(regs, reg)
		w.count++
	}
	st.mu.Lock()
	st.live = len(regs)
	st.mu.Unlock()
	return regs, nil
}

// entry opens the directory of p's final component for watching it, after
// the checks.
func (w *watcher) entry(p string) (*fsDir, string, error) {
	if p == "/" {
		return nil, "", fsErrorf(wire.CodeInvalid, "/ cannot be watched; watch the files you need")
	}
	d, name, err := fsParent(p)
	if err != nil {
		return nil, "", err
	}
	if err := w.s.fsCheckDir(d, p, "watch"); err != nil {
		d.Close()
		return nil, "", err
	}
	if err := watchable(d, p); err != nil {
		d.Close()
		return nil, "", err
	}
	return d, name, nil
}

// fsLinkTarget is where p leads once every symlink is followed, when that
// is an existing file or directory.
func fsLinkTarget(p string) (string, bool) {
	fd, err := fsEINTR(func() (int, error) { return unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0) })
	if err != nil {
		return "", false
	}
	defer func() { _ = unix.Close(fd) }()
	real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || !wire.ValidPath(real) {
		return "", false
	}
	return real, true
}

// watchable refuses directories whose changes inotify does not report
// (the kernel's virtual file systems, where magic links also lead
// anywhere) and any directory that is not below the workspace's root.
func watchable(d *fsDir, p string) error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(d.fd, &sfs); err != nil {
		return err
	}
	switch sfs.Type {
	case unix.PROC_SUPER_MAGIC, unix.SYSFS_MAGIC, unix.CGROUP_SUPER_MAGIC, unix.CGROUP2_SUPER_MAGIC:
		return fsErrorf(wire.CodeInvalid, "%s is on a kernel file system (proc, sys, cgroup), whose changes cannot be watched", p)
	}
	beneath, err := fsBeneathRoot(d)
	if err != nil {
		return err
	}
	if !beneath {
		return fsErrorf(wire.CodePermission, "refusing to watch %s: its directory is outside the workspace", p)
	}
	return nil
}

// fsBeneathRoot reports whether d is the process's root directory or below
// it. Going up through "..", a directory below the root reaches it; one
// reached through a magic link to another mount namespace or a directory
// opened before a chroot reaches some other top instead.
func fsBeneathRoot(d *fsDir) (bool, error) {
	var root unix.Stat_t
	if err := unix.Stat("/", &root); err != nil {
		return false, err
	}
	rootID := fsIDOf(&root)
	return fsWalkUp(d.fd, func(id fsID) bool { return id == rootID })
}

// start opens the inotify instance and its reader on first use.
func (w *watcher) start() error {
	if w.in != nil {
		return nil
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.EMFILE) {
			return fsErrorf(wire.CodeLimit, "the host allows no more inotify instances (fs.inotify.max_user_instances)")
		}
		return fmt.Errorf("inotify: %w", err)
	}
	// Non-blocking, so reads park in the Go poller instead of a thread.
	w.in = os.NewFile(uintptr(fd), "inotify")
	go w.read(w.in)
	return nil
}

func (w *watcher) remove(regs []*watchReg) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removeLocked(regs)
}

func (w *watcher) removeLocked(regs []*watchReg) {
	for _, reg := range regs {
		dir := w.dirs[reg.wd]
		if dir == nil {
			// Its directory's watch ended already (watchDir.end).
			continue
		}
		for i, r := range dir.regs {
			if r == reg {
				dir.regs = append(dir.regs[:i], dir.regs[i+1:]...)
				w.count--
				break
			}
		}
		if len(dir.regs) == 0 {
			delete(w.dirs, reg.wd)
			_, _ = unix.InotifyRmWatch(int(w.in.Fd()), uint32(reg.wd))
		}
	}
}

// read delivers the kernel's events for as long as the agent runs.
func (w *watcher) read(in *os.File) {
	buf := make([]byte, 64<<10)
	for {
		n, err := in.Read(buf)
		if err != nil {
			if !errors.Is(err, unix.EINTR) {
				w.s.log.Warn("file watches stopped", "err", err)
				return
			}
			continue
		}
		w.dispatch(buf[:n])
	}
}

// dispatch marks the streams concerned by a buffer of inotify events.
func (w *watcher) dispatch(buf []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(buf) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(buf) {
			return
		}
		name := string(trimNUL(buf[unix.SizeofInotifyEvent:end]))
		buf = buf[end:]
		switch {
		case ev.Mask&unix.IN_Q_OVERFLOW != 0:
			// Events were lost: every watched path may have changed.
			for _, dir := range w.dirs {
				for _, reg := range dir.regs {
					reg.st.mark(reg.path, false)
				}
			}
		case ev.Mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT) != 0:
			// The directory is gone or no longer where its paths say:
			// its entries are lost.
			if dir := w.dirs[int(ev.Wd)]; dir != nil {
				delete(w.dirs, dir.wd)
				if ev.Mask&unix.IN_IGNORED == 0 {
					_, _ = unix.InotifyRmWatch(int(w.in.Fd()), uint32(dir.wd))
				}
				for _, reg := range dir.regs {
					w.count--
					reg.st.mark(reg.path, true)
				}
			}
		default:
			if dir := w.dirs[int(ev.Wd)]; dir != nil {
				for _, reg := range dir.regs {
					if reg.name == name {
						reg.st.mark(reg.path, false)
					}
				}
			}
		}
	}
}

// trimNUL cuts an inotify name at its padding.
func trimNUL(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}
