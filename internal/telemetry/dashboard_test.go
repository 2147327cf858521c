package telemetry_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// registeredNames registers every metric a Gatehouse process can serve on one registry,
// makes each hold a series, and returns the names a query may use (a histogram's _bucket,
// _sum and _count included).
func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	reg := telemetry.NewRegistry()
	calls, err := telemetry.NewCallMetrics(reg, telemetry.Bounds{})
	if err != nil {
		t.Fatal(err)
	}
	calls.Listed("s", []string{"t"})
	calls.Observe("ten", "s", "tools/call", "t", telemetry.OutcomeDenied, true, time.Millisecond)
	calls.UpstreamError("s", "error_response")
	bridge, err := telemetry.NewBridgeMetrics(reg, 0, func() int { return 1 }, func() int { return 1 })
	if err != nil {
		t.Fatal(err)
	}
	bridge.Transition("s", telemetry.BreakerOpen, "open")
	audit, err := telemetry.NewAuditMetrics(reg, func() int { return 0 }, telemetry.AuditCounts{})
	if err != nil {
		t.Fatal(err)
	}
	audit.Append(false, time.Millisecond, false)
	audit.Append(false, time.Millisecond, true)
	audit.Batch(3)
	reg.MustRegister(quarantine{})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
	}
	return names
}

type quarantine struct{}

func (quarantine) Describe(ch chan<- *prometheus.Desc) { ch <- telemetry.QuarantineDesc }
func (quarantine) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(telemetry.QuarantineDesc, prometheus.GaugeValue, 1, "s")
}

func repoFile(t *testing.T, rel string) []byte {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			break
		}
		if dir == filepath.Dir(dir) {
			t.Fatal("no go.work above the test")
		}
		dir = filepath.Dir(dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// metricRef finds the Gatehouse metric and recording-rule names an expression uses.
var metricRef = regexp.MustCompile(`\bgatehouse[_:][A-Za-z0-9_:]*`)

// recorded are the names the rules file records, which queries may use too.
func recorded(t *testing.T) map[string]bool {
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*- record: (\S+)`).FindAllSubmatch(repoFile(t, "deploy/prometheus/gatehouse-rules.yaml"), -1) {
		out[string(m[1])] = true
	}
	return out
}

// TestDashboard: deploy/grafana/gatehouse.json parses, every panel has queries, and every
// query (and variable) names only metrics the gateway registers or the rules record.
func TestDashboard(t *testing.T) {
	names := registeredNames(t)
	for n := range recorded(t) {
		names[n] = true
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(repoFile(t, "deploy/grafana/gatehouse.json"), &dash); err != nil {
		t.Fatalf("the dashboard does not parse: %v", err)
	}
	if dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatal("the dashboard has no title or no panels")
	}
	check := func(where, expr string) {
		refs := metricRef.FindAllString(expr, -1)
		if len(refs) == 0 {
			t.Errorf("%s: %q names no Gatehouse metric", where, expr)
		}
		for _, r := range refs {
			if !names[r] {
				t.Errorf("%s: %q names %s, which the gateway does not register", where, expr, r)
			}
		}
	}
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			check("panel "+p.Title, tg.Expr)
			for _, r := range metricRef.FindAllString(tg.Expr, -1) {
				used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(r, "_bucket"), "_sum"), "_count")] = true
			}
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			check("variable "+v.Name, v.Definition)
		}
	}
	// Every metric the gateway serves of its own is on the dashboard.
	for n := range registeredNames(t) {
		if strings.HasPrefix(n, "gatehouse_") && !strings.HasSuffix(n, "_bucket") && !strings.HasSuffix(n, "_sum") && !strings.HasSuffix(n, "_count") && !used[n] {
			t.Errorf("metric %s is on no panel", n)
		}
	}
}

// TestRulesNameRegisteredMetrics: every expression of the alerting rules names metrics the
// gateway registers (promtool's tests feed the rules hand-written series, which would not
// notice a renamed metric).
func TestRulesNameRegisteredMetrics(t *testing.T) {
	names := registeredNames(t)
	for n := range recorded(t) {
		names[n] = true
	}
	rules := string(repoFile(t, "deploy/prometheus/gatehouse-rules.yaml"))
	refs := metricRef.FindAllString(rules, -1)
	if len(refs) == 0 {
		t.Fatal("the rules name no metric")
	}
	for _, r := range refs {
		if !names[r] {
			t.Errorf("the rules name %s, which the gateway does not register", r)
		}
	}
}
