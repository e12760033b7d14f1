package transports

import (
	"context"
	"net/http"
	"net/http/httputil"
	"testing"

	"github.com/berth-dev/berth/console"
)

// TestPortsKeepTheConsoleApart: a bot's server behind the path route of
// its ports never gets the console's session cookie, and its service
// worker cannot claim berth's whole origin (the console's pages).
func TestPortsKeepTheConsoleApart(t *testing.T) {
	pp := &portProxy{}
	target := portTarget{bot: "web", port: 8080, prefix: "/bots/web/ports/8080"}
	ctx := context.WithValue(context.Background(), portTargetKey{}, target)
	in, _ := http.NewRequestWithContext(ctx, "GET", "http://berth.test/bots/web/ports/8080/", nil)
	in.Header.Set("Cookie", console.CookieName+"=session-id; app=1")
	pr := &httputil.ProxyRequest{In: in, Out: in.Clone(ctx)}
	pp.rewrite(pr)
	if got := pr.Out.Header.Get("Cookie"); got != "app=1" {
		t.Fatalf("the bot's server got Cookie %q", got)
	}
	res := &http.Response{Header: http.Header{"Service-Worker-Allowed": {"/"}}, Request: in}
	if err := pp.modifyResponse(res); err != nil || res.Header.Get("Service-Worker-Allowed") != "" {
		t.Fatalf("Service-Worker-Allowed passed: %v %v", res.Header, err)
	}
}
