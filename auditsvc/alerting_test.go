package auditsvc_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	"github.com/gatehouse-mcp/gatehouse/auditsvc/alerts"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/prometheus/client_golang/prometheus"
)

// TestAlertsDoNotBlockAppends: with a webhook that never answers, concurrent appends whose
// records each fire an alert all complete; the alerts past the webhook's queue are dropped
// and counted, and Close does not wait for the webhook.
func TestAlertsDoNotBlockAppends(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hook.Close)
	t.Cleanup(func() { close(hang) })
	cfgFile := filepath.Join(t.TempDir(), "gatehouse.yaml")
	doc := fmt.Sprintf("servers: []\nalerts:\n  webhook: {url: %q, timeout: 1m, retries: 10, queue: 2}\n  rules:\n    policy_denial_spike: {threshold: 1, cooldown: 1h}\n", hook.URL)
	if err := os.WriteFile(cfgFile, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	svc, err := auditsvc.New(auditsvc.Config{Dir: t.TempDir(), AlertFile: cfgFile}, nil, auditsvc.WithMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				rec := record(w*each + i)
				rec.Tenant = fmt.Sprintf("tenant-%d-%d", w, i) // each its own spike
				rec.Outcome, rec.Decision = auditv1.Outcome_OUTCOME_DENIED, auditv1.PolicyDecision_POLICY_DECISION_DENY
				if _, err := appendRecord(svc, rec); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append: %v", err)
	}
	fired := func(name string) float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == name {
				for _, m := range mf.GetMetric() {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	testsync.WaitFor(t, 30*time.Second, "every committed denial evaluated", func() bool {
		return fired(alerts.MetricFired) == workers*each
	})
	// One alert in flight, at most two queued: the rest dropped.
	if d := fired(alerts.MetricDropped); d < workers*each-3 {
		t.Errorf("dropped %v of %d alerts, want at least %d", d, workers*each, workers*each-3)
	}
	// Close gives the hanging webhook a bounded grace, not its minute times eleven attempts.
	if err := svc.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}
