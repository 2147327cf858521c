package telemetry

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcome is how a call ended, as metrics count it: finer than the audit record's outcome
// (a quota refusal, a breaker's refusal and a quarantine are each their own).
type Outcome uint8

// The outcomes of a call.
const (
	OutcomeAllowed        Outcome = iota // the upstream answered with a result
	OutcomeDenied                        // policy denied it
	OutcomeFailed                        // an upstream error, a dependency down, the host gone
	OutcomeTimedOut                      // the upstream did not answer within the call timeout
	OutcomeQuotaRefused                  // a quota refused it
	OutcomeBreakerRefused                // the server's circuit breaker refused it
	OutcomeQuarantined                   // the tool is quarantined
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"allowed", "denied", "failed", "timed_out", "quota_refused", "breaker_refused", "quarantined"}

func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// methods are the MCP methods a call may be labelled with; any other is Other.
var methods = map[string]string{}

func init() {
	for _, m := range []string{
		"initialize", "ping", "tools/call", "tools/list", "resources/read", "resources/list",
		"resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/get",
		"prompts/list", "completion/complete", "logging/setLevel",
	} {
		methods[m] = m
	}
}

// MethodToolsCall is the method whose calls carry a tool label and a latency histogram.
const MethodToolsCall = "tools/call"

// Metric names of the ingress, for tests and the dashboard's check.
const (
	MetricCalls          = "gatehouse_calls_total"
	MetricToolLatency    = "gatehouse_tool_call_duration_seconds"
	MetricPolicyDenials  = "gatehouse_policy_denials_total"
	MetricUpstreamErrors = "gatehouse_upstream_errors_total"
	MetricLabelOverflow  = "gatehouse_metrics_label_overflow_total"
)

// latencyBuckets span a cached local tool (a millisecond) to a call at the default timeout.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// CallMetrics are the ingress's metrics of calls. A nil *CallMetrics records nothing.
//
// The hot path (Observe) takes read locks and map lookups only: each (tenant, server,
// method, tool) has its children made once, every outcome's at once, and later calls find
// them in one map lookup without allocating.
type CallMetrics struct {
	calls          *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	denials        *prometheus.CounterVec
	upstreamErrors *prometheus.CounterVec

	tenants *labelSet
	servers *labelSet
	tools   *toolSet

	mu     sync.RWMutex
	series map[seriesKey]*callSeries
}

type seriesKey struct{ tenant, server, method, tool string }

type callSeries struct {
	outcomes [numOutcomes]prometheus.Counter
	latency  prometheus.Observer // nil but for tools/call
	denials  prometheus.Counter
}

// NewCallMetrics registers the ingress's metrics on reg, their labels bounded by b.
func NewCallMetrics(reg prometheus.Registerer, b Bounds) (*CallMetrics, error) {
	b, err := b.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &CallMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricCalls,
			Help: "Calls a host made to a server (every method that is decided and audited), by how they ended.",
		}, []string{"tenant", "server", "method", "tool", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricToolLatency,
			Help:    "Time from a tools/call's arrival to its conclusion, for calls that reached the upstream.",
			Buckets: latencyBuckets,
		}, []string{"tenant", "server", "tool"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricPolicyDenials,
			Help: "Calls policy denied.",
		}, []string{"tenant", "server", "tool"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricUpstreamErrors,
			Help: "Calls that reached the upstream and ended in an error: an error response, a timeout, an upstream that could not be reached or started.",
		}, []string{"server", "reason"}),
		series: make(map[seriesKey]*callSeries),
	}
	overflow := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricLabelOverflow,
		Help: "Label values counted as \"other\": past a --metrics-max-* bound, or (tool) not listed by the server.",
	}, []string{"label"})
	for _, c := range []prometheus.Collector{m.calls, m.latency, m.denials, m.upstreamErrors, overflow} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	m.tenants = newLabelSet(b.MaxTenants, overflow.WithLabelValues("tenant"))
	m.servers = newLabelSet(b.MaxServers, overflow.WithLabelValues("server"))
	m.tools = newToolSet(b.MaxTools, b.MaxToolsPerServer, overflow.WithLabelValues("tool"))
	return m, nil
}

// Listed tells the metrics the tool names server listed in a tools/list answer: only those
// become tool labels.
func (m *CallMetrics) Listed(server string, tools []string) {
	if m == nil {
		return
	}
	m.tools.admit(server, tools)
}

// Observe counts one concluded call. took is observed for a tools/call that reached the
// upstream.
func (m *CallMetrics) Observe(tenant, server, method, tool string, o Outcome, reached bool, took time.Duration) {
	if m == nil || o >= numOutcomes {
		return
	}
	s := m.seriesOf(tenant, server, method, tool)
	s.outcomes[o].Inc()
	if reached && s.latency != nil {
		s.latency.Observe(took.Seconds())
	}
	if o == OutcomeDenied {
		s.denials.Inc()
	}
}

// UpstreamError counts an error of server's upstream; reason is one of a fixed set (the
// ingress's error names).
func (m *CallMetrics) UpstreamError(server, reason string) {
	if m == nil {
		return
	}
	m.upstreamErrors.WithLabelValues(m.servers.fold(server), reason).Inc()
}

func (m *CallMetrics) seriesOf(tenant, server, method, tool string) *callSeries {
	k := seriesKey{tenant: m.tenants.fold(tenant), server: m.servers.fold(server), method: Other}
	if mm, ok := methods[method]; ok {
		k.method = mm
	}
	if k.method == MethodToolsCall {
		k.tool = Other
		if k.server != Other {
			k.tool = m.tools.label(server, tool)
		}
	}
	m.mu.RLock()
	s, ok := m.series[k]
	m.mu.RUnlock()
	if ok {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.series[k]; ok {
		return s
	}
	s = &callSeries{denials: m.denials.WithLabelValues(k.tenant, k.server, k.tool)}
	for o := range numOutcomes {
		s.outcomes[o] = m.calls.WithLabelValues(k.tenant, k.server, k.method, k.tool, outcomeNames[o])
	}
	if k.method == MethodToolsCall {
		s.latency = m.latency.WithLabelValues(k.tenant, k.server, k.tool)
	}
	m.series[k] = s
	return s
}

// Denied counts a denial outside a call: a session's initialize that policy refused.
func (m *CallMetrics) Denied(tenant, server string) {
	if m == nil {
		return
	}
	m.denials.WithLabelValues(m.tenants.fold(tenant), m.servers.fold(server), "").Inc()
}
