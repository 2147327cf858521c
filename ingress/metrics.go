package ingress

import (
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of calls (internal/telemetry's CallMetrics): conclude counts every call once, by
// the outcome of its ending, as the audit record does; a tools/list answer tells the metrics
// which tool names the server has, the only ones that become tool labels.

// metricOutcome is the outcome metrics count for an ending: the audit outcome, with quota,
// breaker and quarantine refusals told apart.
func (e ending) metricOutcome() telemetry.Outcome {
	switch {
	case e.quota != nil || e.refusal == errQuota:
		return telemetry.OutcomeQuotaRefused
	case e.refusal == nil && !e.upstreamError:
		return telemetry.OutcomeAllowed
	case e.refusal == nil || e.hostGone:
		return telemetry.OutcomeFailed
	case e.refusal == errDenied:
		return telemetry.OutcomeDenied
	case e.refusal == errQuarantined:
		return telemetry.OutcomeQuarantined
	case e.refusal == errTimeout:
		return telemetry.OutcomeTimedOut
	case e.refusal.Code == codeBreakerOpen:
		return telemetry.OutcomeBreakerRefused
	}
	return telemetry.OutcomeFailed
}

// observeCall counts a concluded call and, when the upstream failed it, an upstream error.
func (s *Service) observeCall(c *call, end ending) {
	if s.metrics == nil {
		return
	}
	o := end.metricOutcome()
	s.metrics.Observe(c.principal.GetTenant(), c.server, c.msg.Method, c.msg.Name, o, end.reached, s.now().Sub(c.start))
	if !end.reached || end.hostGone {
		return
	}
	switch {
	case end.refusal == nil && end.upstreamError:
		s.metrics.UpstreamError(c.server, "error_response")
	case end.refusal == nil, o == telemetry.OutcomeBreakerRefused, end.refusal == errCancelled:
	default:
		s.metrics.UpstreamError(c.server, end.refusal.Name) // a row of the error table: bounded
	}
}

// quarantineCollector reports, at each scrape, the quarantined tools of every pinned server
// of the catalogue (servers past the metrics' bound are summed as "other").
type quarantineCollector struct {
	s          *Service
	maxServers int
}

func (q quarantineCollector) Describe(ch chan<- *prometheus.Desc) { ch <- telemetry.QuarantineDesc }

func (q quarantineCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{}
	for i, srv := range q.s.deps.Catalog.Servers() {
		if !srv.GetPin() {
			continue
		}
		name := srv.GetName()
		if i >= q.maxServers {
			name = telemetry.Other
		}
		n := 0
		for _, p := range q.s.toolPins(srv.GetName()) {
			if p.GetQuarantined() {
				n++
			}
		}
		counts[name] += n
	}
	for name, n := range counts {
		ch <- prometheus.MustNewConstMetric(telemetry.QuarantineDesc, prometheus.GaugeValue, float64(n), name)
	}
}

// registerMetrics registers the ingress's metrics on reg.
func (s *Service) registerMetrics(reg prometheus.Registerer) error {
	m, err := telemetry.NewCallMetrics(reg, s.cfg.Metrics)
	if err != nil {
		return err
	}
	max := s.cfg.Metrics.MaxServers
	if max <= 0 {
		max = telemetry.DefaultMaxServers
	}
	if err := reg.Register(quarantineCollector{s: s, maxServers: max}); err != nil {
		return err
	}
	s.metrics = m
	return nil
}
