package tools

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/netpolicy"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/server"
)

// NetworkRule names destinations: exactly one of domain and cidr, and
// optionally some ports.
type NetworkRule struct {
	Domain string   `json:"domain,omitempty" jsonschema:"description=a name (example.com) or a wildcard of its subdomains (*.example.com\\, which does not cover example.com itself); enforced through berth's DNS resolver"`
	CIDR   string   `json:"cidr,omitempty" jsonschema:"description=an address or prefix\\, IPv4 or IPv6 (10.0.0.0/8\\, 2001:db8::1)"`
	Ports  []string `json:"ports,omitempty" jsonschema:"description=destination ports (443) or ranges (8000-8100)\\, 1-65535; none means every port"`
}

func (r NetworkRule) rule() netpolicy.Rule {
	return netpolicy.Rule{Domain: r.Domain, CIDR: r.CIDR, Ports: r.Ports}
}

func networkRule(r netpolicy.Rule) NetworkRule {
	return NetworkRule{Domain: r.Domain, CIDR: r.CIDR, Ports: r.Ports}
}

func networkRules(rs []netpolicy.Rule) []NetworkRule {
	out := []NetworkRule{}
	for _, r := range rs {
		out = append(out, networkRule(r))
	}
	return out
}

// NetworkPolicy is a workspace's egress policy.
type NetworkPolicy struct {
	Default string        `json:"default" jsonschema:"enum=allow,enum=deny,description=what happens to a destination no rule names"`
	Allow   []NetworkRule `json:"allow" jsonschema:"description=destinations allowed (under default deny); a deny rule wins over an allow rule"`
	Deny    []NetworkRule `json:"deny" jsonschema:"description=destinations refused whatever the allow rules say"`
}

func networkPolicy(p netpolicy.Policy) NetworkPolicy {
	return NetworkPolicy{Default: string(p.Default), Allow: networkRules(p.Allow), Deny: networkRules(p.Deny)}
}

// DeniedDestinationInfo is an address the policy refused recently.
type DeniedDestinationInfo struct {
	Addr     string    `json:"addr"`
	Proto    string    `json:"proto"`
	Port     int       `json:"port,omitempty"`
	Packets  uint64    `json:"packets" jsonschema:"description=dropped packets (a retried connection counts once per attempt)"`
	LastSeen time.Time `json:"last_seen"`
}

// DeniedNameInfo is a name berth's resolver refused recently.
type DeniedNameInfo struct {
	Name   string    `json:"name"`
	Type   string    `json:"type" jsonschema:"description=the last query type asked"`
	Reason string    `json:"reason" jsonschema:"description=the rule or check that refused it"`
	Count  uint64    `json:"count"`
	Last   time.Time `json:"last"`
}

// NetworkAccessRequestInfo is a bot's request for network access.
type NetworkAccessRequestInfo struct {
	ID          string      `json:"id"`
	BotID       string      `json:"bot_id"`
	Destination NetworkRule `json:"destination"`
	Reason      string      `json:"reason"`
	RequestedBy string      `json:"requested_by,omitempty"`
	RequestedAt time.Time   `json:"requested_at"`
	Status      string      `json:"status" jsonschema:"enum=pending,enum=approved,enum=denied"`
	DecidedBy   string      `json:"decided_by,omitempty"`
	DecidedAt   *time.Time  `json:"decided_at,omitempty"`
	Note        string      `json:"note,omitempty" jsonschema:"description=the deciding operator's note"`
}

func accessRequestInfo(r workspace.NetworkRequest) NetworkAccessRequestInfo {
	return NetworkAccessRequestInfo{
		ID: r.ID, BotID: r.Bot, Destination: networkRule(r.Rule), Reason: r.Reason, RequestedBy: r.RequestedBy,
		RequestedAt: r.RequestedAt, Status: r.Status, DecidedBy: r.DecidedBy, DecidedAt: r.DecidedAt, Note: r.Note,
	}
}

// NetworkGetOutput is a workspace's network.
type NetworkGetOutput struct {
	Mode               string                     `json:"mode" jsonschema:"enum=none,enum=bridge,enum=host,description=none: loopback only; bridge: own address on berth's bridge under the policy; host: the host's network"`
	IP                 string                     `json:"ip,omitempty" jsonschema:"description=the workspace's address (bridge mode while it runs)"`
	Gateway            string                     `json:"gateway,omitempty" jsonschema:"description=the bridge's address: default route and DNS resolver"`
	Policy             NetworkPolicy              `json:"policy" jsonschema:"description=the egress policy; enforced in bridge mode and kept in the others"`
	DeniedDestinations []DeniedDestinationInfo    `json:"denied_destinations" jsonschema:"description=addresses the policy refused recently"`
	DeniedNames        []DeniedNameInfo           `json:"denied_names" jsonschema:"description=names berth's resolver refused recently"`
	AccessRequests     []NetworkAccessRequestInfo `json:"access_requests" jsonschema:"description=the bot's network access requests and their decisions\\, oldest first"`
}

// NetworkPolicySetInput replaces a workspace's policy.
type NetworkPolicySetInput struct {
	BotID   string        `json:"bot_id"`
	Default string        `json:"default" jsonschema:"enum=allow,enum=deny,description=what happens to a destination no rule names"`
	Allow   []NetworkRule `json:"allow,omitempty" jsonschema:"description=destinations allowed; at most 256 rules"`
	Deny    []NetworkRule `json:"deny,omitempty" jsonschema:"description=destinations refused; they win over allow rules; at most 256 rules"`
}

func (i NetworkPolicySetInput) bot() string { return i.BotID }

// NetworkPolicySetOutput is the policy as stored.
type NetworkPolicySetOutput struct {
	Policy NetworkPolicy `json:"policy" jsonschema:"description=the policy as stored (normalised: lower-case names\\, canonical prefixes and ports)"`
	Mode   string        `json:"mode"`
	// Enforced says whether the policy filters the workspace's traffic
	// now, rather than being kept for a later bridge start.
	Enforced bool `json:"enforced" jsonschema:"description=true when the workspace is on the bridge and the policy applies now; otherwise it is kept for when it is"`
}

// NetworkModeSetInput changes a workspace's network mode.
type NetworkModeSetInput struct {
	BotID string `json:"bot_id"`
	Mode  string `json:"mode" jsonschema:"enum=none,enum=bridge,enum=host,description=none: loopback only; bridge: own address on berth's bridge with DNS under the egress policy; host: the host's network (admin scope only)"`
}

func (i NetworkModeSetInput) bot() string { return i.BotID }

// NetworkModeSetOutput is the mode stored and when it applies.
type NetworkModeSetOutput struct {
	Mode     string `json:"mode" jsonschema:"description=the mode the workspace gets at its next start"`
	Previous string `json:"previous" jsonschema:"description=the mode stored before this call"`
	// RestartNeeded says the running task keeps the network it started
	// with: the mode is a property of the task's namespaces, fixed at its
	// start.
	RestartNeeded bool `json:"restart_needed" jsonschema:"description=true when this call changed the mode of a running workspace: it keeps its current network until workspace_stop and workspace_start"`
}

// NetworkAccessRequestInput is a bot's request for a destination.
type NetworkAccessRequestInput struct {
	BotID  string   `json:"bot_id"`
	Domain string   `json:"domain,omitempty" jsonschema:"description=the name asked for (api.example.com) or a wildcard of its subdomains (*.example.com); set this or cidr"`
	CIDR   string   `json:"cidr,omitempty" jsonschema:"description=the address or prefix asked for (203.0.113.7\\, 10.0.0.0/8); set this or domain"`
	Ports  []string `json:"ports,omitempty" jsonschema:"description=the ports needed (443) or ranges (8000-8100); none asks for every port"`
	Reason string   `json:"reason" jsonschema:"description=what the access is for\\, shown to the operator who decides; at most 1000 bytes"`
}

func (i NetworkAccessRequestInput) bot() string { return i.BotID }

// NetworkAccessRequestOutput is the recorded request.
type NetworkAccessRequestOutput struct {
	Request NetworkAccessRequestInfo `json:"request"`
	// Existing says the same destination was already pending.
	Existing bool `json:"existing" jsonschema:"description=true when a pending request for the same destination was returned instead of a new one"`
}

// NetworkRequestsListInput filters the requests listed.
type NetworkRequestsListInput struct {
	BotID  string `json:"bot_id,omitempty" jsonschema:"description=the bot whose requests to list; empty lists those of every bot the token may manage"`
	Status string `json:"status,omitempty" jsonschema:"enum=pending,enum=approved,enum=denied,description=list only requests with this status"`
}

func (i NetworkRequestsListInput) bot() string { return i.BotID }

// NetworkRequestsListOutput lists requests.
type NetworkRequestsListOutput struct {
	Requests []NetworkAccessRequestInfo `json:"requests"`
}

// NetworkRequestDecideInput decides a request.
type NetworkRequestDecideInput struct {
	BotID     string `json:"bot_id"`
	RequestID string `json:"request_id"`
	Decision  string `json:"decision,omitempty" jsonschema:"enum=approve,enum=deny,description=approve adds the destination to the policy's allow rules; deny leaves the policy as it is. Leave it out to be asked in your client (elicitation)"`
	Note      string `json:"note,omitempty" jsonschema:"description=a note for the bot about the decision; at most 1000 bytes"`
}

func (i NetworkRequestDecideInput) bot() string { return i.BotID }

// NetworkRequestDecideOutput is the request after the call.
type NetworkRequestDecideOutput struct {
	Request NetworkAccessRequestInfo `json:"request"`
	// Decided is false when the caller was asked and gave no answer.
	Decided bool `json:"decided" jsonschema:"description=false when the decision was asked in the client and the person declined or cancelled: the request stays pending"`
	Asked   bool `json:"asked" jsonschema:"description=true when the decision came from the client through elicitation"`
	// Policy is the policy in force after an approval.
	Policy *NetworkPolicy `json:"policy,omitempty" jsonschema:"description=after an approval: the policy in force"`
}

func networkTools(h handlers) []server.ServerTool {
	return []server.ServerTool{
		define("network_get", "Get network",
			"The workspace's network: mode (none, bridge or host), address and gateway, egress policy, the destinations and names refused recently with counts, "+
				"and the bot's network access requests with their decisions.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead, h.networkGet),
		define("network_policy_set", "Set network policy",
			"Replace the workspace's whole egress policy: default allow or deny, plus allow and deny rules that name a domain (example.com, *.example.com) "+
				"or a CIDR, optionally limited to ports. Deny rules win over allow rules; cloud metadata addresses stay refused unless a rule names them. "+
				"A bridge workspace gets it at once (connections already open go on); other modes keep it for when the workspace is on the bridge.",
			hints{destructive: true, idempotent: true}, auth.ScopeManage, h.networkPolicySet),
		define("network_mode_set", "Set network mode",
			"Change the workspace's network mode: none (loopback only), bridge (own address on berth's bridge with DNS, under the egress policy) "+
				"or host (the host's network, without isolation or policy; admin scope only). It takes effect at the workspace's next start: a running "+
				"workspace keeps its network until workspace_stop and workspace_start. The egress policy is kept across modes.",
			hints{destructive: true, idempotent: true}, auth.ScopeManage, h.networkModeSet),
		define("network_access_request", "Request network access",
			"Ask the operator for access to a destination (a domain or a CIDR, optionally some ports) with a reason. The request is recorded as pending "+
				"and an operator decides with network_request_decide; see the decision in network_get's access_requests. Asking again for a destination "+
				"that is pending returns the same request.",
			hints{idempotent: true}, auth.ScopeExec, h.networkAccessRequest),
		define("network_requests_list", "List network requests",
			"List bots' network access requests, oldest first: of one bot, or (without bot_id) of every bot the token may manage; optionally only one status.",
			hints{readOnly: true, idempotent: true}, auth.ScopeManage, h.networkRequestsList),
		define("network_request_decide", "Decide a network request",
			"Approve or deny a pending network access request, with an optional note for the bot. Approving adds the destination to the workspace's allow rules "+
				"(applied at once, as with network_policy_set); denying leaves the policy unchanged. Without a decision, berth asks you in your client "+
				"(elicitation) when it supports that.",
			hints{}, auth.ScopeManage, h.networkRequestDecide),
	}
}

func (h handlers) networkGet(ctx context.Context, _ *call, in BotInput) (NetworkGetOutput, string, error) {
	info, err := h.Manager.NetworkInfo(ctx, in.BotID)
	if err != nil {
		return NetworkGetOutput{}, "", err
	}
	reqs, err := h.Manager.NetworkRequests(in.BotID)
	if err != nil {
		return NetworkGetOutput{}, "", err
	}
	out := NetworkGetOutput{
		Mode: info.Mode, IP: info.IP, Gateway: info.Gateway, Policy: networkPolicy(info.Policy),
		DeniedDestinations: []DeniedDestinationInfo{}, DeniedNames: []DeniedNameInfo{}, AccessRequests: []NetworkAccessRequestInfo{},
	}
	for _, d := range info.DeniedDestinations {
		out.DeniedDestinations = append(out.DeniedDestinations, DeniedDestinationInfo{
			Addr: d.Addr.String(), Proto: d.Proto, Port: int(d.Port), Packets: d.Packets, LastSeen: d.LastSeen,
		})
	}
	for _, d := range info.DeniedNames {
		out.DeniedNames = append(out.DeniedNames, DeniedNameInfo{Name: d.Name, Type: d.Type, Reason: d.Reason, Count: d.Count, Last: d.Last})
	}
	for _, r := range reqs {
		out.AccessRequests = append(out.AccessRequests, accessRequestInfo(r))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "network %s", info.Mode)
	if info.IP != "" {
		fmt.Fprintf(&b, ", address %s, gateway %s", info.IP, info.Gateway)
	}
	fmt.Fprintf(&b, "\npolicy: %s", describePolicy(info.Policy))
	for _, d := range out.DeniedDestinations {
		fmt.Fprintf(&b, "\ndenied %s %s", d.Proto, d.Addr)
		if d.Port != 0 {
			fmt.Fprintf(&b, " port %d", d.Port)
		}
		fmt.Fprintf(&b, ": %d packet(s)", d.Packets)
	}
	for _, d := range out.DeniedNames {
		fmt.Fprintf(&b, "\ndenied name %s: %d time(s) (%s)", d.Name, d.Count, d.Reason)
	}
	for _, r := range reqs {
		fmt.Fprintf(&b, "\nrequest %s", describeRequest(r))
	}
	return out, b.String(), nil
}

func describePolicy(p netpolicy.Policy) string {
	s := "default " + string(p.Default)
	list := func(name string, rs []netpolicy.Rule) {
		if len(rs) == 0 {
			return
		}
		var parts []string
		for _, r := range rs {
			parts = append(parts, networkRule(r).String())
		}
		s += "; " + name + " " + strings.Join(parts, ", ")
	}
	list("allow", p.Allow)
	list("deny", p.Deny)
	return s
}

func (r NetworkRule) String() string {
	s := r.Domain + r.CIDR
	if len(r.Ports) > 0 {
		s += " ports " + strings.Join(r.Ports, ",")
	}
	return s
}

func describeRequest(r workspace.NetworkRequest) string {
	s := fmt.Sprintf("%s for %s: %s", r.ID, r.Destination(), r.Status)
	if r.DecidedBy != "" {
		s += " by " + r.DecidedBy
	}
	if r.Note != "" {
		s += fmt.Sprintf(" (%q)", r.Note)
	}
	return s
}

func (h handlers) networkPolicySet(ctx context.Context, _ *call, in NetworkPolicySetInput) (NetworkPolicySetOutput, string, error) {
	pol := netpolicy.Policy{Default: netpolicy.Default(in.Default)}
	for _, r := range in.Allow {
		pol.Allow = append(pol.Allow, r.rule())
	}
	for _, r := range in.Deny {
		pol.Deny = append(pol.Deny, r.rule())
	}
	stored, err := h.Manager.SetNetworkPolicy(ctx, in.BotID, pol)
	if err != nil {
		return NetworkPolicySetOutput{}, "", err
	}
	out := NetworkPolicySetOutput{Policy: networkPolicy(stored)}
	summary := "policy of " + in.BotID + " set: " + describePolicy(stored)
	if info, err := h.Manager.NetworkInfo(ctx, in.BotID); err == nil {
		out.Mode = info.Mode
		out.Enforced = info.Mode == workspace.NetworkBridge && info.IP != ""
	}
	if out.Enforced {
		summary += "\napplied now"
	} else {
		summary += "\nkept for when the workspace runs on the bridge (network " + out.Mode + ")"
	}
	return out, summary, nil
}

func (h handlers) networkModeSet(ctx context.Context, _ *call, in NetworkModeSetInput) (NetworkModeSetOutput, string, error) {
	before, err := h.Manager.Get(ctx, in.BotID)
	if err != nil {
		return NetworkModeSetOutput{}, "", err
	}
	// Host networking escapes the policy and the isolation: admins only,
	// as at workspace_create.
	allowHost := auth.FromContext(ctx).Allow(auth.ScopeAdmin, "") == nil
	if err := h.Manager.SetNetworkMode(ctx, in.BotID, in.Mode, allowHost); err != nil {
		return NetworkModeSetOutput{}, "", err
	}
	out := NetworkModeSetOutput{Mode: in.Mode, Previous: before.Network,
		RestartNeeded: before.Network != in.Mode && before.Status != workspace.StatusStopped}
	summary := fmt.Sprintf("network of %s set to %s (was %s)", in.BotID, in.Mode, before.Network)
	switch {
	case out.RestartNeeded:
		summary += "\nit takes effect at the next start: the running workspace keeps its current network until workspace_stop and workspace_start"
	case before.Network == in.Mode:
		summary += "\nunchanged"
	default:
		summary += "\nit takes effect at the next start (workspace_start)"
	}
	return out, summary, nil
}

func (h handlers) networkAccessRequest(ctx context.Context, _ *call, in NetworkAccessRequestInput) (NetworkAccessRequestOutput, string, error) {
	req, existing, err := h.Manager.RequestNetworkAccess(ctx, in.BotID,
		netpolicy.Rule{Domain: in.Domain, CIDR: in.CIDR, Ports: in.Ports}, in.Reason, auth.FromContext(ctx).Name)
	if err != nil {
		return NetworkAccessRequestOutput{}, "", err
	}
	summary := fmt.Sprintf("request %s for %s is pending; an operator decides it (see network_get's access_requests)", req.ID, req.Destination())
	if existing {
		summary = "already requested: " + summary
	}
	return NetworkAccessRequestOutput{Request: accessRequestInfo(req), Existing: existing}, summary, nil
}

func (h handlers) networkRequestsList(ctx context.Context, _ *call, in NetworkRequestsListInput) (NetworkRequestsListOutput, string, error) {
	bots := []string{in.BotID}
	if in.BotID == "" {
		all, err := h.Manager.NetworkRequestBots()
		if err != nil {
			return NetworkRequestsListOutput{}, "", err
		}
		// Only the bots the caller may manage: another tenant's requests
		// (destinations, reasons) are not the caller's to read.
		p := auth.FromContext(ctx)
		bots = slices.DeleteFunc(all, func(b string) bool { return p.Allow(auth.ScopeManage, b) != nil })
		slices.Sort(bots)
	}
	out := NetworkRequestsListOutput{Requests: []NetworkAccessRequestInfo{}}
	var lines []string
	for _, bot := range bots {
		reqs, err := h.Manager.NetworkRequests(bot)
		if err != nil {
			return NetworkRequestsListOutput{}, "", err
		}
		for _, r := range reqs {
			if in.Status != "" && r.Status != in.Status {
				continue
			}
			out.Requests = append(out.Requests, accessRequestInfo(r))
			lines = append(lines, fmt.Sprintf("%s of %s (%q)", describeRequest(r), r.Bot, r.Reason))
		}
	}
	return out, fmt.Sprintf("%d network request(s)", len(out.Requests)) + prefixLines(lines), nil
}

func prefixLines(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return "\n" + strings.Join(lines, "\n")
}

func (h handlers) networkRequestDecide(ctx context.Context, c *call, in NetworkRequestDecideInput) (NetworkRequestDecideOutput, string, error) {
	var out NetworkRequestDecideOutput
	d := workspace.NetworkDecision{Note: in.Note, By: auth.FromContext(ctx).Name}
	switch in.Decision {
	case "approve":
		d.Approve = true
	case "deny":
	case "":
		req, err := h.Manager.NetworkRequestByID(in.BotID, in.RequestID)
		if err != nil {
			return out, "", err
		}
		if req.Status != workspace.NetworkRequestPending {
			return out, "", fmt.Errorf("network request %s of %s was already %s by %s", req.ID, req.Bot, req.Status, req.DecidedBy)
		}
		answered, err := elicitDecision(ctx, c, req, &d)
		if err != nil {
			return out, "", err
		}
		out.Asked = true
		if !answered {
			out.Request = accessRequestInfo(req)
			return out, fmt.Sprintf("no decision was given: request %s for %s stays pending", req.ID, req.Destination()), nil
		}
	default:
		return out, "", fmt.Errorf(`decision %q: use "approve" or "deny" (or leave it out to be asked in your client)`, in.Decision)
	}
	req, pol, err := h.Manager.DecideNetworkRequest(ctx, in.BotID, in.RequestID, d)
	if err != nil {
		return out, "", err
	}
	out.Request, out.Decided = accessRequestInfo(req), true
	summary := fmt.Sprintf("request %s for %s of %s: %s", req.ID, req.Destination(), req.Bot, req.Status)
	if d.Approve {
		p := networkPolicy(pol)
		out.Policy = &p
		summary += "\npolicy now: " + describePolicy(pol)
	}
	return out, summary, nil
}

// errNoElicitation is the answer to a decide without a decision from a
// client that cannot be asked.
var errNoElicitation = errors.New(`decision is required: "approve" or "deny" (your client did not declare the elicitation capability, so berth cannot ask you there)`)

// decisionAnswer names the answer to the decision form.
const decisionAnswer = "decision"

// elicitDecision asks the caller's client whether to approve req, filling
// d. It reports false when the person declined or cancelled.
func elicitDecision(ctx context.Context, c *call, req workspace.NetworkRequest, d *workspace.NetworkDecision) (bool, error) {
	if !c.answered(decisionAnswer) {
		if !c.canElicit(ctx) {
			return false, errNoElicitation
		}
		return false, c.ask(decisionAnswer, fmt.Sprintf("Bot %s asks for network access to %s.\nReason: %s\nApprove?", req.Bot, req.Destination(), req.Reason),
			map[string]any{
				"type": "object",
				"properties": map[string]any{
					"approve": map[string]any{"type": "boolean", "title": "Approve",
						"description": "allow " + req.Destination() + " for " + req.Bot + " (adds an allow rule to its policy)"},
					"note": map[string]any{"type": "string", "title": "Note", "description": "optional, shown to the bot", "maxLength": workspace.MaxNetworkRequestText},
				},
				"required": []string{"approve"},
			})
	}
	content, answered := c.answer(decisionAnswer)
	if !answered {
		return false, nil
	}
	approve, ok := content["approve"].(bool)
	if !ok {
		return false, fmt.Errorf("your client's answer has no boolean approve: %v", content)
	}
	d.Approve = approve
	if note, ok := content["note"].(string); ok && d.Note == "" {
		d.Note = note
	}
	return true, nil
}
