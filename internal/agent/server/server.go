package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// Options configures Run.
type Options struct {
	// SocketPath is where the agent listens; in a workspace it is
	// filepath.Join(ContainerDir, SocketName).
	SocketPath string
	// BerthVersion is reported by /v1/health so the host can name the berth
	// build that started a workspace.
	BerthVersion string
	// Logger receives the agent's logs; nil means text logs on stderr.
	Logger *slog.Logger
	// Subreaper makes a process that is not PID 1 adopt orphaned
	// descendants (prctl PR_SET_CHILD_SUBREAPER), so the agent can run as an
	// ordinary process in tests. PID 1 reaps orphans anyway.
	Subreaper bool
	// User runs the workspace's commands, terminals and file operations
	// (owner of files created) as the image's user; nil means root.
	User *Credential
	// DataDir is where a bot keeps its work: the default working directory
	// and the base of relative paths. Empty means DefaultDataDir.
	DataDir string
}

// Credential is a numeric user, as the image's User resolves to.
type Credential struct {
	UID, GID uint32
	Groups   []uint32
}

// forwardedSignals reach every process in the container. They are the
// signals people and runtimes send to "the container" and expect the
// workload to see; SIGTERM and SIGINT also stop the agent.
var forwardedSignals = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH,
}

const (
	// httpShutdownGrace lets in-flight requests finish when the agent stops.
	httpShutdownGrace = 2 * time.Second
	// drainPoll bounds how long the agent takes to notice that the last
	// process is gone while it waits to exit.
	drainPoll = 50 * time.Millisecond
)

type server struct {
	opts      Options
	log       *slog.Logger
	pid       int
	isInit    bool
	startedAt time.Time
	procRoot  string
	reaper    *reaper
	// fsProt is berth's own directories, for the file operations (fs_dir.go).
	fsProt *fsProtect
}

// Run is the agent's main loop: it listens on opts.SocketPath, reaps every
// child and orphan, and forwards signals to the container's processes.
//
// It returns nil after SIGTERM or SIGINT, once every other process in the
// container is gone (or ctx is done first), and when ctx is done. It returns
// an error if it cannot start or if the socket stops working.
//
// ctx should not be tied to SIGTERM/SIGINT (for example through
// signal.NotifyContext): Run handles those itself and would otherwise race
// the cancellation and return without waiting for the workload to exit.
func Run(ctx context.Context, opts Options) error {
	s, err := newServer(opts)
	if err != nil {
		return err
	}
	return s.run(ctx)
}

func newServer(opts Options) (*server, error) {
	if opts.SocketPath == "" {
		return nil, errors.New("agent: no socket path")
	}
	if err := wire.CheckSocketPath(opts.SocketPath); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	log = log.With("component", "agent")
	pid := os.Getpid()
	return &server{
		opts:      opts,
		log:       log,
		pid:       pid,
		isInit:    pid == 1,
		startedAt: time.Now().UTC(),
		procRoot:  "/proc",
		reaper:    newReaper(log),
	}, nil
}

func (s *server) run(ctx context.Context) error {
	// Watch signals before anything else: the Go runtime's default action
	// for an unwatched SIGTERM is to exit, which as PID 1 would tear the
	// whole container down without giving the workload its grace period.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)
	// Watching SIGPIPE makes a write to a closed stderr pipe (the log FIFO
	// of a restarted shim, say) fail with EPIPE instead of killing init.
	// Notify, unlike signal.Ignore, is not inherited across exec, so the
	// workload still gets the default SIGPIPE behaviour.
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, unix.SIGPIPE)
	defer signal.Stop(sigpipe)

	if s.isInit {
		reserveThreads(agentThreads)
		// The workspace's own root runs as the same user as the agent:
		// without this it could ptrace the agent or open its descriptors
		// (/proc/1/fd), and speak as the agent to berth. Non-dumpable, only
		// CAP_SYS_PTRACE (which workspaces do not have) reaches it. The
		// commands the agent runs are dumpable again once they exec.
		if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
			return fmt.Errorf("agent: make init non-dumpable: %w", err)
		}
	}
	if !s.isInit {
		if s.opts.Subreaper {
			restore, err := becomeSubreaper()
			if err != nil {
				return fmt.Errorf("agent: become child subreaper: %w", err)
			}
			defer restore()
		} else {
			s.log.Warn("not PID 1 and not a subreaper: orphans will not be reaped by the agent")
		}
	}

	reaperCtx, stopReaper := context.WithCancel(context.Background())
	reaperDone := make(chan struct{})
	go func() {
		defer close(reaperDone)
		s.reaper.run(reaperCtx)
	}()
	defer func() {
		stopReaper()
		<-reaperDone
	}()

	if s.isInit {
		if err := (&runner{s: s, log: s.log}).prepareDataDir(); err != nil {
			s.log.Warn("the data directory could not be given to the workspace's user", "err", err)
		}
	}

	ln, err := listenUnix(s.opts.SocketPath)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer s.removeSocket()

	srv := &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	stopHTTP := func() {
		sctx, cancel := context.WithTimeout(context.Background(), httpShutdownGrace)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = srv.Close()
		<-serveErr
	}
	s.log.Info("agent listening", "socket", s.opts.SocketPath, "pid", s.pid, "init", s.isInit,
		"berth_version", s.opts.BerthVersion, "protocol", wire.ProtocolVersion)

	for {
		select {
		case <-ctx.Done():
			s.log.Info("agent stopping: context done")
			stopHTTP()
			return nil
		case err := <-serveErr:
			// Serve only returns on its own when the listener breaks; the host
			// can no longer reach this workspace, so give up loudly.
			return fmt.Errorf("agent: serving %s: %w", s.opts.SocketPath, err)
		case sig := <-sigs:
			s.forward(sig)
			if sig == unix.SIGTERM || sig == unix.SIGINT {
				s.log.Info("agent stopping", "signal", sig.String())
				stopHTTP()
				s.drain(ctx, sigs)
				return nil
			}
		}
	}
}

// drain waits until no process is left below the agent, forwarding any
// further signals meanwhile. As init it also waits for processes that are
// not its descendants (joined with runc exec): the container's end would
// SIGKILL them, cutting short the grace period their SIGTERM promised. The
// host bounds this with its grace period and SIGKILL; ctx bounds it for
// callers that want to stop sooner.
func (s *server) drain(ctx context.Context, sigs <-chan os.Signal) {
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	logged := false
	for {
		if s.reaper.reapAll() && (!s.isInit || s.countChildren() <= 0) {
			s.log.Info("agent stopped: no processes left")
			return
		}
		if !logged {
			s.log.Info("waiting for processes to exit", "count", s.countChildren())
			logged = true
		}
		select {
		case <-ctx.Done():
			s.log.Warn("agent stopping with processes still running", "count", s.countChildren())
			return
		case sig := <-sigs:
			s.forward(sig)
		case <-tick.C:
		}
	}
}

// forward passes sig on to the workload. As init, kill(-1) reaches every
// process in the container's PID namespace except the agent itself, including
// ones the agent did not start. Outside a namespace (tests) kill(-1) would
// hit the whole host, so the agent signals its own descendants one by one;
// a process forked during that walk can be missed, which is fine for tests.
func (s *server) forward(sig os.Signal) {
	ssig, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	s.log.Info("forwarding signal", "signal", ssig.String())
	if s.isInit {
		if err := unix.Kill(-1, ssig); err != nil && err != unix.ESRCH {
			s.log.Warn("forwarding signal failed", "signal", ssig.String(), "err", err)
		}
		return
	}
	procs, err := readProcs(s.procRoot)
	if err != nil {
		s.log.Warn("forwarding signal: cannot list processes", "err", err)
		return
	}
	for _, pid := range liveDescendants(procs, s.pid) {
		if err := unix.Kill(pid, ssig); err != nil && err != unix.ESRCH {
			s.log.Warn("forwarding signal failed", "signal", ssig.String(), "pid", pid, "err", err)
		}
	}
}

// countChildren counts live processes other than the agent, or returns -1 if
// /proc cannot be read.
func (s *server) countChildren() int {
	procs, err := readProcs(s.procRoot)
	if err != nil {
		return -1
	}
	if !s.isInit {
		return len(liveDescendants(procs, s.pid))
	}
	n := 0
	for _, p := range procs {
		if p.pid != s.pid && p.live() {
			n++
		}
	}
	return n
}

func (s *server) removeSocket() {
	if err := os.Remove(s.opts.SocketPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("removing socket", "socket", s.opts.SocketPath, "err", err)
	}
}

// becomeSubreaper marks the process as a child subreaper and returns a
// function that undoes it, so a test process does not keep adopting orphans
// after the agent inside it has stopped reaping.
func becomeSubreaper() (restore func(), err error) {
	// Heap-allocated so the kernel writes to memory that cannot move while
	// the system call runs.
	was := new(int32)
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(was)), 0, 0, 0); err != nil {
		return nil, err
	}
	if *was != 0 {
		return func() {}, nil
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, err
	}
	return func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) }, nil
}

// listenUnix listens on path with mode 0600, replacing a socket left behind
// by an agent that died, but never a live agent's socket or a non-socket.
func listenUnix(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Run removes the socket itself, after the workload is gone.
	ln.SetUnlinkOnClose(false)
	// Between bind and chmod the socket has the umask's mode; the runtime's
	// default umask (022) already denies connecting to group and others, and
	// the host directory is private, so the window grants nothing.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		_ = os.Remove(path)
		return nil, err
	}
	return ln, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; not replacing it", path)
	}
	if conn, err := net.DialTimeout("unix", path, 500*time.Millisecond); err == nil {
		_ = conn.Close()
		return fmt.Errorf("another process is already listening on %s", path)
	}
	return os.Remove(path)
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	route(mux, wire.PathHealth, map[string]http.HandlerFunc{http.MethodGet: s.handleHealth})
	s.routeProcesses(mux)
	s.routeFiles(mux)
	s.routeArchives(mux)
	s.routeTunnels(mux)
	s.routeWatch(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, wire.CodeNotFound, "no such endpoint: "+r.URL.Path)
	})
	version := strconv.Itoa(wire.ProtocolVersion)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(wire.ProtocolHeader, version)
		mux.ServeHTTP(w, r)
	})
}

// route registers handlers per method plus a method-less fallback, so a
// wrong method gets a JSON 405 like every other error instead of the mux's
// plain-text one.
func route(mux *http.ServeMux, path string, byMethod map[string]http.HandlerFunc) {
	allow := make([]string, 0, len(byMethod))
	for method, h := range byMethod {
		mux.HandleFunc(method+" "+path, h)
		allow = append(allow, method)
		if method == http.MethodGet {
			allow = append(allow, http.MethodHead)
		}
	}
	allowed := strings.Join(allow, ", ")
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allowed)
		writeError(w, http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed,
			fmt.Sprintf("method %s not allowed on %s", r.Method, path))
	})
}

func (s *server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, wire.Health{
		ProtocolVersion: wire.ProtocolVersion,
		BerthVersion:    s.opts.BerthVersion,
		PID:             s.pid,
		StartedAt:       s.startedAt,
		Reaped:          s.reaper.reaped.Load(),
		Children:        s.countChildren(),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, "encoding response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(wire.ErrorResponse{Error: msg, Code: code})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
