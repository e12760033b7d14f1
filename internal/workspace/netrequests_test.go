package workspace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/netpolicy"
	"github.com/containerd/errdefs"
)

func TestNormalizeNetworkRule(t *testing.T) {
	got, err := NormalizeNetworkRule(netpolicy.Rule{Domain: "API.Example.com.", Ports: []string{"443", " 8000-8100"}})
	if err != nil || got.Domain != "api.example.com" || strings.Join(got.Ports, ",") != "443,8000-8100" {
		t.Fatalf("got %+v, %v", got, err)
	}
	if got, err := NormalizeNetworkRule(netpolicy.Rule{CIDR: "10.1.2.3"}); err != nil || got.CIDR != "10.1.2.3/32" {
		t.Fatalf("got %+v, %v", got, err)
	}
	for name, tc := range map[string]struct {
		rule netpolicy.Rule
		want string
	}{
		"bad cidr":     {netpolicy.Rule{CIDR: "10.0.0.300/8"}, "is not a prefix"},
		"host bits":    {netpolicy.Rule{CIDR: "10.1.2.3/8"}, "host bits set"},
		"bad wildcard": {netpolicy.Rule{Domain: "a.*.example.com"}, "wildcard is allowed only"},
		"port 0":       {netpolicy.Rule{Domain: "example.com", Ports: []string{"0"}}, "ports are 1-65535"},
		"port 70000":   {netpolicy.Rule{Domain: "example.com", Ports: []string{"70000"}}, "ports are 1-65535"},
		"both":         {netpolicy.Rule{Domain: "example.com", CIDR: "10.0.0.0/8"}, "one destination at a time"},
		"neither":      {netpolicy.Rule{}, "no destination"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NormalizeNetworkRule(tc.rule)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an invalid-argument error saying %q", err, tc.want)
			}
		})
	}
}

func TestNetworkRequests(t *testing.T) {
	e := newFakeEnv(t)
	ctx := t.Context()
	e.create(t, "bot1")

	if _, _, err := e.m.RequestNetworkAccess(ctx, "nobody", netpolicy.Rule{Domain: "example.com"}, "docs", "t"); !errdefs.IsNotFound(err) {
		t.Fatalf("request for a bot without a workspace: %v", err)
	}
	if _, _, err := e.m.RequestNetworkAccess(ctx, "bot1", netpolicy.Rule{Domain: "example.com"}, "  ", "t"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("request without a reason: %v", err)
	}
	r, existing, err := e.m.RequestNetworkAccess(ctx, "bot1", netpolicy.Rule{Domain: "Example.com", Ports: []string{"443"}}, "docs", "token bot")
	if err != nil || existing || r.Status != NetworkRequestPending || r.Rule.Domain != "example.com" || r.RequestedBy != "token bot" {
		t.Fatalf("request: %+v %v %v", r, existing, err)
	}
	again, existing, err := e.m.RequestNetworkAccess(ctx, "bot1", netpolicy.Rule{Domain: "example.com", Ports: []string{"443"}}, "again", "token bot")
	if err != nil || !existing || again.ID != r.ID {
		t.Fatalf("asking again for the same destination made another request: %+v %v %v", again, existing, err)
	}

	t.Run("persisted", func(t *testing.T) {
		// A restarted berth reads the same requests.
		m2 := e.newManager(t)
		got, err := m2.NetworkRequestByID("bot1", r.ID)
		if err != nil || got.Reason != "docs" || got.Status != NetworkRequestPending {
			t.Fatalf("after restart: %+v %v", got, err)
		}
		bots, err := m2.NetworkRequestBots()
		if err != nil || len(bots) != 1 || bots[0] != "bot1" {
			t.Fatalf("bots: %v %v", bots, err)
		}
		info, err := os.Stat(e.m.netRequestsPath("bot1"))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("requests file: %v %v", info, err)
		}
	})

	t.Run("decide", func(t *testing.T) {
		var allowed []netpolicy.Rule
		allow := func(_ context.Context, bot string, rule netpolicy.Rule) (netpolicy.Policy, error) {
			allowed = append(allowed, rule)
			return netpolicy.Policy{Default: netpolicy.Deny, Allow: allowed}, nil
		}
		got, pol, err := e.m.decideNetworkRequest(ctx, "bot1", r.ID, NetworkDecision{Approve: true, Note: "ok", By: "op"}, allow)
		if err != nil || got.Status != NetworkRequestApproved || got.DecidedBy != "op" || got.Note != "ok" || got.DecidedAt == nil {
			t.Fatalf("approve: %+v %v", got, err)
		}
		if len(allowed) != 1 || allowed[0].Domain != "example.com" || len(pol.Allow) != 1 {
			t.Fatalf("allowed %+v, policy %+v", allowed, pol)
		}
		if _, _, err := e.m.decideNetworkRequest(ctx, "bot1", r.ID, NetworkDecision{By: "op"}, allow); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("deciding twice: %v", err)
		}
		if _, _, err := e.m.decideNetworkRequest(ctx, "bot1", "nr-nothing", NetworkDecision{By: "op"}, allow); !errdefs.IsNotFound(err) {
			t.Fatalf("deciding an unknown request: %v", err)
		}

		// A failed approval leaves the request pending.
		r2, _, err := e.m.RequestNetworkAccess(ctx, "bot1", netpolicy.Rule{CIDR: "10.0.0.0/8"}, "lan", "token bot")
		if err != nil {
			t.Fatal(err)
		}
		fail := func(context.Context, string, netpolicy.Rule) (netpolicy.Policy, error) {
			return netpolicy.Policy{}, errors.New("policy full")
		}
		if _, _, err := e.m.decideNetworkRequest(ctx, "bot1", r2.ID, NetworkDecision{Approve: true}, fail); err == nil || !strings.Contains(err.Error(), "stays pending") {
			t.Fatalf("failed approval: %v", err)
		}
		denied, _, err := e.m.decideNetworkRequest(ctx, "bot1", r2.ID, NetworkDecision{Note: "no"}, fail)
		if err != nil || denied.Status != NetworkRequestDenied || len(allowed) != 1 {
			t.Fatalf("deny: %+v %v (allowed %v)", denied, err, allowed)
		}
	})

	t.Run("caps", func(t *testing.T) {
		e.create(t, "bot2")
		for i := range MaxPendingNetworkRequests {
			if _, _, err := e.m.RequestNetworkAccess(ctx, "bot2", netpolicy.Rule{CIDR: fmt.Sprintf("10.0.%d.0/24", i)}, "r", ""); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		if _, _, err := e.m.RequestNetworkAccess(ctx, "bot2", netpolicy.Rule{CIDR: "10.1.0.0/24"}, "r", ""); !errdefs.IsResourceExhausted(err) {
			t.Fatalf("request beyond the pending cap: %v", err)
		}
		// Decided requests make room, and the oldest decided ones are
		// forgotten beyond the total cap; pending ones never are.
		deny := func(context.Context, string, netpolicy.Rule) (netpolicy.Policy, error) {
			return netpolicy.Policy{}, nil
		}
		for n := 0; n < MaxNetworkRequests+10; n++ {
			reqs, err := e.m.NetworkRequests("bot2")
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range reqs {
				if q.Status == NetworkRequestPending {
					if _, _, err := e.m.decideNetworkRequest(ctx, "bot2", q.ID, NetworkDecision{}, deny); err != nil {
						t.Fatal(err)
					}
					break
				}
			}
			if _, _, err := e.m.RequestNetworkAccess(ctx, "bot2", netpolicy.Rule{CIDR: fmt.Sprintf("10.2.%d.0/24", n)}, "r", ""); err != nil {
				t.Fatalf("request %d after a decision: %v", n, err)
			}
		}
		reqs, err := e.m.NetworkRequests("bot2")
		if err != nil {
			t.Fatal(err)
		}
		pending := 0
		for _, q := range reqs {
			if q.Status == NetworkRequestPending {
				pending++
			}
		}
		if len(reqs) != MaxNetworkRequests || pending != MaxPendingNetworkRequests {
			t.Fatalf("%d requests kept (%d pending), want %d (%d)", len(reqs), pending, MaxNetworkRequests, MaxPendingNetworkRequests)
		}
		if last := reqs[len(reqs)-1]; last.Rule.CIDR != fmt.Sprintf("10.2.%d.0/24", MaxNetworkRequests+9) {
			t.Fatalf("newest request is not last: %+v", last)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := e.delete(t, "bot1", DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(e.m.netRequestsPath("bot1")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("requests file left after delete: %v", err)
		}
		// A new workspace of the same bot starts with no requests.
		e.create(t, "bot1")
		if reqs, err := e.m.NetworkRequests("bot1"); err != nil || len(reqs) != 0 {
			t.Fatalf("new workspace inherited requests: %+v %v", reqs, err)
		}
	})
}
