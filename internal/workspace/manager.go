package workspace

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/berth-dev/berth/internal/netpolicy"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/containerd/errdefs"
)

// Options configure a Manager.
type Options struct {
	StateDir     string        // host directory for sockets and logs
	DefaultImage string        // image when a create names none
	Snapshotter  string        // default snapshotter
	AgentBinary  string        // static berth binary mounted as init
	AgentTimeout time.Duration // wait for a started agent
	StopGrace    time.Duration // SIGTERM → SIGKILL
	Version      string        // this berth's version, recorded in labels
	Logger       *slog.Logger
	// Limits bound new workspaces; zero fields are derived from the host
	// (see NewLimitPolicy).
	Limits LimitPolicy
	// AllowedDevices are the CDI device patterns that callers without
	// AnyDevice may ask for.
	AllowedDevices []string
	// Ports bounds the ports bots expose (see PortPolicy).
	Ports PortPolicy
	// Network is berth's bridge and resolver and the default mode.
	Network NetworkOptions
}

// Manager runs workspaces. All methods are safe for concurrent use;
// mutations of one bot are serialised, different bots proceed in parallel.
type Manager struct {
	rt   runtime.Runtime
	opts Options
	log  *slog.Logger

	locks  keyedMutex
	agents agentClients
	// waitAgent waits until the agent of the task just started answers.
	// It is a field so that tests of the orchestration can run on a fake
	// runtime, where no agent starts; berth always uses waitAgentReady.
	waitAgent func(ctx context.Context, bot string, pid uint32) error

	hooksMu   sync.Mutex
	onStarted []func(bot string)

	statsMu sync.Mutex
	stats   map[string]statsCache
}

type statsCache struct {
	last      runtime.Stats
	storage   int64
	storageAt time.Time
}

// NewManager returns a Manager over rt.
func NewManager(rt runtime.Runtime, opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.Limits = opts.Limits.withHostDefaults()
	m := &Manager{rt: rt, opts: opts, log: opts.Logger, stats: map[string]statsCache{}}
	m.waitAgent = m.waitAgentReady
	return m
}

func (m *Manager) waitAgentReady(ctx context.Context, bot string, pid uint32) error {
	_, err := client.WaitReady(ctx, m.socketPath(bot), m.opts.AgentTimeout, client.WithInitPID(pid))
	return err
}

// Progress reports long work: Done of Total units, with a message.
type Progress struct {
	Done, Total float64
	Message     string
}

// CreateRequest is what a bot's workspace should be.
type CreateRequest struct {
	BotID       string
	Image       string
	PullPolicy  string
	Devices     []string
	Snapshotter string
	Env         map[string]string
	// Limits asks for limits; zero fields take the operator's defaults.
	Limits runtime.Limits
	// AnyDevice lets the caller inject any CDI device; without it only
	// devices matching Options.AllowedDevices (admins set it).
	AnyDevice bool
	// RestoreData brings back the /data that workspace_delete preserved.
	RestoreData bool
	// Network is the network mode (NetworkModes); empty takes the default.
	Network string
	// AllowHostNetwork lets the caller choose NetworkHost (admins set it).
	AllowHostNetwork bool

	// networkPolicy is the policy a fork copies; nil is the default.
	networkPolicy *netpolicy.Policy
}

// CreateResult says what workspace_create did.
type CreateResult struct {
	Workspace Workspace
	Created   bool
	Pulled    bool
	// NotApplied lists requested settings that an existing workspace kept.
	NotApplied []string
	// Restored says what RestoreData brought back.
	Restored *wire.ImportResult
	// RestoreError says why RestoreData failed: the workspace is created
	// all the same (failing the call would hide it), the backup is kept.
	RestoreError string
}

var envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Caps on what a create may ask for.
const (
	maxEnvVars     = 256
	maxEnvValueLen = 32 << 10
	maxDevices     = 64
)

// validateEnv checks environment variables a caller gives: at most max,
// with names a shell accepts and bounded values.
func validateEnv(env map[string]string, max int) error {
	if len(env) > max {
		return fmt.Errorf("%w: at most %d env variables", errdefs.ErrInvalidArgument, max)
	}
	for k, v := range env {
		if !envNamePattern.MatchString(k) {
			return fmt.Errorf("%w: env name %q must match %s", errdefs.ErrInvalidArgument, k, envNamePattern)
		}
		if len(v) > maxEnvValueLen || strings.ContainsRune(v, 0) {
			return fmt.Errorf("%w: env %s: value longer than %d bytes or holds a NUL byte", errdefs.ErrInvalidArgument, k, maxEnvValueLen)
		}
	}
	return nil
}

func (r *CreateRequest) validate() error {
	if err := ValidateBotID(r.BotID); err != nil {
		return err
	}
	if err := validateEnv(r.Env, maxEnvVars); err != nil {
		return err
	}
	if len(r.Devices) > maxDevices {
		return fmt.Errorf("%w: at most %d devices", errdefs.ErrInvalidArgument, maxDevices)
	}
	for _, d := range r.Devices {
		if d == "" || strings.Contains(d, ",") {
			return fmt.Errorf("%w: device name %q must be a CDI name such as vendor.com/gpu=0", errdefs.ErrInvalidArgument, d)
		}
	}
	return nil
}

// Create makes the bot's workspace and starts it, or returns the existing
// one. Cancelling ctx during the image pull abandons it and leaves nothing;
// once the container is being made, the work finishes (or is rolled back)
// whatever ctx says, so no half-made workspace is ever left.
func (m *Manager) Create(ctx context.Context, req CreateRequest, progress func(Progress)) (CreateResult, error) {
	if req.Image == "" {
		req.Image = m.opts.DefaultImage
	}
	if req.Snapshotter == "" {
		req.Snapshotter = m.opts.Snapshotter
	}
	if err := req.validate(); err != nil {
		return CreateResult{}, err
	}
	limits, err := m.opts.Limits.Resolve(req.Limits)
	if err != nil {
		return CreateResult{}, err
	}
	if err := checkDevices(req.Devices, m.opts.AllowedDevices, req.AnyDevice); err != nil {
		return CreateResult{}, err
	}
	askedNetwork := req.Network
	if req.Network, err = m.resolveNetworkMode(req.Network, req.AllowHostNetwork); err != nil {
		return CreateResult{}, err
	}
	ref, err := runtime.NormalizeImageRef(req.Image)
	if err != nil {
		return CreateResult{}, err
	}
	policy, err := runtime.ParsePullPolicy(req.PullPolicy)
	if err != nil {
		return CreateResult{}, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
	}
	unlock := m.locks.lock(req.BotID)
	defer unlock()

	existing, err := m.rt.Container(ctx, req.BotID)
	if err == nil {
		ws := m.describe(ctx, existing, true)
		req.Network = askedNetwork
		return CreateResult{Workspace: ws, NotApplied: notApplied(req, ref, existing)}, nil
	}
	if !isNotFound(err) {
		return CreateResult{}, err
	}
	if req.RestoreData && !m.HasPreservedData(req.BotID) {
		return CreateResult{}, fmt.Errorf("%w: restore_data: bot %s has no preserved data", errdefs.ErrNotFound, req.BotID)
	}
	if err := m.rt.CheckDevices(req.Devices); err != nil {
		return CreateResult{}, err
	}
	if err := checkAgentBinary(m.opts.AgentBinary); err != nil {
		return CreateResult{}, err
	}

	img, err := m.rt.EnsureImage(ctx, ref, policy, req.Snapshotter, pullReporter(ref, progress))
	if err != nil {
		return CreateResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return CreateResult{}, fmt.Errorf("the workspace was not made: %w", err)
	}

	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.AgentTimeout+2*time.Minute)
	defer cancel()
	report(progress, Progress{Message: "creating workspace " + req.BotID})
	made := req
	made.Limits = limits
	if err := m.rt.CreateContainer(mctx, m.containerSpec(made, ref)); err != nil {
		return CreateResult{}, err
	}
	if err := m.start(mctx, req.BotID); err != nil {
		if rbErr := m.remove(mctx, req.BotID); rbErr != nil {
			m.log.Error("roll back failed create", "bot", req.BotID, "err", rbErr)
		}
		return CreateResult{}, fmt.Errorf("workspace %s was not created: %w", req.BotID, err)
	}
	result := CreateResult{Created: true, Pulled: img.Pulled}
	if req.RestoreData {
		report(progress, Progress{Message: "restoring preserved data of " + req.BotID})
		res, err := m.RestoreData(mctx, req.BotID)
		if err != nil {
			result.RestoreError = err.Error()
			m.warnBot(req.BotID, "workspace created but its preserved /data was not restored; the backup is kept, to restore again or to discard", "err", err)
		} else {
			result.Restored = &res
		}
	}
	ctr, err := m.rt.Container(mctx, req.BotID)
	if err != nil {
		return CreateResult{}, err
	}
	result.Workspace = m.describe(mctx, ctr, true)
	return result, nil
}

func (m *Manager) containerSpec(req CreateRequest, ref string) runtime.ContainerSpec {
	envNames := make([]string, 0, len(req.Env))
	env := make([]string, 0, len(req.Env))
	for k, v := range req.Env {
		envNames = append(envNames, k)
		env = append(env, k+"="+v)
	}
	sort.Strings(envNames)
	sort.Strings(env)
	limits, _ := json.Marshal(req.Limits)
	pol := defaultPolicy()
	if req.networkPolicy != nil {
		pol = *req.networkPolicy
	}
	labels := map[string]string{
		LabelBot:       req.BotID,
		labelDesired:   desiredRunning,
		labelImage:     ref,
		labelLimits:    string(limits),
		labelDevices:   strings.Join(req.Devices, ","),
		labelEnvNames:  strings.Join(envNames, ","),
		labelCreatedBy: m.opts.Version,
	}
	maps.Copy(labels, networkLabels(cmp.Or(req.Network, NetworkNone), pol, nil))
	return runtime.ContainerSpec{
		ID:          req.BotID,
		Image:       ref,
		Snapshotter: req.Snapshotter,
		Hostname:    req.BotID,
		Args:        []string{agentPathInContainer, "agent"},
		Env:         env,
		Limits:      req.Limits,
		Devices:     req.Devices,
		RunAsRoot:   true,
		Mounts: []runtime.Mount{
			{Source: m.opts.AgentBinary, Destination: agentPathInContainer, ReadOnly: true},
			{Source: m.runDir(req.BotID), Destination: wire.ContainerDir},
		},
		// The network (namespace, resolver files) is set at each start, when
		// a bridge workspace's namespace exists.
		Labels: labels,
	}
}

// notApplied names the requested settings an existing workspace differs in.
func notApplied(req CreateRequest, ref string, ctr runtime.Container) []string {
	var out []string
	if ref != ctr.Image {
		out = append(out, fmt.Sprintf("image %s (the workspace runs %s)", ref, ctr.Image))
	}
	if req.Snapshotter != ctr.Snapshotter {
		out = append(out, fmt.Sprintf("snapshotter %s (the workspace uses %s)", req.Snapshotter, ctr.Snapshotter))
	}
	// Only the limits the request names: the others take defaults, which
	// an existing workspace has whatever they are now.
	// One entry per setting, in the words of the tool's arguments: a model
	// reads these, not a Go programmer.
	var limits runtime.Limits
	_ = json.Unmarshal([]byte(ctr.Labels[labelLimits]), &limits)
	if req.Limits.CPUs != 0 && req.Limits.CPUs != limits.CPUs {
		out = append(out, fmt.Sprintf("cpus %s (the workspace has %s)", cpusText(req.Limits.CPUs), cpusText(limits.CPUs)))
	}
	if req.Limits.MemoryBytes != 0 && req.Limits.MemoryBytes != limits.MemoryBytes {
		out = append(out, fmt.Sprintf("memory %s (the workspace has %s)", memoryText(req.Limits.MemoryBytes), memoryText(limits.MemoryBytes)))
	}
	if req.Limits.Pids != 0 && req.Limits.Pids != limits.Pids {
		out = append(out, fmt.Sprintf("pids %s (the workspace has %s)", pidsText(req.Limits.Pids), pidsText(limits.Pids)))
	}
	devices := slices.Sorted(slices.Values(req.Devices))
	have := slices.Sorted(slices.Values(splitList(ctr.Labels[labelDevices])))
	if !slices.Equal(devices, have) {
		out = append(out, fmt.Sprintf("devices %s (the workspace has %s)", listText(devices), listText(have)))
	}
	names := make([]string, 0, len(req.Env))
	for k := range req.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(req.Env) > 0 {
		out = append(out, fmt.Sprintf("env %s (env is fixed at create; the workspace has %s)", listText(names), listText(splitList(ctr.Labels[labelEnvNames]))))
	}
	if mode, _ := networkOf(ctr.Labels); req.Network != "" && req.Network != mode {
		out = append(out, fmt.Sprintf("network %s (the workspace has %s; setting its network mode changes it from the next start)", req.Network, mode))
	}
	if req.RestoreData {
		out = append(out, "restore_data (the workspace exists; restore its preserved data on its own)")
	}
	return out
}

// cpusText, memoryText and pidsText show a limit as workspace_create's
// arguments take it (memory as 512M, 2G); 0 is no limit.
func cpusText(v float64) string {
	if v == 0 {
		return "no CPU limit"
	}
	if v == 1 {
		return "1 core"
	}
	return strconv.FormatFloat(v, 'f', -1, 64) + " cores"
}

func memoryText(v int64) string {
	if v == 0 {
		return "no memory limit"
	}
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if v%u.size == 0 {
			return strconv.FormatInt(v/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(v, 10) + " bytes"
}

func pidsText(v int64) string {
	if v == 0 {
		return "no pids limit"
	}
	return strconv.FormatInt(v, 10)
}

func listText(v []string) string {
	if len(v) == 0 {
		return "none"
	}
	return strings.Join(v, ", ")
}

// warnBot logs a warning about the bot's work. The "bot" attribute is what
// lets berth's log handler pass it on to the MCP sessions of that bot.
func (m *Manager) warnBot(bot, msg string, args ...any) {
	m.log.Warn(msg, append([]any{"bot", bot}, args...)...)
}

func pullReporter(ref string, progress func(Progress)) func(runtime.PullProgress) {
	if progress == nil {
		return nil
	}
	return func(p runtime.PullProgress) {
		msg := fmt.Sprintf("%s %s", p.Phase, ref)
		if p.Total > 0 {
			msg = fmt.Sprintf("%s %s: %s of %s, %d/%d layers", p.Phase, ref, humanBytes(p.Done), humanBytes(p.Total), p.LayersDone, p.Layers)
		}
		progress(Progress{Done: float64(p.Done), Total: float64(p.Total), Message: msg})
	}
}

func report(progress func(Progress), p Progress) {
	if progress != nil {
		progress(p)
	}
}

// Get describes the bot's workspace, asking a running agent for its health.
func (m *Manager) Get(ctx context.Context, bot string) (Workspace, error) {
	if err := ValidateBotID(bot); err != nil {
		return Workspace{}, err
	}
	ctr, err := m.container(ctx, bot)
	if err != nil {
		return Workspace{}, err
	}
	return m.describe(ctx, ctr, true), nil
}

// List returns up to limit workspaces whose bot id sorts after `after`,
// and whether more follow.
func (m *Manager) List(ctx context.Context, after string, limit int) ([]Workspace, bool, error) {
	ctrs, err := m.rt.Containers(ctx, LabelBot)
	if err != nil {
		return nil, false, err
	}
	sort.Slice(ctrs, func(i, j int) bool { return ctrs[i].ID < ctrs[j].ID })
	out := []Workspace{}
	for _, c := range ctrs {
		if c.ID <= after {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, m.describe(ctx, c, false))
	}
	return out, false, nil
}

// Start starts a stopped workspace and waits for its agent.
func (m *Manager) Start(ctx context.Context, bot string) (Workspace, error) {
	mctx, done, err := m.mutate(ctx, bot, m.opts.AgentTimeout+time.Minute)
	if err != nil {
		return Workspace{}, err
	}
	defer done()
	if _, err := m.rt.Container(mctx, bot); isNotFound(err) {
		return Workspace{}, notFound(bot)
	} else if err != nil {
		return Workspace{}, err
	}
	if err := checkAgentBinary(m.opts.AgentBinary); err != nil {
		return Workspace{}, err
	}
	if err := m.start(mctx, bot); err != nil {
		return Workspace{}, err
	}
	return m.Get(mctx, bot)
}

// mutate validates bot and takes its lock for a mutation. The returned
// context ignores the caller's cancellation (a half-done start or stop
// helps nobody) but is bounded by timeout; done releases both.
func (m *Manager) mutate(ctx context.Context, bot string, timeout time.Duration) (context.Context, func(), error) {
	if err := ValidateBotID(bot); err != nil {
		return nil, nil, err
	}
	unlock := m.locks.lock(bot)
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	return mctx, func() { cancel(); unlock() }, nil
}

// start runs the task and waits for the agent. Callers hold the bot's lock.
func (m *Manager) start(ctx context.Context, bot string) error {
	// The workspace can write its agent directory; a new task starts from
	// an empty one, so nothing a previous run left there (a symlink where
	// the socket was, stray files) is seen by the new agent or by berth.
	// A running task keeps its directory: its agent listens there.
	c, err := m.rt.Container(ctx, bot)
	if err != nil || c.Status != runtime.TaskRunning {
		if err := os.RemoveAll(m.runDir(bot)); err != nil {
			return fmt.Errorf("clear agent directory: %w", err)
		}
	}
	// The network exists before the task: a bridge workspace's namespace,
	// address, rules and resolver are ready when its first process runs.
	if err == nil && c.Status != runtime.TaskRunning && c.Status != runtime.TaskPaused {
		if err := m.prepareNetwork(ctx, c); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(m.runDir(bot), 0o700); err != nil {
		return fmt.Errorf("prepare agent directory: %w", err)
	}
	logPath := m.logPath(bot)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return fmt.Errorf("prepare log directory: %w", err)
	}
	truncateLog(logPath)
	if err := m.rt.SetLabels(ctx, bot, map[string]string{labelDesired: desiredRunning, labelStartedBy: m.opts.Version}); err != nil {
		return err
	}
	m.agents.drop(bot)
	pid, err := m.rt.StartTask(ctx, bot, logPath)
	if err != nil {
		return err
	}
	if err := m.waitAgent(ctx, bot, pid); err != nil {
		return fmt.Errorf("%w%s", err, m.logTail(bot))
	}
	m.notifyStarted(bot)
	return nil
}

// Stop stops the workspace: SIGTERM, grace (0 means the configured one), SIGKILL.
// It stays stopped across berth restarts until started again.
func (m *Manager) Stop(ctx context.Context, bot string, grace time.Duration) (Workspace, error) {
	if grace <= 0 {
		grace = m.opts.StopGrace
	}
	mctx, done, err := m.mutate(ctx, bot, grace+time.Minute)
	if err != nil {
		return Workspace{}, err
	}
	defer done()
	if err := m.rt.SetLabels(mctx, bot, map[string]string{labelDesired: desiredStopped}); isNotFound(err) {
		return Workspace{}, notFound(bot)
	} else if err != nil {
		return Workspace{}, err
	}
	m.agents.drop(bot)
	if err := m.rt.StopTask(mctx, bot, grace); err != nil {
		return Workspace{}, err
	}
	m.detachNetwork(mctx, bot)
	m.forgetStats(bot)
	return m.Get(mctx, bot)
}

// DeleteOptions say how to delete a workspace.
type DeleteOptions struct {
	Grace         time.Duration // SIGTERM → SIGKILL; 0 means the configured one
	PreserveData  bool          // back up /data first, for RestoreData
	KeepSnapshots bool          // leave the workspace's snapshot versions in place
}

// Delete stops and removes the workspace with its writable layer, its
// snapshots and the archives data_export made of it (they are copies of a
// workspace that no longer exists; only PreserveData outlives it). With
// PreserveData, /data is first archived under the state directory
// (starting a stopped workspace for that); if that fails nothing is
// deleted. Deleting a bot without a workspace succeeds with deleted false:
// the tool is idempotent, and a retried delete must not read as a failure.
func (m *Manager) Delete(ctx context.Context, bot string, o DeleteOptions) (deleted bool, err error) {
	grace, preserve := o.Grace, o.PreserveData
	if grace <= 0 {
		grace = m.opts.StopGrace
	}
	mctx, done, err := m.mutate(ctx, bot, grace+time.Hour)
	if err != nil {
		return false, err
	}
	defer done()
	ctr, err := m.rt.Container(mctx, bot)
	if isNotFound(err) {
		// Exports a berth before this one left behind go too.
		return false, m.removeExports(bot)
	} else if err != nil {
		return false, err
	}
	if preserve {
		if ctr.Status != runtime.TaskRunning {
			if err := m.start(mctx, bot); err != nil {
				return false, fmt.Errorf("start the workspace to preserve its data: %w", err)
			}
		}
		if _, err := m.exportTo(mctx, bot, wire.DefaultDataDir, m.preservedPath(bot), nil); err != nil {
			return false, fmt.Errorf("preserve data (nothing was deleted): %w", err)
		}
	}
	if err := m.rt.StopTask(mctx, bot, grace); err != nil && !isNotFound(err) {
		return false, err
	}
	if err := m.remove(mctx, bot); err != nil {
		return false, err
	}
	if err := m.removeExports(bot); err != nil {
		return true, err
	}
	if o.KeepSnapshots {
		return true, nil
	}
	return true, m.deleteSnapshots(mctx, bot, ctr.Snapshotter)
}

// remove deletes the container and berth's host files for it.
func (m *Manager) remove(ctx context.Context, bot string) error {
	m.agents.drop(bot)
	if err := m.rt.DeleteContainer(ctx, bot); err != nil && !isNotFound(err) {
		return err
	}
	m.forgetStats(bot)
	return errors.Join(m.forgetNetwork(ctx, bot), os.RemoveAll(m.runDir(bot)), removeIfExists(m.logPath(bot)), removeIfExists(m.mcpServersPath(bot)),
		removeIfExists(m.portsPath(bot)), removeIfExists(m.netRequestsPath(bot)))
}

// Reconcile adopts the workspaces containerd holds: a workspace that should
// run but does not (after a host reboot or a crash) is started again; a
// stopped one stays stopped; running ones are left untouched.
func (m *Manager) Reconcile(ctx context.Context) error {
	if err := m.rt.ReconcileSnapshots(ctx); err != nil {
		m.log.Error("reconcile snapshots", "err", err)
	}
	ctrs, err := m.rt.Containers(ctx, LabelBot)
	if err != nil {
		return err
	}
	m.reconcileNetwork(ctx, ctrs)
	for _, c := range ctrs {
		if c.Labels[labelDesired] != desiredRunning || c.Status == runtime.TaskRunning || c.Status == runtime.TaskPaused {
			continue
		}
		m.log.Info("restarting workspace that should be running", "bot", c.ID, "status", c.Status)
		if _, err := m.Start(ctx, c.ID); err != nil {
			m.log.Error("restart workspace", "bot", c.ID, "err", err)
		}
	}
	m.log.Info("reconciled workspaces", "count", len(ctrs))
	return nil
}

// describe turns a container into a Workspace; withAgent asks the agent.
func (m *Manager) describe(ctx context.Context, c runtime.Container, withAgent bool) Workspace {
	ws := Workspace{
		BotID:       c.ID,
		Status:      statusOf(c.Status),
		Image:       c.Image,
		Snapshotter: c.Snapshotter,
		CreatedAt:   c.CreatedAt,
		Devices:     splitList(c.Labels[labelDevices]),
		EnvNames:    splitList(c.Labels[labelEnvNames]),
		CreatedBy:   c.Labels[labelCreatedBy],
		// A backup from an earlier workspace of this bot waits for restore.
		HasPreservedData: m.HasPreservedData(c.ID),
	}
	ws.Network, _ = networkOf(c.Labels)
	if br := m.opts.Network.Bridge; br != nil && ws.Network == NetworkBridge {
		if a, ok := br.Attached(c.ID); ok {
			ws.IP = a.IP.String()
		}
	}
	_ = json.Unmarshal([]byte(c.Labels[labelLimits]), &ws.Limits)
	if c.Status == runtime.TaskRunning {
		ws.PID = c.PID
		if withAgent {
			ws.Agent = m.agentStatus(ctx, c.ID, c.PID)
		}
	}
	return ws
}

func (m *Manager) agentStatus(ctx context.Context, bot string, initPID uint32) *AgentStatus {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ac := client.New(m.socketPath(bot), client.WithInitPID(initPID))
	defer ac.Close()
	h, err := ac.Health(ctx)
	var mismatch *client.ProtocolMismatchError
	switch {
	case errors.Is(err, client.ErrNotAgent):
		return &AgentStatus{Status: "replaced", Error: err.Error()}
	case errors.As(err, &mismatch):
		return &AgentStatus{Status: "outdated", ProtocolVersion: mismatch.Got, BerthVersion: mismatch.BerthVersion, Error: err.Error()}
	case err != nil:
		return &AgentStatus{Status: "unreachable", Error: err.Error()}
	}
	return &AgentStatus{Status: "ready", ProtocolVersion: h.ProtocolVersion, BerthVersion: h.BerthVersion}
}

func (m *Manager) runDir(bot string) string { return filepath.Join(m.opts.StateDir, "run", bot) }
func (m *Manager) logPath(bot string) string {
	return filepath.Join(m.opts.StateDir, "logs", bot+".log")
}
func (m *Manager) socketPath(bot string) string {
	return filepath.Join(m.runDir(bot), wire.SocketName)
}

// MaxSocketPathLen is the longest unix socket path the kernel accepts, less one.
const MaxSocketPathLen = 107

// CheckStateDir says whether agent socket paths under stateDir fit the
// kernel's limit for the longest bot id.
func CheckStateDir(stateDir string) error {
	longest := filepath.Join(stateDir, "run", strings.Repeat("x", MaxBotIDLength), wire.SocketName)
	if len(longest) > MaxSocketPathLen {
		return fmt.Errorf("state dir %s is too long: agent sockets under it would exceed %d bytes; use a shorter --state-dir", stateDir, MaxSocketPathLen)
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
