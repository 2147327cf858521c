// Package alerts is Gatehouse's own alerting: rules over the committed audit records and the
// audit log's appends (a spike in policy denials per tenant, a breaker opening, a tenant far
// above its own trailing baseline, slow or refused appends, a quarantined tool), each fired to
// the log, a metric (gatehouse_alerts_fired_total{rule}) and a webhook, at most once per rule,
// key and cooldown. deploy/prometheus ships the same rules over /metrics; the rule names
// match (Rule.Alert).
//
// Nothing here blocks its caller: counting is a few map operations under a mutex, and the
// webhook is a bounded queue drained by one goroutine (webhook.go).
package alerts

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names (docs/observability.md).
const (
	MetricFired           = "gatehouse_alerts_fired_total"
	MetricDropped         = "gatehouse_alerts_dropped_total"
	MetricWebhookFailures = "gatehouse_alerts_webhook_failures_total"
)

// Methods of the gateway's own audit records that rules read. They are bridgesvc's
// MethodBreaker and registrysvc's MethodQuarantine: a service does not import another.
const (
	methodBreaker    = "gatehouse/breaker"
	methodQuarantine = "gatehouse/quarantine"
	methodOwnPrefix  = "gatehouse/" // the gateway's own events, not calls
)

// otherKey is the key new tenants, servers or tools count under once a rule holds MaxKeys.
const otherKey = "other"

// Rule is one kind of alert: its config name (the metric's rule label) and the name of the
// equivalent Prometheus alert.
type Rule struct {
	Name, Alert, Severity string
}

// The rules.
var (
	PolicyDenialSpike   = Rule{"policy_denial_spike", "GatehousePolicyDenialSpike", "warning"}
	BreakerOpen         = Rule{"breaker_open", "GatehouseBreakerOpen", "warning"}
	TenantAboveBaseline = Rule{"tenant_above_baseline", "GatehouseTenantAboveBaseline", "warning"}
	AuditAppendLag      = Rule{"audit_append_lag", "GatehouseAuditAppendLag", "critical"}
	AuditAppendFailing  = Rule{"audit_append_failing", "GatehouseAuditAppendFailing", "critical"}
	ToolQuarantined     = Rule{"tool_quarantined", "GatehouseToolQuarantined", "warning"}
)

// Alert is one fired alert, as the webhook receives it (JSON).
type Alert struct {
	Rule     string            `json:"rule"`
	Alert    string            `json:"alert"`
	Severity string            `json:"severity"`
	Labels   map[string]string `json:"labels,omitempty"`
	Summary  string            `json:"summary"`
	// Value is what crossed Threshold (a count, calls in the window, a latency's count).
	Value     float64   `json:"value,omitempty"`
	Threshold float64   `json:"threshold,omitempty"`
	Window    string    `json:"window,omitempty"`
	FiredAt   time.Time `json:"fired_at"`
}

// Options are what New takes beyond the Config.
type Options struct {
	Logger *slog.Logger
	// Registerer gets the alerts' metrics; nil: none.
	Registerer prometheus.Registerer
	// Now is the clock of windows and cooldowns; nil: time.Now.
	Now func() time.Time
	// Transport carries the webhook's requests; nil: a clone of http.DefaultTransport.
	Transport http.RoundTripper
}

// Engine evaluates the rules. Its methods are safe for concurrent use.
type Engine struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time
	hook   *webhook // nil: no webhook

	fired, dropped, webhookFailures *prometheus.CounterVec

	mu       sync.Mutex
	denials  keyed[*slidingCount]
	baseline keyed[*baselineCount]
	lag      slidingCount
	failing  slidingCount
	last     map[Rule]map[string]time.Time // when each rule last fired for each key
}

// New makes an engine of cfg (validated: Parse or Config.Validate) and starts its webhook's
// sender. Close stops it.
func New(cfg *Config, o Options) (*Engine, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	e := &Engine{
		cfg:      *cfg,
		logger:   o.Logger,
		now:      o.Now,
		denials:  newKeyed[*slidingCount](cfg.MaxKeys),
		baseline: newKeyed[*baselineCount](cfg.MaxKeys),
		last:     make(map[Rule]map[string]time.Time),
		fired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricFired, Help: "Alerts fired (to the log, and queued for the webhook), by rule.",
		}, []string{"rule"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDropped, Help: "Alerts not sent to the webhook because its queue was full, by rule (each also logged).",
		}, []string{"rule"}),
		webhookFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricWebhookFailures, Help: "Alerts the webhook did not accept after every retry, by rule (each also logged).",
		}, []string{"rule"}),
	}
	for _, r := range e.enabled() {
		// Every series exists from the start, at 0: rate() and absent() see it.
		e.fired.WithLabelValues(r.Name)
		e.dropped.WithLabelValues(r.Name)
		e.webhookFailures.WithLabelValues(r.Name)
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{e.fired, e.dropped, e.webhookFailures} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register alert metrics: %w", err)
			}
		}
	}
	if cfg.Webhook != nil {
		e.hook = newWebhook(*cfg.Webhook, o.Transport, o.Logger, e.webhookFailures)
	}
	rules := make([]string, 0, 6)
	for _, r := range e.enabled() {
		rules = append(rules, r.Name)
	}
	webhookURL := ""
	if cfg.Webhook != nil {
		webhookURL = redactURL(cfg.Webhook.URL)
	}
	o.Logger.Info("alerts on", "rules", strings.Join(rules, ","), "webhook", webhookURL)
	return e, nil
}

// enabled lists the rules the config turned on.
func (e *Engine) enabled() []Rule {
	r := e.cfg.Rules
	var out []Rule
	for _, x := range []struct {
		on bool
		r  Rule
	}{
		{r.PolicyDenialSpike != nil, PolicyDenialSpike}, {r.BreakerOpen != nil, BreakerOpen},
		{r.TenantAboveBaseline != nil, TenantAboveBaseline}, {r.AuditAppendLag != nil, AuditAppendLag},
		{r.AuditAppendFailing != nil, AuditAppendFailing}, {r.ToolQuarantined != nil, ToolQuarantined},
	} {
		if x.on {
			out = append(out, x.r)
		}
	}
	return out
}

// closeGrace bounds how long Close waits for the alert being sent: a webhook that hangs
// must not hold a stopping gateway for its timeout times its retries.
const closeGrace = 2 * time.Second

// Close stops the webhook's sender: the alert being sent is given up once ctx ends or
// closeGrace has passed, and those still queued are dropped (counted in the log line).
func (e *Engine) Close(ctx context.Context) {
	if e != nil && e.hook != nil {
		ctx, cancel := context.WithTimeout(ctx, closeGrace)
		defer cancel()
		e.hook.close(ctx)
	}
}

// Observe evaluates the rules over one committed audit record.
func (e *Engine) Observe(rec *auditv1.Record) {
	if e == nil || rec == nil {
		return
	}
	r := e.cfg.Rules
	method := rec.GetMethod()
	switch {
	case method == methodBreaker:
		if r.BreakerOpen != nil && rec.GetOutcome() == auditv1.Outcome_OUTCOME_FAILED {
			e.event(BreakerOpen, r.BreakerOpen.Cooldown, map[string]string{"server": rec.GetServer()},
				fmt.Sprintf("Circuit breaker of server %s opened: %s", rec.GetServer(), rec.GetError()))
		}
		return
	case method == methodQuarantine:
		if r.ToolQuarantined != nil {
			e.event(ToolQuarantined, r.ToolQuarantined.Cooldown, map[string]string{"server": rec.GetServer(), "tool": rec.GetTool()},
				fmt.Sprintf("Server %s: tool %s quarantined: %s", rec.GetServer(), rec.GetTool(), rec.GetError()))
		}
		return
	case strings.HasPrefix(method, methodOwnPrefix):
		return // the gateway's own events (approvals, imports) are not calls
	}
	n := float64(max(rec.GetCount(), 1)) // a quota tally stands for Count calls
	tenant := rec.GetTenant()
	if x := r.PolicyDenialSpike; x != nil && rec.GetOutcome() == auditv1.Outcome_OUTCOME_DENIED &&
		rec.GetDecision() == auditv1.PolicyDecision_POLICY_DECISION_DENY {
		e.mu.Lock()
		key, c := e.denials.get(tenant, func() *slidingCount { return &slidingCount{} })
		v := c.add(e.now(), x.Window, n)
		e.mu.Unlock()
		if v >= float64(x.Threshold) {
			e.fire(PolicyDenialSpike, x.Cooldown, key, Alert{
				Labels:  map[string]string{"tenant": key},
				Summary: fmt.Sprintf("Policy denials for tenant %s spiked: %.0f in %v", key, v, x.Window),
				Value:   v, Threshold: float64(x.Threshold), Window: x.Window.String(),
			})
		}
	}
	// A call is counted once: its decision record, or its one complete record.
	if x := r.TenantAboveBaseline; x != nil && rec.GetPhase() != auditv1.Phase_PHASE_OUTCOME {
		e.mu.Lock()
		key, c := e.baseline.get(tenant, func() *baselineCount { return &baselineCount{} })
		cur, avg, ready := c.add(e.now(), x.Window, x.Windows, n)
		e.mu.Unlock()
		if ready && cur >= float64(x.MinCalls) && cur > x.Factor*avg {
			e.fire(TenantAboveBaseline, x.Cooldown, key, Alert{
				Labels:  map[string]string{"tenant": key},
				Summary: fmt.Sprintf("Tenant %s is far above its baseline: %.0f calls in this %v window, its average %.1f", key, cur, x.Window, avg),
				Value:   cur, Threshold: x.Factor * avg, Window: x.Window.String(),
			})
		}
	}
}

// ObserveAppend evaluates the append rules over one Append of the audit log: how long it
// took, whether it was durable (the call path waits for those), and whether it failed. It is
// on the call path: it only counts, and queues what fires.
func (e *Engine) ObserveAppend(durable bool, d time.Duration, failed bool) {
	if e == nil {
		return
	}
	r := e.cfg.Rules
	if x := r.AuditAppendFailing; x != nil && failed {
		e.mu.Lock()
		v := e.failing.add(e.now(), x.Window, 1)
		e.mu.Unlock()
		if v >= float64(x.Threshold) {
			e.fire(AuditAppendFailing, x.Cooldown, "", Alert{
				Summary: fmt.Sprintf("The audit log refuses appends: %.0f in %v; calls whose decision record cannot be written are refused", v, x.Window),
				Value:   v, Threshold: float64(x.Threshold), Window: x.Window.String(),
			})
		}
	}
	if x := r.AuditAppendLag; x != nil && durable && !failed && d > x.Threshold {
		e.mu.Lock()
		v := e.lag.add(e.now(), x.Window, 1)
		e.mu.Unlock()
		if v >= float64(x.MinCount) {
			e.fire(AuditAppendLag, x.Cooldown, "", Alert{
				Summary: fmt.Sprintf("The audit log is slow to make records durable: %.0f durable appends over %v in %v (the last %v)", v, x.Threshold, x.Window, d.Round(time.Millisecond)),
				Value:   v, Threshold: float64(x.MinCount), Window: x.Window.String(),
			})
		}
	}
}

// event fires an event rule, keyed by its labels (folded into "other" past MaxKeys).
func (e *Engine) event(r Rule, cooldown time.Duration, labels map[string]string, summary string) {
	key := labels["server"]
	if t, ok := labels["tool"]; ok {
		key += "/" + t
	}
	e.fire(r, cooldown, key, Alert{Labels: labels, Summary: summary})
}

// fire sends a to the log, the metric and the webhook, unless r fired for key less than
// cooldown ago.
func (e *Engine) fire(r Rule, cooldown time.Duration, key string, a Alert) {
	now := e.now()
	e.mu.Lock()
	last := e.last[r]
	if last == nil {
		last = make(map[string]time.Time)
		e.last[r] = last
	}
	if _, seen := last[key]; !seen && len(last) >= e.cfg.MaxKeys {
		key = otherKey // bounded: the keys past MaxKeys share one cooldown
		if a.Labels != nil {
			for k := range a.Labels {
				a.Labels[k] = otherKey
			}
		}
	}
	if t, ok := last[key]; ok && now.Sub(t) < cooldown {
		e.mu.Unlock()
		return
	}
	last[key] = now
	e.mu.Unlock()

	a.Rule, a.Alert, a.Severity, a.FiredAt = r.Name, r.Alert, r.Severity, now.UTC()
	e.fired.WithLabelValues(r.Name).Inc()
	level := slog.LevelWarn
	if r.Severity == "critical" {
		level = slog.LevelError
	}
	attrs := []any{"rule", r.Name, "alert", r.Alert, "severity", r.Severity}
	for k, v := range a.Labels {
		attrs = append(attrs, k, v)
	}
	if a.Threshold != 0 {
		attrs = append(attrs, "value", a.Value, "threshold", a.Threshold, "window", a.Window)
	}
	e.logger.Log(context.Background(), level, "alert: "+a.Summary, attrs...)
	if e.hook != nil && !e.hook.enqueue(a) {
		e.dropped.WithLabelValues(r.Name).Inc()
		e.logger.Warn("alert not sent to the webhook: its queue is full", "rule", r.Name, "queue", e.cfg.Webhook.Queue)
	}
}

// keyed is a rule's per-key state, at most max keys; past it, new keys share "other".
type keyed[T any] struct {
	max int
	m   map[string]T
}

func newKeyed[T any](max int) keyed[T] { return keyed[T]{max: max, m: make(map[string]T)} }

// get returns key's state (made by mk if new), and the key it is counted under.
func (k *keyed[T]) get(key string, mk func() T) (string, T) {
	if v, ok := k.m[key]; ok {
		return key, v
	}
	if len(k.m) >= k.max {
		key = otherKey
		if v, ok := k.m[key]; ok {
			return key, v
		}
	}
	v := mk()
	k.m[key] = v
	return key, v
}

// slidingCount estimates the events in the last window from two fixed windows: the current
// one's count, and the previous one's weighted by how much of it the sliding window still
// covers. Two numbers per key, whatever the rate.
type slidingCount struct {
	start     time.Time // of the current fixed window
	cur, prev float64
}

// add counts n events at now and returns the estimate of the last window's.
func (c *slidingCount) add(now time.Time, window time.Duration, n float64) float64 {
	switch el := now.Sub(c.start); {
	case c.start.IsZero() || el >= 2*window || el < 0:
		c.start, c.cur, c.prev = now, 0, 0
	case el >= window:
		c.start, c.prev, c.cur = c.start.Add(window), c.cur, 0
	}
	c.cur += n
	covered := 1 - float64(now.Sub(c.start))/float64(window)
	return c.prev*covered + c.cur
}

// baselineCount is a tenant's calls in the current fixed window, and the moving average of
// its windows before: exponential, with the weight of a simple average over `windows`
// windows (alpha 2/(windows+1)), so a key costs a few numbers whatever the history.
type baselineCount struct {
	start time.Time
	cur   float64
	avg   float64
	seen  int // windows closed, up to windows
}

// add counts n calls at now; it returns the current window's count, the average of the
// windows before, and whether there are enough of them for a baseline.
func (c *baselineCount) add(now time.Time, window time.Duration, windows int, n float64) (float64, float64, bool) {
	if c.start.IsZero() || now.Before(c.start) {
		c.start = now
	}
	if el := now.Sub(c.start); el >= window {
		// Close the current window, then the empty ones since: each is a 0 in the average.
		// Past a few times `windows`, the average is 0 to within rounding; stop there.
		closed := int64(el / window)
		alpha := 2 / float64(windows+1)
		c.close(c.cur, alpha, windows)
		for i := int64(1); i < closed && i <= int64(4*windows); i++ {
			c.close(0, alpha, windows)
		}
		c.start = c.start.Add(time.Duration(closed) * window)
		c.cur = 0
	}
	c.cur += n
	return c.cur, c.avg, c.seen >= windows
}

func (c *baselineCount) close(count, alpha float64, windows int) {
	if c.seen == 0 {
		c.avg = count
	} else {
		c.avg += alpha * (count - c.avg)
	}
	c.avg = math.Max(c.avg, 0)
	if c.seen < windows {
		c.seen++
	}
}
