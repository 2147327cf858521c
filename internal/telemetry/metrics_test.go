package telemetry_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBoundsFoldConcurrently: tenants, servers and tools past their bounds count as "other",
// under concurrent callers racing for the last slots; a tool label needs its server's list.
func TestBoundsFoldConcurrently(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewCallMetrics(reg, telemetry.Bounds{MaxTenants: 3, MaxServers: 2, MaxTools: 4})
	if err != nil {
		t.Fatal(err)
	}
	m.Listed("s0", []string{"a", "b", "c"})
	m.Listed("s1", []string{"x", "y", strings.Repeat("z", 200)}) // y past the bound, z too long
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				m.Observe(fmt.Sprintf("t%d", (g+i)%10), fmt.Sprintf("s%d", i%4), "tools/call", []string{"a", "x", "y", "invented"}[i%4], telemetry.OutcomeAllowed, true, time.Millisecond)
			}
		})
	}
	wg.Wait()
	tenants, servers, tools := map[string]bool{}, map[string]bool{}, map[string]bool{}
	total := 0.0
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != telemetry.MetricCalls {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				switch l.GetName() {
				case "tenant":
					tenants[l.GetValue()] = true
				case "server":
					servers[l.GetValue()] = true
				case "tool":
					tools[l.GetValue()] = true
				}
			}
			total += s.GetCounter().GetValue()
		}
	}
	if total != 16*200 {
		t.Errorf("counted %v calls, want %d", total, 16*200)
	}
	if len(tenants) != 4 || !tenants["other"] {
		t.Errorf("tenant labels %v, want 3 and other", tenants)
	}
	if len(servers) != 3 || !servers["other"] {
		t.Errorf("server labels %v, want 2 and other", servers)
	}
	for tool := range tools {
		if tool != "a" && tool != "x" && tool != "other" {
			t.Errorf("tool label %q: only listed tools within the bound (a, x) or other", tool)
		}
	}
	if got := testutil.CollectAndCount(reg, telemetry.MetricCalls); got > 4*3*3*7 {
		t.Errorf("%d call series, more than the bounds allow", got)
	}
}

// TestToolLabelsShared: a server listing thousands of tools takes only its share of the tool
// labels; a server listing later still gets labels for its own.
func TestToolLabelsShared(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewCallMetrics(reg, telemetry.Bounds{MaxTools: 10, MaxToolsPerServer: 4})
	if err != nil {
		t.Fatal(err)
	}
	many := make([]string, 5000)
	for i := range many {
		many[i] = fmt.Sprintf("t%d", i)
	}
	var wg sync.WaitGroup
	for range 8 { // concurrent lists of the same server cannot pass its share either
		wg.Go(func() { m.Listed("greedy", many) })
	}
	wg.Wait()
	m.Listed("modest", []string{"read", "write"})
	for _, tc := range []struct{ server, tool string }{{"greedy", "t0"}, {"greedy", "t3"}, {"greedy", "t4"}, {"modest", "read"}, {"modest", "write"}} {
		m.Observe("t", tc.server, "tools/call", tc.tool, telemetry.OutcomeAllowed, true, time.Millisecond)
	}
	tools := map[string]bool{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != telemetry.MetricCalls {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "tool" {
					tools[l.GetValue()] = true
				}
			}
		}
	}
	for _, want := range []string{"t0", "t3", "read", "write", "other"} {
		if !tools[want] {
			t.Errorf("tool labels %v: want %q", tools, want)
		}
	}
	if tools["t4"] {
		t.Errorf("tool labels %v: t4 is past greedy's share of 4", tools)
	}
}

// TestMetricsHandler: with a token, a scrape needs it; without one, only loopback peers are
// answered.
func TestMetricsHandler(t *testing.T) {
	t.Parallel()
	reg := telemetry.NewRegistry()
	for _, tc := range []struct {
		name, token, remote, auth string
		want                      int
	}{
		{"loopback without token", "", "127.0.0.1:5000", "", http.StatusOK},
		{"loopback v6 without token", "", "[::1]:5000", "", http.StatusOK},
		{"remote without token", "", "192.0.2.7:5000", "", http.StatusForbidden},
		{"token given", "s3cret", "192.0.2.7:5000", "Bearer s3cret", http.StatusOK},
		{"wrong token", "s3cret", "127.0.0.1:5000", "Bearer s3cre", http.StatusUnauthorized},
		{"token missing", "s3cret", "127.0.0.1:5000", "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			r.RemoteAddr = tc.remote
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			telemetry.WithMetrics(http.NotFoundHandler(), reg, tc.token).ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.want, w.Body)
			}
			if tc.want == http.StatusOK && !strings.Contains(w.Body.String(), "go_goroutines") {
				t.Fatalf("no metrics served: %.200s", w.Body)
			}
		})
	}
}

// BenchmarkObserve is the metrics' cost on a call's path: a seen (tenant, server, tool).
func BenchmarkObserve(b *testing.B) {
	m, err := telemetry.NewCallMetrics(prometheus.NewRegistry(), telemetry.Bounds{})
	if err != nil {
		b.Fatal(err)
	}
	m.Listed("echo", []string{"echo"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Observe("default", "echo", "tools/call", "echo", telemetry.OutcomeAllowed, true, time.Millisecond)
		}
	})
}
