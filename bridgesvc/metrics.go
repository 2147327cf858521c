package bridgesvc

import (
	"fmt"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/breaker"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
)

// WithMetrics registers the bridge's metrics on reg (internal/telemetry's BridgeMetrics):
// each server's breaker state and transitions, set as they happen, and the live stdio
// children and sessions, read at each scrape.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(s *Service) { s.metricsReg = reg }
}

// registerMetrics is New's last step, once the supervisor and the session map exist.
func (s *Service) registerMetrics() error {
	if s.metricsReg == nil {
		return nil
	}
	sessions := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.sessions)
	}
	m, err := telemetry.NewBridgeMetrics(s.metricsReg, s.cfg.MetricsMaxServers, s.sup.Len, sessions)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	s.metrics = m
	return nil
}

// breakerGauge is a breaker state as the gauge reports it.
func breakerGauge(st breaker.State) int {
	switch st {
	case breaker.Open:
		return telemetry.BreakerOpen
	case breaker.HalfOpen:
		return telemetry.BreakerHalfOpen
	}
	return telemetry.BreakerClosed
}
