package auditsvc

import (
	"github.com/prometheus/client_golang/prometheus"
)

// WithMetrics registers the audit log's metrics on reg (internal/telemetry's AuditMetrics):
// each Append's latency by mode, refused appends, the records of each group commit, and the
// records not yet durable. A nil reg leaves metrics off.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(o *options) { o.metrics = reg }
}

// queuedRecords is the count of records queued or being committed.
func (l *chainLog) queuedRecords() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.queued
}
