package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The network access-request flow over HTTP with scoped tokens: the bot's
// own token asks, an operator's token lists and decides (once through
// elicitation answered by the operator's client, once plainly, once with a
// denial), and the bot sees the outcome in network_get. The workspace is
// in network mode none: the policy is stored whatever the mode, and
// enforcement is tested with the bridge elsewhere.

const (
	netBot        = "netbot"
	netOtherBot   = "netother"
	netBotToken   = "net-bot-0123456789abcdef"   // netbot: read, exec
	netOperToken  = "net-oper-0123456789abcdef"  // netbot: read, manage
	netOtherToken = "net-other-0123456789abcdef" // netother: every scope but admin
)

type netRule struct {
	Domain string   `json:"domain,omitempty"`
	CIDR   string   `json:"cidr,omitempty"`
	Ports  []string `json:"ports,omitempty"`
}

type netRequest struct {
	ID          string  `json:"id"`
	BotID       string  `json:"bot_id"`
	Destination netRule `json:"destination"`
	Reason      string  `json:"reason"`
	Status      string  `json:"status"`
	DecidedBy   string  `json:"decided_by"`
	Note        string  `json:"note"`
}

type netPolicy struct {
	Default string    `json:"default"`
	Allow   []netRule `json:"allow"`
	Deny    []netRule `json:"deny"`
}

type netGet struct {
	Mode           string       `json:"mode"`
	Policy         netPolicy    `json:"policy"`
	AccessRequests []netRequest `json:"access_requests"`
}

type netDecide struct {
	Request netRequest `json:"request"`
	Decided bool       `json:"decided"`
	Asked   bool       `json:"asked"`
	Policy  *netPolicy `json:"policy"`
}

// decisionAnswer is what an operator's client answers when asked for a
// decision; asked counts the times it was.
type decisionAnswer struct {
	approve bool
	note    string
	asked   atomic.Int32
	message atomic.Value
}

func (a *decisionAnswer) Elicit(_ context.Context, req mcpgo.ElicitationRequest) (*mcpgo.ElicitationResult, error) {
	a.asked.Add(1)
	a.message.Store(req.Params.Message)
	return &mcpgo.ElicitationResult{ElicitationResponse: mcpgo.ElicitationResponse{
		Action: mcpgo.ElicitationResponseActionAccept, Content: map[string]any{"approve": a.approve, "note": a.note},
	}}, nil
}

// netClient connects one of the two MCP clients to url with token; a
// non-nil answer makes it declare elicitation and answer with it.
func (e *env) netClient(kind, url, token string, answer *decisionAnswer) mcpClient {
	e.t.Helper()
	hc := &http.Client{Transport: bearer{token: token}}
	if kind == "mcpgo" {
		tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPBasicClient(hc))
		if err != nil {
			e.t.Fatal(err)
		}
		var opts []mcpclient.ClientOption
		if answer != nil {
			opts = append(opts, mcpclient.WithElicitationHandler(answer))
		}
		return newMcpgoClient(e.t, mcpclient.NewClient(tr, opts...))
	}
	return e.connectSDK(&sdk.StreamableClientTransport{Endpoint: url, HTTPClient: hc}, func(o *sdk.ClientOptions) {
		if answer == nil {
			return
		}
		o.ElicitationHandler = func(_ context.Context, req *sdk.ElicitRequest) (*sdk.ElicitResult, error) {
			answer.asked.Add(1)
			answer.message.Store(req.Params.Message)
			return &sdk.ElicitResult{Action: "accept", Content: map[string]any{"approve": answer.approve, "note": answer.note}}, nil
		}
	})
}

// fresh zeroes *v for a decode: JSON leaves fields the answer omits as
// they were, and the variables here are reused.
func fresh[T any](v *T) *T {
	*v = *new(T)
	return v
}

func wantToolError(t *testing.T, res *toolResult, want string) {
	t.Helper()
	if !res.IsError || !strings.Contains(res.Text, want) {
		t.Errorf("got %+v, want an error saying %q", res, want)
	}
}

func TestNetworkTools(t *testing.T) {
	e := newEnv(t)
	tokens := fmt.Sprintf(`tokens:
  - {name: bot, token: %s, bots: [%s], scopes: [read, exec]}
  - {name: operator, token: %s, bots: [%s], scopes: [read, manage]}
  - {name: other, token: %s, bots: [%s], scopes: [read, write, exec, manage]}
`, netBotToken, netBot, netOperToken, netBot, netOtherToken, netOtherBot)
	e.useTokens(tokens)
	b := e.serveHTTP()
	admin := e.httpMcpgo(b)
	for _, bot := range []string{netBot, netOtherBot} {
		mustCall(t, admin, "workspace_create", map[string]any{"bot_id": bot}).decode(t, &struct{}{})
	}

	for _, kind := range []string{"mcpgo", "gosdk"} {
		t.Run(kind, func(t *testing.T) {
			bot := e.netClient(kind, b.URL, netBotToken, nil)
			yes := &decisionAnswer{approve: true, note: "approved in the client"}
			asking := e.netClient(kind, b.URL, netOperToken, yes)
			plain := e.netClient(kind, b.URL, netOperToken, nil)
			host := kind + ".example.com"

			// The bot asks; asking again returns the same request.
			var req struct {
				Request  netRequest `json:"request"`
				Existing bool       `json:"existing"`
			}
			mustCall(t, bot, "network_access_request", map[string]any{
				"bot_id": netBot, "domain": strings.ToUpper(host), "ports": []string{"443"}, "reason": "fetch the " + kind + " docs",
			}).decode(t, fresh(&req))
			if req.Request.Status != "pending" || req.Request.ID == "" || req.Request.Destination.Domain != host || req.Existing {
				t.Fatalf("request: %+v", req)
			}
			first := req.Request.ID
			mustCall(t, bot, "network_access_request", map[string]any{
				"bot_id": netBot, "domain": host, "ports": []string{"443"}, "reason": "again",
			}).decode(t, fresh(&req))
			if req.Request.ID != first || !req.Existing {
				t.Fatalf("asking again: %+v", req)
			}

			// The operator lists it.
			var list struct {
				Requests []netRequest `json:"requests"`
			}
			mustCall(t, plain, "network_requests_list", map[string]any{"status": "pending"}).decode(t, fresh(&list))
			if !slices.ContainsFunc(list.Requests, func(r netRequest) bool { return r.ID == first && r.Reason == "fetch the "+kind+" docs" }) {
				t.Fatalf("pending list lacks %s: %+v", first, list)
			}

			// A client that cannot be asked must decide explicitly.
			wantToolError(t, mustCall(t, plain, "network_request_decide", map[string]any{"bot_id": netBot, "request_id": first}), "elicitation")
			// The bot may not decide its own request.
			if res := mustCall(t, bot, "network_request_decide", map[string]any{"bot_id": netBot, "request_id": first, "decision": "approve"}); !isDenial(res, nil) {
				t.Fatalf("the bot decided its own request: %+v", res)
			}

			// Approved through elicitation in the operator's client.
			var dec netDecide
			mustCall(t, asking, "network_request_decide", map[string]any{"bot_id": netBot, "request_id": first}).decode(t, fresh(&dec))
			if yes.asked.Load() != 1 || !dec.Asked || !dec.Decided || dec.Request.Status != "approved" || dec.Request.Note != yes.note || dec.Request.DecidedBy == "" {
				t.Fatalf("elicited decision (asked %d): %+v", yes.asked.Load(), dec)
			}
			if msg, _ := yes.message.Load().(string); !strings.Contains(msg, host) || !strings.Contains(msg, "fetch the "+kind+" docs") {
				t.Errorf("the question does not name the destination and reason: %q", msg)
			}
			wantToolError(t, mustCall(t, plain, "network_request_decide", map[string]any{"bot_id": netBot, "request_id": first, "decision": "deny"}), "already approved")

			// Approved plainly.
			cidr := map[string]string{"mcpgo": "203.0.113.0/28", "gosdk": "203.0.113.16/28"}[kind]
			mustCall(t, bot, "network_access_request", map[string]any{"bot_id": netBot, "cidr": cidr, "reason": "a test range"}).decode(t, fresh(&req))
			mustCall(t, plain, "network_request_decide", map[string]any{"bot_id": netBot, "request_id": req.Request.ID, "decision": "approve"}).decode(t, fresh(&dec))
			if dec.Asked || dec.Request.Status != "approved" || dec.Policy == nil {
				t.Fatalf("plain approval: %+v", dec)
			}

			// The bot sees both in its policy and its requests' decisions.
			var got netGet
			mustCall(t, bot, "network_get", map[string]any{"bot_id": netBot}).decode(t, fresh(&got))
			hasRule := func(p netPolicy, r netRule) bool {
				return slices.ContainsFunc(p.Allow, func(a netRule) bool {
					return a.Domain == r.Domain && a.CIDR == r.CIDR && slices.Equal(a.Ports, r.Ports)
				})
			}
			if got.Mode == "" || !hasRule(got.Policy, netRule{Domain: host, Ports: []string{"443"}}) || !hasRule(got.Policy, netRule{CIDR: cidr}) {
				t.Fatalf("network_get after approvals: %+v", got)
			}
			i := slices.IndexFunc(got.AccessRequests, func(r netRequest) bool { return r.ID == first })
			if i < 0 || got.AccessRequests[i].Status != "approved" || got.AccessRequests[i].Note != yes.note {
				t.Fatalf("the bot does not see the decision: %+v", got.AccessRequests)
			}

			// A denial leaves the policy as it was.
			before := got.Policy
			mustCall(t, bot, "network_access_request", map[string]any{"bot_id": netBot, "domain": "*.denied-" + kind + ".example", "reason": "everything"}).decode(t, fresh(&req))
			mustCall(t, plain, "network_request_decide", map[string]any{"bot_id": netBot, "request_id": req.Request.ID, "decision": "deny", "note": "too broad"}).decode(t, fresh(&dec))
			if dec.Request.Status != "denied" || dec.Policy != nil {
				t.Fatalf("denial: %+v", dec)
			}
			mustCall(t, bot, "network_get", map[string]any{"bot_id": netBot}).decode(t, fresh(&got))
			if fmt.Sprint(got.Policy) != fmt.Sprint(before) {
				t.Fatalf("a denial changed the policy: %+v, was %+v", got.Policy, before)
			}
			i = slices.IndexFunc(got.AccessRequests, func(r netRequest) bool { return r.ID == req.Request.ID })
			if i < 0 || got.AccessRequests[i].Status != "denied" || got.AccessRequests[i].Note != "too broad" {
				t.Fatalf("the bot does not see the denial: %+v", got.AccessRequests)
			}

			// Bad input is refused with netpolicy's messages.
			for _, tc := range []struct {
				args map[string]any
				want string
			}{
				{map[string]any{"cidr": "10.0.0.300/8"}, "is not a prefix"},
				{map[string]any{"domain": "a.*.example.com"}, "wildcard is allowed only"},
				{map[string]any{"domain": "example.com", "ports": []string{"0"}}, "ports are 1-65535"},
				{map[string]any{"domain": "example.com", "ports": []string{"70000"}}, "ports are 1-65535"},
				{map[string]any{"domain": "example.com", "cidr": "10.0.0.0/8"}, "one destination"},
				{map[string]any{"domain": "example.com", "reason": ""}, "reason is required"},
			} {
				args := map[string]any{"bot_id": netBot, "reason": "r"}
				for k, v := range tc.args {
					args[k] = v
				}
				wantToolError(t, mustCall(t, bot, "network_access_request", args), tc.want)
			}
			for _, tc := range []struct {
				rule map[string]any
				want string
			}{
				{map[string]any{"cidr": "10.0.0.300/8"}, "is not a prefix"},
				{map[string]any{"domain": "a.*.example.com"}, "wildcard is allowed only"},
				{map[string]any{"cidr": "10.0.0.0/8", "ports": []string{"0"}}, "ports are 1-65535"},
				{map[string]any{"cidr": "10.0.0.0/8", "ports": []string{"70000"}}, "ports are 1-65535"},
			} {
				wantToolError(t, mustCall(t, plain, "network_policy_set", map[string]any{
					"bot_id": netBot, "default": "deny", "allow": []any{tc.rule},
				}), tc.want)
			}
			wantToolError(t, mustCall(t, plain, "network_policy_set", map[string]any{"bot_id": netBot, "default": "maybe"}), `must be "allow" or "deny"`)
			mustCall(t, bot, "network_get", map[string]any{"bot_id": netBot}).decode(t, fresh(&got))
			if fmt.Sprint(got.Policy) != fmt.Sprint(before) {
				t.Fatalf("refused policies changed the policy: %+v", got.Policy)
			}
			// The bot cannot set its own policy.
			if res := mustCall(t, bot, "network_policy_set", map[string]any{"bot_id": netBot, "default": "allow"}); !isDenial(res, nil) {
				t.Fatalf("the bot set its policy: %+v", res)
			}

			// Another bot's token reaches none of it.
			other := e.netClient(kind, b.URL, netOtherToken, nil)
			for tool, args := range map[string]map[string]any{
				"network_get":            {"bot_id": netBot},
				"network_access_request": {"bot_id": netBot, "domain": "example.com", "reason": "r"},
				"network_requests_list":  {"bot_id": netBot},
				"network_request_decide": {"bot_id": netBot, "request_id": first, "decision": "deny"},
				"network_policy_set":     {"bot_id": netBot, "default": "allow"},
			} {
				if res := mustCall(t, other, tool, args); !isDenial(res, nil) {
					t.Errorf("%s on %s with %s's token: not refused: %+v", tool, netBot, netOtherBot, res)
				}
			}
			mustCall(t, other, "network_requests_list", map[string]any{}).decode(t, fresh(&list))
			if slices.ContainsFunc(list.Requests, func(r netRequest) bool { return r.BotID == netBot }) {
				t.Fatalf("%s's token lists %s's requests: %+v", netOtherBot, netBot, list)
			}
		})
	}

	// The policy set by hand is stored and read back normalised.
	var set struct {
		Policy netPolicy `json:"policy"`
	}
	oper := e.netClient("mcpgo", b.URL, netOperToken, nil)
	mustCall(t, oper, "network_policy_set", map[string]any{
		"bot_id": netBot, "default": "DENY", "allow": []any{map[string]any{"domain": "Example.COM.", "ports": []string{"443", "8000-8100"}}},
		"deny": []any{map[string]any{"cidr": "10.1.2.3"}},
	}).decode(t, &set)
	if set.Policy.Default != "deny" || len(set.Policy.Allow) != 1 || set.Policy.Allow[0].Domain != "example.com" ||
		len(set.Policy.Deny) != 1 || set.Policy.Deny[0].CIDR != "10.1.2.3/32" {
		t.Fatalf("stored policy: %+v", set.Policy)
	}

	// Deleting the workspace removes its requests.
	mustCall(t, admin, "workspace_delete", map[string]any{"bot_id": netBot}).decode(t, &struct{}{})
	if _, err := os.Stat(filepath.Join(e.stateDir, "netrequests", netBot+".json")); !os.IsNotExist(err) {
		t.Fatalf("requests left after delete: %v", err)
	}
}
