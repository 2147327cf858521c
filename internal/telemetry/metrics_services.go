package telemetry

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names of the bridge and the audit log.
const (
	MetricBreakerState       = "gatehouse_breaker_state"
	MetricBreakerTransitions = "gatehouse_breaker_transitions_total"
	MetricStdioChildren      = "gatehouse_stdio_children"
	MetricBridgeSessions     = "gatehouse_bridge_sessions"
	MetricAuditAppend        = "gatehouse_audit_append_duration_seconds"
	MetricAuditAppendErrors  = "gatehouse_audit_append_errors_total"
	MetricAuditBatch         = "gatehouse_audit_batch_records"
	MetricAuditQueue         = "gatehouse_audit_queue_records"
	MetricAuditBreaks        = "gatehouse_audit_breaks_total"
	MetricAuditCkptFailures  = "gatehouse_audit_checkpoint_failures_total"
	MetricAuditLostRecords   = "gatehouse_audit_lost_records_total"
	MetricToolsQuarantined   = "gatehouse_tools_quarantined"
)

// Breaker states as the gauge reports them: ordered by severity.
const (
	BreakerClosed   = 0
	BreakerHalfOpen = 1
	BreakerOpen     = 2
)

// BridgeMetrics are the bridge's metrics. A nil *BridgeMetrics records nothing.
type BridgeMetrics struct {
	state       *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	servers     *labelSet
}

// NewBridgeMetrics registers the bridge's metrics on reg: the breakers (set on each
// transition, labelled by server, at most maxServers), and the live stdio children and
// sessions, read at each scrape from children and sessions.
func NewBridgeMetrics(reg prometheus.Registerer, maxServers int, children, sessions func() int) (*BridgeMetrics, error) {
	b, err := Bounds{MaxServers: maxServers}.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &BridgeMetrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricBreakerState,
			Help: "A server's circuit breaker as of its last transition: 0 closed, 1 half-open, 2 open (it stays 2 until a call after the cool-down makes it half-open).",
		}, []string{"server"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricBreakerTransitions,
			Help: "Transitions of a server's circuit breaker, by the state entered.",
		}, []string{"server", "to"}),
	}
	overflow := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatehouse_bridge_label_overflow_total", Help: "Breaker server labels counted as \"other\" past --metrics-max-servers.",
	})
	cs := []prometheus.Collector{m.state, m.transitions, overflow,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricStdioChildren, Help: "stdio children started and not yet reaped."}, func() float64 { return float64(children()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricBridgeSessions, Help: "Gateway sessions with upstreams on this bridge."}, func() float64 { return float64(sessions()) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	m.servers = newLabelSet(b.MaxServers, overflow)
	return m, nil
}

// Transition records that server's breaker entered state (BreakerClosed, BreakerHalfOpen or
// BreakerOpen), named to.
func (m *BridgeMetrics) Transition(server string, state int, to string) {
	if m == nil {
		return
	}
	s := m.servers.fold(server)
	m.state.WithLabelValues(s).Set(float64(state))
	m.transitions.WithLabelValues(s, to).Inc()
}

// AuditMetrics are the audit log's metrics. A nil *AuditMetrics records nothing.
type AuditMetrics struct {
	appendDurable  prometheus.Observer
	appendDeferred prometheus.Observer
	errors         prometheus.Counter
	batch          prometheus.Observer
}

// AuditCounts are the audit log's own counters, read at each scrape.
type AuditCounts struct {
	// Breaks: damage found at open (each recorded in the log, logged at ERROR).
	Breaks func() uint64
	// CheckpointFailures: checkpoints of the head not written or not anchored.
	CheckpointFailures func() uint64
	// LostRecords: deferred records acknowledged as queued, then lost to a failed commit.
	LostRecords func() uint64
}

// NewAuditMetrics registers the audit log's metrics on reg; queued and counts are read at
// each scrape.
func NewAuditMetrics(reg prometheus.Registerer, queued func() int, counts AuditCounts) (*AuditMetrics, error) {
	appendDur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricAuditAppend,
		Help:    "Time an Append took, by mode: durable (acknowledged once fsynced) or deferred (acknowledged once queued).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"mode"})
	errs := prometheus.NewCounter(prometheus.CounterOpts{Name: MetricAuditAppendErrors, Help: "Appends refused: invalid records, a full queue, a log that cannot write."})
	batch := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    MetricAuditBatch,
		Help:    "Records committed by one write and fsync (group commit).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 to 1024
	})
	q := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricAuditQueue, Help: "Records queued or being committed, not yet durable."}, func() float64 { return float64(queued()) })
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			if f == nil {
				return 0
			}
			return float64(f())
		})
	}
	breaks := counter(MetricAuditBreaks, "Damage found in the audit log at start (a break in the chain, records cut off past the anchor); each is recorded in the log and logged at ERROR.", counts.Breaks)
	ckptFailures := counter(MetricAuditCkptFailures, "Checkpoints of the audit log's head not written to checkpoints.log or not anchored in etcd.", counts.CheckpointFailures)
	lost := counter(MetricAuditLostRecords, "Deferred audit records (outcomes) acknowledged as queued, then lost to a failed commit.", counts.LostRecords)
	for _, c := range []prometheus.Collector{appendDur, errs, batch, q, breaks, ckptFailures, lost} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return &AuditMetrics{
		appendDurable:  appendDur.WithLabelValues("durable"),
		appendDeferred: appendDur.WithLabelValues("deferred"),
		errors:         errs,
		batch:          batch,
	}, nil
}

// Append records one Append: how long it took, and whether it failed.
func (m *AuditMetrics) Append(deferred bool, took time.Duration, failed bool) {
	if m == nil {
		return
	}
	if failed {
		m.errors.Inc()
		return
	}
	if deferred {
		m.appendDeferred.Observe(took.Seconds())
	} else {
		m.appendDurable.Observe(took.Seconds())
	}
}

// Batch records one group commit of n records.
func (m *AuditMetrics) Batch(n int) {
	if m == nil {
		return
	}
	m.batch.Observe(float64(n))
}

// QuarantineDesc describes the gauge of quarantined tools per server, which the ingress
// collects from its catalogue at each scrape (a prometheus.Collector of its own).
var QuarantineDesc = prometheus.NewDesc(MetricToolsQuarantined, "Tools of a pinned server that are quarantined (refused until an operator approves them).", []string{"server"}, nil)
