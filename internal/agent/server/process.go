package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/agent/wire"
	"golang.org/x/sys/unix"
)

// Commands, background processes, terminals and stdio processes: the
// endpoints in exec*.go, terminal*.go and stdio*.go share what is here,
// which is how a request becomes a process (validation, working directory,
// environment, user) and how that process is stopped.

// CodeTimeout says the agent gave up waiting on the workspace: a terminal
// that does not read its input, say. Retrying later may work.
const CodeTimeout = "timeout"

// The other codes these endpoints use are shared with the file endpoints:
// CodeConflict (the object is in the wrong state: a running process cannot
// be forgotten, an exited terminal takes no input), CodeLimit (too many
// running processes or terminals) and CodeTooLarge (request body too big).

const (
	// maxJSONRequest caps request bodies other than exec's.
	maxJSONRequest = 1 << 20
	// maxPathLen bounds a working directory or a shell path (PATH_MAX).
	maxPathLen = 4096
	// maxEnvName is generous for any real variable name.
	maxEnvName = 256
	// killGrace is how long a process group gets between SIGTERM and
	// SIGKILL when the agent stops it (timeout, cancellation, hangup).
	killGrace = 200 * time.Millisecond
	// ioGrace is how long the agent waits, after a command exits, for its
	// output pipes to reach end of file. Longer only when something the
	// command left running in the background still holds them.
	ioGrace = 500 * time.Millisecond
	// defaultPath is what commands get when the agent's environment has no
	// PATH (Docker's default).
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// routeProcesses registers exec, background process and terminal endpoints.
// The tables live in the handlers' closures rather than on the server, so
// the state of this part of the agent stays in these files.
func (s *server) routeProcesses(mux *http.ServeMux) {
	rn := &runner{s: s, log: s.log}
	rn.routeExec(mux)
	newProcTable(rn).route(mux)
	newTermTable(rn).route(mux)
	newStdioTable(rn).route(mux)
}

// runner turns requests into processes. It holds nothing but the server's
// settings, so one value serves exec, processes and terminals.
type runner struct {
	s   *server
	log *slog.Logger
}

func (rn *runner) user() *Credential { return rn.s.opts.User }

// dataDir is the bot's work directory, absolute and clean.
func (rn *runner) dataDir() string {
	d := rn.s.opts.DataDir
	if d == "" {
		d = wire.DefaultDataDir
	}
	if abs, err := filepath.Abs(d); err == nil {
		d = abs
	}
	return filepath.Clean(d)
}

// apiError is an error with the status and code the client should see.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) *apiError {
	return &apiError{http.StatusConflict, wire.CodeConflict, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *apiError {
	return &apiError{http.StatusNotFound, wire.CodeNotFound, fmt.Sprintf(format, args...)}
}

func internalError(format string, args ...any) *apiError {
	return &apiError{http.StatusInternalServerError, wire.CodeInternal, fmt.Sprintf(format, args...)}
}

// writeAPIError answers with err's status and code, or a 500 for errors that
// are not *apiError.
func writeAPIError(w http.ResponseWriter, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		writeError(w, ae.status, ae.code, ae.msg)
		return
	}
	writeError(w, http.StatusInternalServerError, wire.CodeInternal, err.Error())
}

// readJSON decodes a size-capped JSON body into v. The whole body is read,
// which also lets the HTTP server notice at once when the client goes away
// (it only watches the connection after the body has been consumed); the
// streaming endpoints rely on that to kill what they run. Unknown fields are
// refused: a host newer than this agent must not believe an option was
// honoured when it was ignored.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any, allowEmpty bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{http.StatusRequestEntityTooLarge, wire.CodeTooLarge,
				fmt.Sprintf("request body larger than %d bytes", limit)}
		}
		return badRequest("reading request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return badRequest("request body is empty; want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("invalid JSON request: %v", err)
	}
	if dec.More() {
		return badRequest("invalid JSON request: more than one value")
	}
	return nil
}

// queryInt reads an optional integer query parameter.
func queryInt(r *http.Request, name string, def int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, badRequest("%s=%q is not an integer", name, v)
	}
	return n, nil
}

// millis turns a requested duration in milliseconds into a Duration,
// refusing negative values and lowering huge ones.
func millis(name string, ms int64) (time.Duration, error) {
	if ms < 0 {
		return 0, badRequest("%s must not be negative", name)
	}
	return time.Duration(min(ms, wire.MaxTimeoutMillis)) * time.Millisecond, nil
}

// procSpec is a validated request, ready to start.
type procSpec struct {
	argv []string // argv[0] as given; path is what runs
	path string
	dir  string
	env  []string
	// notFound is set instead of path when argv[0] cannot be found; exec
	// reports it like a shell (127), the others as a bad request.
	notFound string
}

// checkString refuses NUL bytes, which cannot cross execve and would
// silently cut an argument short.
func checkString(what, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return badRequest("%s contains a NUL byte", what)
	}
	return nil
}

// checkEnvName accepts what a shell and execve can carry: no '=', NUL,
// whitespace or control characters, printable ASCII or UTF-8.
func checkEnvName(name string) error {
	if name == "" {
		return badRequest("environment variable with an empty name")
	}
	if len(name) > maxEnvName {
		return badRequest("environment variable name of %d bytes; at most %d", len(name), maxEnvName)
	}
	if !utf8.ValidString(name) {
		return badRequest("environment variable name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if r == '=' || r <= ' ' || r == 0x7f {
			return badRequest("invalid environment variable name %q: no '=', spaces or control characters", name)
		}
	}
	return nil
}

// prepare validates the parts of a request that every kind of process has
// and resolves them: the working directory (created if missing), the
// environment and the program. argv must already be non-empty.
func (rn *runner) prepare(argv []string, cwd string, reqEnv map[string]string, extraEnv map[string]string) (*procSpec, error) {
	if argv[0] == "" {
		return nil, badRequest("empty program name")
	}
	for i, a := range argv {
		if err := checkString(fmt.Sprintf("argument %d", i), a); err != nil {
			return nil, err
		}
	}
	for k, v := range reqEnv {
		if err := checkEnvName(k); err != nil {
			return nil, err
		}
		if err := checkString("environment variable "+k, v); err != nil {
			return nil, err
		}
	}
	dir, err := rn.workDir(cwd)
	if err != nil {
		return nil, err
	}
	if err := rn.ensureWorkDir(dir); err != nil {
		return nil, err
	}
	env := rn.environ(reqEnv, extraEnv)
	spec := &procSpec{argv: argv, dir: dir, env: env}
	if strings.Contains(argv[0], "/") {
		spec.path = argv[0]
	} else if p, ok := lookPathEnv(argv[0], envValue(env, "PATH"), dir); ok {
		spec.path = p
	} else {
		spec.notFound = argv[0]
	}
	return spec, nil
}

// workDir resolves a requested working directory: empty means the data
// directory, relative paths are taken from it.
func (rn *runner) workDir(cwd string) (string, error) {
	if err := checkString("cwd", cwd); err != nil {
		return "", err
	}
	if len(cwd) > maxPathLen {
		return "", badRequest("cwd of %d bytes; at most %d", len(cwd), maxPathLen)
	}
	base := rn.dataDir()
	if cwd == "" {
		return base, nil
	}
	if !filepath.IsAbs(cwd) {
		cwd = filepath.Join(base, cwd)
	}
	return filepath.Clean(cwd), nil
}

// ensureWorkDir creates a missing working directory. Like the file
// endpoints, the agent acts as root here (the container is the security
// boundary) and gives every directory it creates to the image's user, so
// that the user's commands can work in them.
func (rn *runner) ensureWorkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return badRequest("cwd %s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return badRequest("cwd %s: %v", dir, unwrapPathError(err))
	}
	if err := mkdirAllOwned(dir, rn.user()); err != nil {
		return badRequest("cannot create cwd %s: %v", dir, unwrapPathError(err))
	}
	return nil
}

// prepareDataDir gives the bot's data directory to the image's user, so a
// workspace whose user is not root can write its own data. Only the
// directory itself changes owner, and only while root owns it (as when the
// image or an earlier berth made it); what is inside stays as it is.
func (rn *runner) prepareDataDir() error {
	cred := rn.user()
	if cred == nil || cred.UID == 0 {
		return nil
	}
	dir := rn.dataDir()
	if err := mkdirAllOwned(dir, cred); err != nil {
		return err
	}
	// Through a handle that did not follow a symlink, so the chown lands
	// on the directory that was checked.
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer func() { _ = unix.Close(fd) }()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Uid != 0 {
		return nil
	}
	return unix.Fchown(fd, int(cred.UID), int(cred.GID))
}

// mkdirAllOwned is os.MkdirAll that gives the directories it creates, and
// only those, to cred (nil: they stay root's).
func mkdirAllOwned(dir string, cred *Credential) error {
	// The missing directories, deepest first.
	var missing []string
	for p := dir; ; {
		_, err := os.Stat(p)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, p)
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	for i := len(missing) - 1; i >= 0; i-- {
		p := missing[i]
		err := os.Mkdir(p, 0o755)
		if errors.Is(err, fs.ErrExist) {
			// Created meanwhile by someone else, who owns it then.
			continue
		}
		if err != nil {
			return err
		}
		if cred != nil {
			if err := os.Lchown(p, int(cred.UID), int(cred.GID)); err != nil {
				return err
			}
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// environ builds a command's environment: the agent's own (the image's Env,
// which the agent inherited), then extra defaults (TERM for terminals), then
// what the request asks for. HOME gets a sensible value when nothing set it,
// or when it is root's home but the command runs as another user: the
// runtime sets HOME for the agent, which runs as root, not for the image's
// user.
func (rn *runner) environ(reqEnv, extra map[string]string) []string {
	base := os.Environ()
	idx := make(map[string]int, len(base))
	env := make([]string, 0, len(base)+len(reqEnv)+len(extra)+2)
	set := func(k, v string) {
		kv := k + "=" + v
		if i, ok := idx[k]; ok {
			env[i] = kv
			return
		}
		idx[k] = len(env)
		env = append(env, kv)
	}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		set(k, v)
	}
	if _, ok := idx["PATH"]; !ok {
		set("PATH", defaultPath)
	}
	u := rn.user()
	if i, ok := idx["HOME"]; !ok || (u != nil && u.UID != 0 && env[i] == "HOME=/root") {
		set("HOME", rn.homeDir())
	}
	for _, m := range []map[string]string{extra, reqEnv} {
		// Sorted, so the environment is the same for the same request.
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			set(k, m[k])
		}
	}
	return env
}

// homeDir is the user's home from /etc/passwd, else /root for root and the
// data directory (which the user can write) for anyone else.
func (rn *runner) homeDir() string {
	uid := uint32(0)
	if u := rn.user(); u != nil {
		uid = u.UID
	}
	if h := passwdHome("/etc/passwd", uid); h != "" {
		return h
	}
	if uid == 0 {
		return "/root"
	}
	return rn.dataDir()
}

// passwdHome finds uid's home directory in a passwd file, reading at most a
// bounded amount of it: the file belongs to the workspace.
func passwdHome(path string, uid uint32) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 4<<20))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	want := strconv.FormatUint(uint64(uid), 10)
	for sc.Scan() {
		// name:password:uid:gid:gecos:home:shell
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 7 && fields[2] == want && strings.HasPrefix(fields[5], "/") {
			return fields[5]
		}
	}
	return ""
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// lookPathEnv finds name in the command's PATH (not the agent's, which is
// what exec.LookPath would use). Relative PATH entries count from the
// command's working directory, as they would for a shell started there.
func lookPathEnv(name, pathEnv, dir string) (string, bool) {
	if pathEnv == "" {
		pathEnv = defaultPath
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// command builds the exec.Cmd for spec, to be started with the reaper.
// Stdio is set by the caller.
func (rn *runner) command(spec *procSpec) *exec.Cmd {
	cmd := &exec.Cmd{Path: spec.path, Args: spec.argv, Env: spec.env, Dir: spec.dir}
	attr := &syscall.SysProcAttr{}
	if u := rn.user(); u != nil {
		// Groups nil with NoSetGroups false clears root's supplementary
		// groups, which a command of the user must not keep.
		groups := append([]uint32{}, u.Groups...)
		attr.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: groups}
	}
	cmd.SysProcAttr = attr
	return cmd
}

// startFailure describes an error of starting a program the way a shell
// does: 127 when it does not exist, 126 when it exists but cannot run. ok is
// false for errors of the agent itself (out of processes or descriptors).
func startFailure(name string, err error) (exitCode int, msg string, ok bool) {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return 0, "", false
	}
	switch errno {
	case unix.ENOENT, unix.ENOTDIR:
		return 127, fmt.Sprintf("berth: %s: %v\n", name, errno), true
	case unix.EACCES, unix.EPERM, unix.ENOEXEC, unix.EISDIR, unix.E2BIG,
		unix.ELOOP, unix.ENAMETOOLONG, unix.ETXTBSY, unix.ELIBBAD:
		return 126, fmt.Sprintf("berth: %s: %v\n", name, errno), true
	}
	return 0, "", false
}

// exitStatus turns a wait status into an exit code the way shells report
// it (128+N for death by signal N) and the signal's name.
func exitStatus(ws unix.WaitStatus) (code int, signal string) {
	switch {
	case ws.Exited():
		return ws.ExitStatus(), ""
	case ws.Signaled():
		return 128 + int(ws.Signal()), signalName(ws.Signal())
	default:
		return -1, ""
	}
}

func signalName(sig unix.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return "SIG" + strconv.Itoa(int(sig))
}

// parseSignal accepts "SIGTERM", "TERM", "term", "15" and JSON numbers.
func parseSignal(raw json.RawMessage) (unix.Signal, error) {
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		return checkSignal(n, string(raw))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, badRequest("signal must be a name like \"SIGTERM\" or a number")
	}
	return parseSignalName(s)
}

func parseSignalName(s string) (unix.Signal, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		return checkSignal(n, s)
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, badRequest("unknown signal %q", s)
}

func checkSignal(n int, s string) (unix.Signal, error) {
	// 0 only probes; real-time signals end at 64 on Linux.
	if n < 1 || n > 64 {
		return 0, badRequest("signal %s out of range 1-64", s)
	}
	return unix.Signal(n), nil
}

// signalGroup signals the process group that c leads, but only while c has
// not been reaped: until then c's pid, and so the group id, cannot have been
// reused by an unrelated process. The reaper's lock keeps it from reaping c
// in between, the same way child.Signal does it.
func signalGroup(c *child, sig unix.Signal) error {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	select {
	case <-c.done:
		return os.ErrProcessDone
	default:
	}
	err := unix.Kill(-c.pid, sig)
	if err == unix.ESRCH {
		return os.ErrProcessDone
	}
	return err
}

// killGroup stops c's process group: SIGTERM, a short grace, then SIGKILL.
// The final SIGKILL goes to the group even when the leader died of the
// SIGTERM, because members that ignore SIGTERM (a grandchild of a shell
// that trapped it) must not outlive it. After the leader is reaped, its pid stays
// reserved as the group id only while members live, so the last kill could
// only hit a stranger if the group emptied and the whole pid space cycled
// within the grace period. If the leader is already gone when killGroup
// starts, it finished on its own and what it left behind is left alone.
func killGroup(c *child) { killGroupAfter(c, killGrace) }

// killGroupAfter is killGroup with another grace period.
func killGroupAfter(c *child, grace time.Duration) {
	if signalGroup(c, unix.SIGTERM) == os.ErrProcessDone {
		return
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	case <-c.r.stopCh:
	}
	if signalGroup(c, unix.SIGKILL) == os.ErrProcessDone {
		_ = unix.Kill(-c.pid, unix.SIGKILL)
	}
}
