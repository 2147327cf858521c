package alerts_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/auditsvc/alerts"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/prometheus/client_golang/prometheus"
)

// clock is the engine's fake clock: windows and cooldowns move only when a test says so.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// receiver is a webhook on loopback that keeps every alert it accepts.
type receiver struct {
	mu     sync.Mutex
	alerts []alerts.Alert
	bad    []string // requests that were not a JSON POST
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	var a alerts.Alert
	if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &a) != nil {
		r.bad = append(r.bad, req.Method+" "+string(body))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.alerts = append(r.alerts, a)
}

func (r *receiver) got() []alerts.Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]alerts.Alert(nil), r.alerts...)
}

type harness struct {
	e     *alerts.Engine
	clock *clock
	reg   *prometheus.Registry
	log   *testsync.Buffer
}

// newHarness makes an engine of the YAML document doc (its alerts: section); "{{URL}}" in
// doc is replaced by url.
func newHarness(t *testing.T, doc, url string) *harness {
	t.Helper()
	cfg, err := alerts.Parse([]byte(strings.ReplaceAll(doc, "{{URL}}", url)))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{clock: &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, reg: prometheus.NewRegistry(), log: &testsync.Buffer{}}
	h.e, err = alerts.New(cfg, alerts.Options{
		Logger:     slog.New(slog.NewJSONHandler(h.log, nil)),
		Registerer: h.reg,
		Now:        h.clock.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.e.Close(t.Context()) })
	return h
}

func (h *harness) fired(rule string) float64 {
	return counter(h.reg, alerts.MetricFired, rule)
}

// counter reads name{rule} from reg (0 when absent).
func counter(reg *prometheus.Registry, name, rule string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "rule" && l.GetValue() == rule {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func denied(tenant string) *auditv1.Record {
	return &auditv1.Record{Tenant: tenant, Server: "echo", Method: "tools/call", Tool: "rm", Phase: auditv1.Phase_PHASE_COMPLETE,
		Outcome: auditv1.Outcome_OUTCOME_DENIED, Decision: auditv1.PolicyDecision_POLICY_DECISION_DENY}
}

func call(tenant string) *auditv1.Record {
	return &auditv1.Record{Tenant: tenant, Server: "echo", Method: "tools/call", Tool: "echo", Phase: auditv1.Phase_PHASE_DECISION,
		Decision: auditv1.PolicyDecision_POLICY_DECISION_ALLOW}
}

const spikeDoc = `
servers: []
alerts:
  webhook: {url: "{{URL}}", timeout: 2s, retries: 0}
  rules:
    policy_denial_spike: {threshold: 10, window: 1m, cooldown: 10m}
`

func TestDenialSpike(t *testing.T) {
	t.Parallel()
	rcv := &receiver{}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	h := newHarness(t, spikeDoc, srv.URL)

	// A normal workload: two denials a minute, and allowed calls, for an hour.
	for range 120 {
		h.e.Observe(denied("acme"))
		h.e.Observe(call("acme"))
		h.clock.advance(30 * time.Second)
	}
	// Quota refusals are denials, but not by policy: not counted.
	quota := denied("acme")
	quota.Decision, quota.Count = auditv1.PolicyDecision_POLICY_DECISION_ALLOW, 1000
	h.e.Observe(quota)
	if n := h.fired("policy_denial_spike"); n != 0 {
		t.Fatalf("fired %v times on a normal workload", n)
	}

	// The burst: ten denials in a minute.
	for range 10 {
		h.e.Observe(denied("acme"))
		h.clock.advance(time.Second)
	}
	if n := h.fired("policy_denial_spike"); n != 1 {
		t.Fatalf("fired %v times on a burst, want 1", n)
	}
	testsync.WaitFor(t, 10*time.Second, "the webhook receives the alert", func() bool { return len(rcv.got()) == 1 })
	a := rcv.got()[0]
	if a.Rule != "policy_denial_spike" || a.Alert != "GatehousePolicyDenialSpike" || a.Severity != "warning" ||
		a.Labels["tenant"] != "acme" || a.Value < 10 || a.Threshold != 10 || a.Window != "1m0s" || a.FiredAt.IsZero() {
		t.Errorf("webhook got %+v", a)
	}
	if !strings.Contains(h.log.String(), `"level":"WARN","msg":"alert: Policy denials for tenant acme spiked`) {
		t.Errorf("no WARN line for the alert in the log:\n%s", h.log)
	}

	// A second burst within the cooldown: not fired again; another tenant's is its own.
	for range 20 {
		h.e.Observe(denied("acme"))
		h.e.Observe(denied("globex"))
	}
	if n := h.fired("policy_denial_spike"); n != 2 {
		t.Fatalf("fired %v times, want 2 (acme once within its cooldown, globex once)", n)
	}
	// After the cooldown, a burst fires again.
	h.clock.advance(10 * time.Minute)
	for range 10 {
		h.e.Observe(denied("acme"))
	}
	if n := h.fired("policy_denial_spike"); n != 3 {
		t.Fatalf("fired %v times after the cooldown, want 3", n)
	}
	testsync.WaitFor(t, 10*time.Second, "the webhook receives three alerts", func() bool { return len(rcv.got()) == 3 })
	if len(rcv.bad) != 0 {
		t.Errorf("the webhook got requests that were not a JSON POST of an alert: %q", rcv.bad)
	}
}

func TestTenantAboveBaseline(t *testing.T) {
	t.Parallel()
	h := newHarness(t, `
alerts:
  rules:
    tenant_above_baseline: {window: 1m, windows: 5, factor: 3, min_calls: 20, cooldown: 1h}
`, "")
	// A new tenant has no baseline: a burst in its first windows does not fire.
	for range 500 {
		h.e.Observe(call("new"))
	}
	// A steady tenant: 30 calls a minute, with its ups and downs, for 20 minutes.
	for i := range 20 {
		for range 25 + i%3*5 {
			h.e.Observe(call("steady"))
			h.e.Observe(&auditv1.Record{Tenant: "steady", Server: "echo", Method: "tools/call", Phase: auditv1.Phase_PHASE_OUTCOME, Outcome: auditv1.Outcome_OUTCOME_ALLOWED})
		}
		h.clock.advance(time.Minute)
	}
	if n := h.fired("tenant_above_baseline"); n != 0 {
		t.Fatalf("fired %v times without a spike", n)
	}
	// Far above its own baseline: more than 3 × 30 in a minute.
	for range 100 {
		h.e.Observe(call("steady"))
	}
	if n := h.fired("tenant_above_baseline"); n != 1 {
		t.Fatalf("fired %v times on a spike, want 1", n)
	}
	// A tenant idle for an hour has a baseline near 0: any burst above min_calls fires,
	// one below does not.
	h.clock.advance(time.Hour)
	for range 19 {
		h.e.Observe(call("steady"))
	}
	if n := h.fired("tenant_above_baseline"); n != 1 {
		t.Fatalf("fired %v times below min_calls, want 1", n)
	}
	h.e.Observe(call("steady"))
	if n := h.fired("tenant_above_baseline"); n != 2 {
		t.Fatalf("fired %v times, want 2", n)
	}
}

func breaker(server string, open bool) *auditv1.Record {
	r := &auditv1.Record{Server: server, Method: "gatehouse/breaker", Phase: auditv1.Phase_PHASE_COMPLETE, Outcome: auditv1.Outcome_OUTCOME_ALLOWED, Error: "closed"}
	if open {
		r.Outcome, r.Error = auditv1.Outcome_OUTCOME_FAILED, "5 failures in 30s"
	}
	return r
}

func TestBreakerOpenAndQuarantine(t *testing.T) {
	t.Parallel()
	rcv := &receiver{}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	h := newHarness(t, `
alerts:
  webhook: {url: "{{URL}}"}
  rules:
    breaker_open: {cooldown: 5m}
    tool_quarantined: {cooldown: 1h}
`, srv.URL)
	// Half-open and closed transitions, calls and approvals: nothing fires.
	h.e.Observe(breaker("fs", false))
	h.e.Observe(call("acme"))
	h.e.Observe(&auditv1.Record{Server: "fs", Tool: "read", Method: "gatehouse/approve", Outcome: auditv1.Outcome_OUTCOME_ALLOWED})
	if n := h.fired("breaker_open") + h.fired("tool_quarantined"); n != 0 {
		t.Fatalf("fired %v times without an event", n)
	}
	h.e.Observe(breaker("fs", true))
	h.e.Observe(breaker("fs", true)) // within the cooldown
	h.e.Observe(breaker("git", true))
	if n := h.fired("breaker_open"); n != 2 {
		t.Fatalf("breaker_open fired %v times, want 2 (fs once, git once)", n)
	}
	h.clock.advance(5 * time.Minute)
	h.e.Observe(breaker("fs", true))
	if n := h.fired("breaker_open"); n != 3 {
		t.Fatalf("breaker_open fired %v times after the cooldown, want 3", n)
	}
	q := &auditv1.Record{Server: "fs", Tool: "read", Method: "gatehouse/quarantine", Phase: auditv1.Phase_PHASE_COMPLETE, Outcome: auditv1.Outcome_OUTCOME_DENIED, Error: "tool quarantined: its definition changed"}
	h.e.Observe(q)
	h.e.Observe(q)
	if n := h.fired("tool_quarantined"); n != 1 {
		t.Fatalf("tool_quarantined fired %v times, want 1", n)
	}
	testsync.WaitFor(t, 10*time.Second, "the webhook receives four alerts", func() bool { return len(rcv.got()) == 4 })
	last := rcv.got()[3]
	if last.Alert != "GatehouseToolQuarantined" || last.Labels["server"] != "fs" || last.Labels["tool"] != "read" {
		t.Errorf("webhook got %+v", last)
	}
}

func TestAppendRules(t *testing.T) {
	t.Parallel()
	h := newHarness(t, `
alerts:
  rules:
    audit_append_lag: {threshold: 100ms, min_count: 3, window: 1m, cooldown: 15m}
    audit_append_failing: {threshold: 2, window: 1m, cooldown: 15m}
`, "")
	// Normal: fast durable appends, slow deferred ones (no one waits), one failure a minute.
	for range 10 {
		for range 100 {
			h.e.ObserveAppend(true, 2*time.Millisecond, false)
		}
		h.e.ObserveAppend(false, time.Second, false)
		h.e.ObserveAppend(true, time.Millisecond, true)
		h.clock.advance(2 * time.Minute)
	}
	if n := h.fired("audit_append_lag") + h.fired("audit_append_failing"); n != 0 {
		t.Fatalf("fired %v times on a normal workload", n)
	}
	for range 3 {
		h.e.ObserveAppend(true, 300*time.Millisecond, false)
	}
	if n := h.fired("audit_append_lag"); n != 1 {
		t.Fatalf("audit_append_lag fired %v times, want 1", n)
	}
	for range 5 {
		h.e.ObserveAppend(true, time.Millisecond, true)
	}
	if n := h.fired("audit_append_failing"); n != 1 {
		t.Fatalf("audit_append_failing fired %v times, want 1", n)
	}
	if !strings.Contains(h.log.String(), `"level":"ERROR","msg":"alert: The audit log refuses appends`) {
		t.Errorf("no ERROR line for the critical alert:\n%s", h.log)
	}
}

// A webhook that never answers holds one alert in flight and the queue's slots: the rest are
// dropped, counted and logged, and firing never waits.
func TestWebhookHangs(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	h := newHarness(t, `
alerts:
  webhook: {url: "{{URL}}", timeout: 1m, retries: 0, queue: 1}
  rules:
    breaker_open: {cooldown: 1h}
`, srv.URL)
	h.e.Observe(breaker("s0", true))
	testsync.WaitFor(t, 10*time.Second, "the first alert is in flight", func() bool { mu.Lock(); defer mu.Unlock(); return requests == 1 })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i < 10; i++ {
			h.e.Observe(breaker("s"+string(rune('0'+i)), true))
		}
	}()
	testsync.WaitFor(t, 10*time.Second, "nine more alerts fired while the webhook hangs", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	if n := h.fired("breaker_open"); n != 10 {
		t.Errorf("fired %v, want 10", n)
	}
	if n := counter(h.reg, alerts.MetricDropped, "breaker_open"); n != 8 {
		t.Errorf("dropped %v, want 8 (one in flight, one queued)", n)
	}
	if c := strings.Count(h.log.String(), "alert not sent to the webhook: its queue is full"); c != 8 {
		t.Errorf("%d drop lines in the log, want 8", c)
	}
}

// A webhook that fails is retried a bounded number of times; a redirect is not followed.
func TestWebhookFailures(t *testing.T) {
	t.Parallel()
	rcv := &receiver{}
	target := httptest.NewServer(rcv)
	t.Cleanup(target.Close)
	var mu sync.Mutex
	attempts := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		attempts++
		n := attempts
		mu.Unlock()
		switch {
		case r.URL.Path == "/redirect":
			http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
		case n <= 2: // the first alert's first two attempts
			w.WriteHeader(http.StatusInternalServerError)
		default:
			rcv.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, `
alerts:
  webhook: {url: "{{URL}}", retries: 2, backoff: 10ms}
  rules:
    breaker_open: {cooldown: 1h}
`, srv.URL)
	h.e.Observe(breaker("fs", true))
	testsync.WaitFor(t, 10*time.Second, "the alert is accepted at the third attempt", func() bool { return len(rcv.got()) == 1 })
	if n := counter(h.reg, alerts.MetricWebhookFailures, "breaker_open"); n != 0 {
		t.Errorf("webhook failures %v, want 0", n)
	}

	r := newHarness(t, `
alerts:
  webhook: {url: "{{URL}}/redirect?token=secret", retries: 1, backoff: 10ms}
  rules:
    breaker_open: {cooldown: 1h}
`, srv.URL)
	r.e.Observe(breaker("fs", true))
	testsync.WaitFor(t, 10*time.Second, "the redirected alert is given up", func() bool {
		return counter(r.reg, alerts.MetricWebhookFailures, "breaker_open") == 1
	})
	if n := len(rcv.got()); n != 1 {
		t.Errorf("the redirect's target got %d alerts, want none past the first", n-1)
	}
	if strings.Contains(r.log.String(), "secret") {
		t.Errorf("the webhook URL's token is in the log:\n%s", r.log)
	}
}

// Past max_keys, new tenants count together as "other": the engine's state is bounded
// whatever tenants the records name.
func TestMaxKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t, `
alerts:
  max_keys: 2
  rules:
    policy_denial_spike: {threshold: 4, window: 1m, cooldown: 1h}
`, "")
	for _, tenant := range []string{"a", "b", "c", "d", "e"} {
		h.e.Observe(denied(tenant))
	}
	if n := h.fired("policy_denial_spike"); n != 0 {
		t.Fatalf("fired %v", n)
	}
	h.e.Observe(denied("f")) // c, d, e and f together: 4
	if n := h.fired("policy_denial_spike"); n != 1 {
		t.Fatalf("fired %v, want 1 (for other)", n)
	}
	if !strings.Contains(h.log.String(), `"tenant":"other"`) {
		t.Errorf("the alert is not for tenant other:\n%s", h.log)
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	none, err := alerts.Parse([]byte("servers: []\nquotas: {}\n"))
	if err != nil || none != nil {
		t.Fatalf("no alerts section: %v, %v", none, err)
	}
	c, err := alerts.Parse([]byte("alerts:\n  rules:\n    breaker_open: {}\n    policy_denial_spike: {}\n  webhook: {url: 'https://hooks.example/x'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Rules.BreakerOpen.Cooldown != 15*time.Minute || c.Rules.PolicyDenialSpike.Threshold != 30 || c.MaxKeys != 1000 ||
		c.Webhook.Timeout != 5*time.Second || *c.Webhook.Retries != 3 || c.Webhook.Queue != 256 {
		t.Errorf("defaults: %+v %+v %+v", c, c.Rules.PolicyDenialSpike, c.Webhook)
	}
	for _, tt := range []struct{ name, doc, want string }{
		{"unknown key", "alerts:\n  rules:\n    breaker_open: {colldown: 1m}\n", "field colldown not found"},
		{"unknown rule", "alerts:\n  rules:\n    disk_full: {}\n", "field disk_full not found"},
		{"no rule", "alerts:\n  webhook: {url: 'http://x'}\n", "rules: none is on"},
		{"scheme", "alerts:\n  webhook: {url: 'file:///etc/passwd'}\n  rules: {breaker_open: {}}\n", "scheme must be http or https"},
		{"no host", "alerts:\n  webhook: {url: 'http://'}\n  rules: {breaker_open: {}}\n", "no host"},
		{"timeout", "alerts:\n  webhook: {url: 'http://x', timeout: 1h}\n  rules: {breaker_open: {}}\n", "webhook: timeout: 1h0m0s is not between"},
		{"retries", "alerts:\n  webhook: {url: 'http://x', retries: 100}\n  rules: {breaker_open: {}}\n", "retries: 100 is not between 0 and 10"},
		{"queue", "alerts:\n  webhook: {url: 'http://x', queue: -1}\n  rules: {breaker_open: {}}\n", "queue: -1"},
		{"threshold", "alerts:\n  rules: {policy_denial_spike: {threshold: -5}}\n", "rules.policy_denial_spike: threshold: -5"},
		{"window", "alerts:\n  rules: {policy_denial_spike: {window: 10ms}}\n", "window: 10ms is not between"},
		{"cooldown", "alerts:\n  rules: {breaker_open: {cooldown: 1000h}}\n", "rules.breaker_open: cooldown"},
		{"not a duration", "alerts:\n  rules: {breaker_open: {cooldown: soon}}\n", "alerts:"},
		{"factor", "alerts:\n  rules: {tenant_above_baseline: {factor: 0.5}}\n", "factor: 0.5 is not above 1"},
		{"windows", "alerts:\n  rules: {tenant_above_baseline: {windows: 5000}}\n", "windows: 5000"},
		{"lag", "alerts:\n  rules: {audit_append_lag: {threshold: 1h}}\n", "rules.audit_append_lag: threshold"},
		{"max keys", "alerts:\n  max_keys: 1000000\n  rules: {breaker_open: {}}\n", "max_keys"},
		{"a list", "alerts: [1, 2]\n", "alerts:"},
		{"too big", "alerts:\n  rules: {breaker_open: {}}\n#" + strings.Repeat("x", 5<<20) + "\n", "more than the limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := alerts.Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
