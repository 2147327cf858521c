package auditsvc

import (
	"fmt"

	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
)

// Option configures a Service beyond its Config.
type Option func(*Service) error

// WithMetrics registers the audit log's metrics on reg (internal/telemetry's AuditMetrics):
// each Append's latency by mode, refused appends, the records of each group commit, and the
// records not yet durable.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(s *Service) error {
		m, err := telemetry.NewAuditMetrics(reg, s.log.queuedRecords)
		if err != nil {
			return fmt.Errorf("auditsvc: %w", err)
		}
		s.metrics = m
		s.log.metrics = m
		return nil
	}
}

// queuedRecords is the count of records queued or being committed.
func (l *chainLog) queuedRecords() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.queued
}
