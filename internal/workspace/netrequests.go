package workspace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/netpolicy"
	"github.com/containerd/errdefs"
)

// A bot asks for network access (network_access_request) and an operator
// decides (network_request_decide). The requests are part of the workspace,
// like its MCP servers and ports: one small JSON file per workspace under
// the state directory, never where the workspace can write, removed on
// delete. An approval becomes an allow rule of the workspace's policy
// through SetNetworkPolicy, so it is validated, persisted and applied like
// any policy change.

// Network request statuses.
const (
	NetworkRequestPending  = "pending"
	NetworkRequestApproved = "approved"
	NetworkRequestDenied   = "denied"
)

// Caps on a bot's requests: a bot (or a prompt injected into it) must not
// make berth hold or an operator read an unbounded list.
const (
	// MaxPendingNetworkRequests is how many undecided requests a bot may
	// have at once.
	MaxPendingNetworkRequests = 16
	// MaxNetworkRequests is how many requests are kept per bot; beyond it
	// the oldest decided ones are forgotten.
	MaxNetworkRequests = 64
	// MaxNetworkRequestText bounds a reason and a note, in bytes.
	MaxNetworkRequestText = 1000
)

// NetworkRequest is a bot's request for a destination, and its decision.
type NetworkRequest struct {
	ID  string `json:"id"`
	Bot string `json:"bot_id"`
	// Rule is the destination asked for, normalised as the policy would
	// hold it.
	Rule        netpolicy.Rule `json:"destination"`
	Reason      string         `json:"reason"`
	RequestedBy string         `json:"requested_by,omitempty"`
	RequestedAt time.Time      `json:"requested_at"`
	Status      string         `json:"status" jsonschema:"enum=pending,enum=approved,enum=denied"`
	DecidedBy   string         `json:"decided_by,omitempty"`
	DecidedAt   *time.Time     `json:"decided_at,omitempty"`
	Note        string         `json:"note,omitempty"`
}

// Destination describes the request's destination for people.
func (r NetworkRequest) Destination() string {
	d := r.Rule.Domain + r.Rule.CIDR
	if len(r.Rule.Ports) > 0 {
		d += " ports " + strings.Join(r.Rule.Ports, ",")
	}
	return d
}

// NormalizeNetworkRule checks a single destination (exactly one of domain
// and cidr, optional ports) with netpolicy's rules and messages, and returns
// it as a policy would hold it.
func NormalizeNetworkRule(r netpolicy.Rule) (netpolicy.Rule, error) {
	invalid := func(err error) error { return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err) }
	var out netpolicy.Rule
	switch {
	case r.Domain != "" && r.CIDR != "":
		return out, invalid(fmt.Errorf("both domain %q and cidr %q are set; ask for one destination at a time", r.Domain, r.CIDR))
	case r.Domain == "" && r.CIDR == "":
		return out, invalid(errors.New(`no destination: set "domain" (example.com, *.example.com) or "cidr" (10.0.0.0/8, 2001:db8::1)`))
	case r.Domain != "":
		d, err := netpolicy.NormalizeDomainPattern(r.Domain)
		if err != nil {
			return out, invalid(err)
		}
		out.Domain = d
	default:
		c, err := netpolicy.NormalizeCIDR(r.CIDR)
		if err != nil {
			return out, invalid(err)
		}
		out.CIDR = c.String()
	}
	if len(r.Ports) > netpolicy.MaxPortsPerRule {
		return out, invalid(fmt.Errorf("%d port entries, at most %d; use ranges such as 8000-8100", len(r.Ports), netpolicy.MaxPortsPerRule))
	}
	for _, s := range r.Ports {
		pr, err := netpolicy.ParsePortRange(s)
		if err != nil {
			return out, invalid(err)
		}
		out.Ports = append(out.Ports, pr.String())
	}
	return out, nil
}

func checkRequestText(what, s string, required bool) error {
	switch {
	case required && strings.TrimSpace(s) == "":
		return fmt.Errorf("%w: %s is required: say what the destination is for", errdefs.ErrInvalidArgument, what)
	case len(s) > MaxNetworkRequestText:
		return fmt.Errorf("%w: %s is %d bytes, at most %d", errdefs.ErrInvalidArgument, what, len(s), MaxNetworkRequestText)
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return fmt.Errorf("%w: %s must be UTF-8 text without NUL bytes", errdefs.ErrInvalidArgument, what)
	}
	return nil
}

func (m *Manager) netRequestsPath(bot string) string {
	return filepath.Join(m.opts.StateDir, "netrequests", bot+".json")
}

// netRequestsKey is the lock that serialises decisions on a bot's requests.
// No bot id holds a NUL, so it never collides with a bot's own lock.
func netRequestsKey(bot string) string { return "netrequests\x00" + bot }

// NetworkRequests returns the bot's requests, oldest first.
func (m *Manager) NetworkRequests(bot string) ([]NetworkRequest, error) {
	if err := ValidateBotID(bot); err != nil {
		return nil, err
	}
	reqs, err := readBotFile[NetworkRequest](m.netRequestsPath(bot))
	if err != nil {
		return nil, fmt.Errorf("network requests of %s (%s): %w", bot, m.netRequestsPath(bot), err)
	}
	return reqs, nil
}

// NetworkRequestBots lists the bots that have network requests.
func (m *Manager) NetworkRequestBots() ([]string, error) {
	return botsWithFiles(filepath.Join(m.opts.StateDir, "netrequests"))
}

// NetworkRequestByID returns one of the bot's requests.
func (m *Manager) NetworkRequestByID(bot, id string) (NetworkRequest, error) {
	reqs, err := m.NetworkRequests(bot)
	if err != nil {
		return NetworkRequest{}, err
	}
	i := slices.IndexFunc(reqs, func(r NetworkRequest) bool { return r.ID == id })
	if i < 0 {
		return NetworkRequest{}, requestNotFound(bot, id)
	}
	return reqs[i], nil
}

func requestNotFound(bot, id string) error {
	return fmt.Errorf("%w: bot %s has no network request %q (see network_requests_list)", errdefs.ErrNotFound, bot, id)
}

// RequestNetworkAccess records the bot's request for rule. A pending request
// for the same destination is returned instead of a second one (existing
// reports it), so a bot that asks again does not fill its quota.
func (m *Manager) RequestNetworkAccess(ctx context.Context, bot string, rule netpolicy.Rule, reason, by string) (req NetworkRequest, existing bool, err error) {
	rule, err = NormalizeNetworkRule(rule)
	if err != nil {
		return NetworkRequest{}, false, err
	}
	if err := checkRequestText("reason", reason, true); err != nil {
		return NetworkRequest{}, false, err
	}
	// The bot's own lock, so that a delete cannot run between the check
	// that the workspace exists and the write, leaving requests behind for
	// a later workspace of the same bot.
	mctx, done, err := m.mutate(ctx, bot, time.Minute)
	if err != nil {
		return NetworkRequest{}, false, err
	}
	defer done()
	if _, err := m.rt.Container(mctx, bot); isNotFound(err) {
		return NetworkRequest{}, false, notFound(bot)
	} else if err != nil {
		return NetworkRequest{}, false, err
	}
	reqs, err := m.NetworkRequests(bot)
	if err != nil {
		return NetworkRequest{}, false, err
	}
	pending := 0
	for _, r := range reqs {
		if r.Status != NetworkRequestPending {
			continue
		}
		if sameRule(r.Rule, rule) {
			return r, true, nil
		}
		pending++
	}
	if pending >= MaxPendingNetworkRequests {
		return NetworkRequest{}, false, fmt.Errorf("%w: bot %s already has %d pending network requests, the most it may have; wait for an operator to decide them",
			errdefs.ErrResourceExhausted, bot, pending)
	}
	id, err := newRequestID()
	if err != nil {
		return NetworkRequest{}, false, err
	}
	req = NetworkRequest{
		ID: id, Bot: bot, Rule: rule, Reason: reason, RequestedBy: by,
		RequestedAt: time.Now().UTC().Truncate(time.Second), Status: NetworkRequestPending,
	}
	reqs = append(reqs, req)
	// Forget the oldest decided requests beyond the cap; the pending cap is
	// below it, so there always are some.
	for len(reqs) > MaxNetworkRequests {
		i := slices.IndexFunc(reqs, func(r NetworkRequest) bool { return r.Status != NetworkRequestPending })
		if i < 0 {
			break
		}
		reqs = slices.Delete(reqs, i, i+1)
	}
	return req, false, m.writeNetRequests(bot, reqs)
}

func sameRule(a, b netpolicy.Rule) bool {
	return a.Domain == b.Domain && a.CIDR == b.CIDR && slices.Equal(a.Ports, b.Ports)
}

func newRequestID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "nr-" + hex.EncodeToString(b), nil
}

// NetworkDecision is an operator's answer to a request.
type NetworkDecision struct {
	Approve bool
	Note    string
	By      string
}

// DecideNetworkRequest approves or denies a pending request. An approval
// adds the request's destination to the policy's allow rules (unless an
// identical rule is there) through SetNetworkPolicy, and the request is
// marked approved only once the policy holds it. It returns the decided
// request and the policy in force after it.
func (m *Manager) DecideNetworkRequest(ctx context.Context, bot, id string, d NetworkDecision) (NetworkRequest, netpolicy.Policy, error) {
	return m.decideNetworkRequest(ctx, bot, id, d, m.allowRule)
}

// allowRule adds rule to the bot's policy and returns the policy in force.
// A policy change made between the read and the write by another caller
// would be lost; decisions themselves are serialised by the caller.
func (m *Manager) allowRule(ctx context.Context, bot string, rule netpolicy.Rule) (netpolicy.Policy, error) {
	info, err := m.NetworkInfo(ctx, bot)
	if err != nil {
		return netpolicy.Policy{}, err
	}
	pol := info.Policy
	if slices.ContainsFunc(pol.Allow, func(r netpolicy.Rule) bool { return sameRule(r, rule) }) {
		return pol, nil
	}
	pol.Allow = append(slices.Clone(pol.Allow), rule)
	return m.SetNetworkPolicy(ctx, bot, pol)
}

// decideNetworkRequest is DecideNetworkRequest with the policy change as a
// seam, so the store can be tested without a network.
func (m *Manager) decideNetworkRequest(ctx context.Context, bot, id string, d NetworkDecision,
	allow func(context.Context, string, netpolicy.Rule) (netpolicy.Policy, error)) (NetworkRequest, netpolicy.Policy, error) {
	if err := ValidateBotID(bot); err != nil {
		return NetworkRequest{}, netpolicy.Policy{}, err
	}
	if err := checkRequestText("note", d.Note, false); err != nil {
		return NetworkRequest{}, netpolicy.Policy{}, err
	}
	// Held across the policy change: two decisions on one bot never
	// interleave. The bot's own lock is taken only around the file,
	// because SetNetworkPolicy takes it too.
	unlock := m.locks.lock(netRequestsKey(bot))
	defer unlock()
	req, err := m.NetworkRequestByID(bot, id)
	if err != nil {
		return NetworkRequest{}, netpolicy.Policy{}, err
	}
	if req.Status != NetworkRequestPending {
		return NetworkRequest{}, netpolicy.Policy{}, fmt.Errorf("%w: network request %s of %s was already %s by %s", errdefs.ErrFailedPrecondition,
			id, bot, req.Status, req.DecidedBy)
	}
	var pol netpolicy.Policy
	if d.Approve {
		if pol, err = allow(ctx, bot, req.Rule); err != nil {
			return NetworkRequest{}, netpolicy.Policy{}, fmt.Errorf("approve %s (the request stays pending): %w", id, err)
		}
	}
	_, done, err := m.mutate(ctx, bot, time.Minute)
	if err != nil {
		return NetworkRequest{}, netpolicy.Policy{}, err
	}
	defer done()
	reqs, err := m.NetworkRequests(bot)
	if err != nil {
		return NetworkRequest{}, netpolicy.Policy{}, err
	}
	i := slices.IndexFunc(reqs, func(r NetworkRequest) bool { return r.ID == id })
	if i < 0 {
		// The workspace was deleted meanwhile, and its requests with it.
		return NetworkRequest{}, netpolicy.Policy{}, requestNotFound(bot, id)
	}
	now := time.Now().UTC().Truncate(time.Second)
	r := &reqs[i]
	r.Status, r.DecidedBy, r.DecidedAt, r.Note = NetworkRequestDenied, d.By, &now, d.Note
	if d.Approve {
		r.Status = NetworkRequestApproved
	}
	return *r, pol, m.writeNetRequests(bot, reqs)
}

// writeNetRequests replaces the requests file atomically.
func (m *Manager) writeNetRequests(bot string, reqs []NetworkRequest) error {
	return writeBotFile(m.netRequestsPath(bot), bot, reqs)
}
