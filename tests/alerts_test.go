package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

// webhookAlert is what the test's webhook keeps of an alert (auditsvc/alerts.Alert).
type webhookAlert struct {
	Rule   string            `json:"rule"`
	Alert  string            `json:"alert"`
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
}

// TestAlertDenialSpike: `gatehouse up` with an alerts: section fires the policy-denial spike
// to the webhook, once per tenant within the cooldown, however long the burst; the log and
// /metrics say so too.
func TestAlertDenialSpike(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []webhookAlert
	var bad []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var a webhookAlert
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &a) != nil {
			bad = append(bad, r.Method+" "+string(body))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got = append(got, a)
	}))
	t.Cleanup(hook.Close)
	alerts := func() []webhookAlert {
		mu.Lock()
		defer mu.Unlock()
		return append([]webhookAlert(nil), got...)
	}

	policies := policyDir(t, map[string]string{"no-add.cedar": `@id("no-add")
forbid (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.name == "add" };
`})
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntryFor("echo", []string{"default", "research"}, echo) +
			"alerts:\n  webhook: {url: \"" + hook.URL + "/alerts\", timeout: 5s}\n" +
			"  rules:\n    policy_denial_spike: {threshold: 5, window: 10m, cooldown: 1h}\n",
		Args: []string{"--policy-dir", policies},
	})
	deny := func(c rawClient, n int) {
		t.Helper()
		sid := c.initialize("2025-06-18")
		sess := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
		// An allowed call between the denials: a normal workload is not a spike.
		if r := c.post(echoCall, sess); r.status != http.StatusOK {
			t.Fatalf("echo: %d %s", r.status, r.body)
		}
		for range n {
			r := c.post(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}`, sess)
			if code, _, _ := r.rpcError(); r.status != http.StatusOK || code != -32001 {
				t.Fatalf("add: %d %d %s, want a denial (-32001)", r.status, code, r.body)
			}
		}
	}
	// Four denials: below the threshold.
	dev := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	deny(dev, 4)
	// The scripted burst: twenty more, within the window and the cooldown.
	deny(dev, 20)
	testsync.WaitFor(t, 30*time.Second, "the webhook receives the spike of tenant default", func() bool { return len(alerts()) >= 1 })
	// Another tenant's spike, after the burst: the records are followed in commit order and
	// the webhook is sent in order, so when this one arrives every denial of the burst has
	// been evaluated.
	deny(rawClient{t: t, url: g.Endpoint("echo"), token: g.NewToken(t, "bob", "research")}, 5)
	testsync.WaitFor(t, 30*time.Second, "the webhook receives the spike of tenant research", func() bool { return len(alerts()) >= 2 })

	all := alerts()
	perTenant := map[string]int{}
	for _, a := range all {
		if a.Rule != "policy_denial_spike" || a.Alert != "GatehousePolicyDenialSpike" || a.Value < 5 {
			t.Errorf("alert %+v", a)
		}
		perTenant[a.Labels["tenant"]]++
	}
	if perTenant["default"] != 1 || perTenant["research"] != 1 || len(all) != 2 {
		t.Errorf("alerts per tenant %v (%d in all), want one each: the burst fires once within the cooldown", perTenant, len(all))
	}
	if len(bad) != 0 {
		t.Errorf("the webhook got requests that were not a JSON POST of an alert: %q", bad)
	}
	if n := sum(scrape(t, g.Base), "gatehouse_alerts_fired_total", map[string]string{"rule": "policy_denial_spike"}); n != 2 {
		t.Errorf("gatehouse_alerts_fired_total{rule=policy_denial_spike} = %v, want 2", n)
	}
	if logs := g.Logs(); strings.Count(logs, "alert: Policy denials for tenant default spiked") != 1 {
		t.Errorf("want one WARN line of the alert for tenant default in the logs:\n%s", logs)
	}
}
