package tests

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// sample is one line of a Prometheus text exposition.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads a gateway's /metrics (from loopback, where no token is needed).
func scrape(t *testing.T, base string) []sample {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	var out []sample
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return out
}

// parseSample parses `name{k="v",...} value` (no timestamps: the gateway writes none).
func parseSample(line string) (sample, error) {
	s := sample{labels: map[string]string{}}
	sp := strings.LastIndexByte(line, ' ')
	if sp < 0 {
		return s, fmt.Errorf("no value")
	}
	v, err := strconv.ParseFloat(line[sp+1:], 64)
	if err != nil {
		return s, err
	}
	s.value = v
	head := line[:sp]
	brace := strings.IndexByte(head, '{')
	if brace < 0 {
		s.name = head
		return s, nil
	}
	s.name = head[:brace]
	rest := strings.TrimSuffix(head[brace+1:], "}")
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq < 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
			return s, fmt.Errorf("bad labels %q", rest)
		}
		key := rest[:eq]
		var val strings.Builder
		i := eq + 2
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(rest[i])
				}
				continue
			}
			val.WriteByte(rest[i])
		}
		s.labels[key] = val.String()
		rest = strings.TrimPrefix(rest[min(i+1, len(rest)):], ",")
	}
	return s, nil
}

// sum adds the samples named name whose labels include every pair of match.
func sum(samples []sample, name string, match map[string]string) float64 {
	var total float64
next:
	for _, s := range samples {
		if s.name != name {
			continue
		}
		for k, v := range match {
			if s.labels[k] != v {
				continue next
			}
		}
		total += s.value
	}
	return total
}

// auditToMetric is how the metrics' outcomes fold into the audit record's.
var auditToMetric = map[string][]string{
	"OUTCOME_ALLOWED":   {"allowed"},
	"OUTCOME_DENIED":    {"denied", "quota_refused", "quarantined"},
	"OUTCOME_FAILED":    {"failed", "breaker_refused"},
	"OUTCOME_TIMED_OUT": {"timed_out"},
}

// TestMetricsAgreeWithAudit: a scripted workload through the official Go SDK client (calls
// allowed, denied by a policy, failed by the upstream, timed out) leaves exactly one outcome
// record per call in the audit log, with the right outcome, and /metrics counts the same
// calls by the same outcomes, method by method.
func TestMetricsAgreeWithAudit(t *testing.T) {
	t.Parallel()
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	policies := policyDir(t, map[string]string{"no-add.cedar": `@id("no-add")
forbid (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.name == "add" };
`})
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("echo", echo) + "    timeout: 2s\n",
		Args:   []string{"--policy-dir", policies},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := g.Connect(t, ctx, "echo")
	defer cs.Close()
	if _, err := cs.ListTools(ctx, nil); err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	want := map[string]int{"allowed": 3, "denied": 2, "failed": 2, "timed_out": 1}
	wantTool := map[string]string{"allowed": "echo", "denied": "add", "failed": "no-such-tool", "timed_out": "hang"}
	call := func(outcome string) {
		t.Helper()
		args := map[string]any{"text": "hi"}
		switch outcome {
		case "denied":
			args = map[string]any{"a": 1, "b": 2}
		case "timed_out":
			args = map[string]any{"seconds": 15}
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: wantTool[outcome], Arguments: args})
		if outcome == "allowed" {
			if err != nil || res.IsError {
				t.Fatalf("echo: %v %+v", err, res)
			}
			return
		}
		if err == nil {
			t.Fatalf("%s: no error, want one (%s)", wantTool[outcome], outcome)
		}
	}
	for _, o := range []string{"allowed", "denied", "failed", "allowed", "timed_out", "denied", "failed", "allowed"} {
		call(o)
	}

	// Every call's outcome record (deferred ones included) is in the log.
	calls := 0
	for _, n := range want {
		calls += n
	}
	var records []auditRecord
	testsync.WaitFor(t, 30*time.Second, "an outcome record of every tools/call", func() bool {
		records = records[:0]
		for _, r := range auditRecords(t, g.DataDir) {
			if r.Method == "tools/call" && r.Phase != "PHASE_DECISION" {
				records = append(records, r)
			}
		}
		return len(records) >= calls
	})
	byOutcome := map[string]int{}
	for _, r := range records {
		byOutcome[r.Outcome]++
	}
	wantAudit := map[string]int{"OUTCOME_ALLOWED": 3, "OUTCOME_DENIED": 2, "OUTCOME_FAILED": 2, "OUTCOME_TIMED_OUT": 1}
	if fmt.Sprint(byOutcome) != fmt.Sprint(wantAudit) {
		t.Fatalf("audit outcomes of tools/call %v, want %v (one record per call)", byOutcome, wantAudit)
	}

	m := scrape(t, g.Base)
	for outcome, n := range want {
		got := sum(m, "gatehouse_calls_total", map[string]string{"method": "tools/call", "outcome": outcome, "server": "echo", "tenant": "default"})
		if int(got) != n {
			t.Errorf("gatehouse_calls_total{method=tools/call,outcome=%s} = %v, want %d", outcome, got, n)
		}
	}
	// Listed tools are labels of their own; a name the server never listed is "other".
	for tool, n := range map[string]float64{"echo": 3, "add": 2, "hang": 1, "other": 2} {
		if got := sum(m, "gatehouse_calls_total", map[string]string{"method": "tools/call", "tool": tool}); got != n {
			t.Errorf("gatehouse_calls_total{tool=%s} = %v, want %v", tool, got, n)
		}
	}
	if got := sum(m, "gatehouse_policy_denials_total", map[string]string{"tenant": "default", "server": "echo", "tool": "add"}); got != 2 {
		t.Errorf("gatehouse_policy_denials_total{tool=add} = %v, want 2", got)
	}
	// The latency of calls that reached the upstream: the three echoes.
	if got := sum(m, "gatehouse_tool_call_duration_seconds_count", map[string]string{"tool": "echo"}); got != 3 {
		t.Errorf("gatehouse_tool_call_duration_seconds_count{tool=echo} = %v, want 3", got)
	}
	if got := sum(m, "gatehouse_upstream_errors_total", map[string]string{"server": "echo", "reason": "error_response"}); got != 2 {
		t.Errorf("gatehouse_upstream_errors_total{reason=error_response} = %v, want 2", got)
	}
	if got := sum(m, "gatehouse_upstream_errors_total", map[string]string{"server": "echo", "reason": "upstream_timeout"}); got != 1 {
		t.Errorf("gatehouse_upstream_errors_total{reason=upstream_timeout} = %v, want 1", got)
	}
	if got := sum(m, "gatehouse_stdio_children", nil); got != 1 {
		t.Errorf("gatehouse_stdio_children = %v, want 1", got)
	}
	if got := sum(m, "gatehouse_audit_append_duration_seconds_count", nil); got < float64(len(records)) {
		t.Errorf("gatehouse_audit_append_duration_seconds_count = %v, want at least %d", got, len(records))
	}

	// Count for count, every decided method (initialize is audited by its own room).
	audited := map[string]map[string]int{}
	for _, r := range auditRecords(t, g.DataDir) {
		if r.Phase == "PHASE_DECISION" || r.Method == "initialize" || strings.HasPrefix(r.Method, "gatehouse/") {
			continue
		}
		if audited[r.Method] == nil {
			audited[r.Method] = map[string]int{}
		}
		audited[r.Method][r.Outcome] += max(r.Count, 1)
	}
	for method, outcomes := range audited {
		for outcome, n := range outcomes {
			var got float64
			for _, mo := range auditToMetric[outcome] {
				got += sum(m, "gatehouse_calls_total", map[string]string{"method": method, "outcome": mo})
			}
			if int(got) != n {
				t.Errorf("%s %s: /metrics counts %v, the audit log %d", method, outcome, got, n)
			}
		}
	}
	for _, s := range m {
		if s.name == "gatehouse_calls_total" && s.value > 0 && audited[s.labels["method"]] == nil {
			t.Errorf("/metrics counts %v calls of %s, the audit log none", s.value, s.labels["method"])
		}
	}
}

// TestMetricsBoundedSeries: a host calling 10,000 distinct tool names the server never
// listed adds no series beyond the "other" ones a first such call makes.
func TestMetricsBoundedSeries(t *testing.T) {
	t.Parallel()
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{Config: "servers:\n" + stdioEntry("echo", echo)})
	c := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	sess := session(c.initialize("2025-06-18"))
	c.post(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, sess)
	// One bogus name first: the "other" series exist before the count.
	if r := c.post(toolCall("bogus-first", `{}`), sess); r.status != http.StatusOK {
		t.Fatalf("bogus call: %d %s", r.status, r.body)
	}
	before := len(scrape(t, g.Base))

	const names, workers = 10000, 8
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var next atomic.Int64
	var failures atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		// A session each: the calls of one session would share the request id.
		sess := session(c.initialize("2025-06-18"))
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > names || ctx.Err() != nil {
					return
				}
				r, err := postRaw(ctx, http.DefaultClient, g.Endpoint("echo"), g.Token, toolCall(fmt.Sprintf("bogus-%d-%x", i, i*7919), `{}`), sess)
				if err != nil || r.status != http.StatusOK {
					failures.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failures.Load(); n > 0 || ctx.Err() != nil {
		t.Fatalf("%d of %d bogus calls failed at the HTTP level (or the test timed out: %v)", n, names, ctx.Err())
	}
	m := scrape(t, g.Base)
	// Runtime metrics (the Go collector's) may gain a series or two; calls add none.
	if after := len(m); after > before+5 {
		t.Fatalf("series %d before 10,000 bogus tool names, %d after", before, after)
	}
	if got := sum(m, "gatehouse_calls_total", map[string]string{"tool": "other", "outcome": "failed"}); got != names+1 {
		t.Errorf("gatehouse_calls_total{tool=other,outcome=failed} = %v, want %d", got, names+1)
	}
	for _, s := range m {
		if strings.HasPrefix(s.labels["tool"], "bogus") {
			t.Fatalf("a bogus tool name became a label: %+v", s)
		}
	}
	if got := sum(m, "gatehouse_metrics_label_overflow_total", map[string]string{"label": "tool"}); got < names {
		t.Errorf("gatehouse_metrics_label_overflow_total{label=tool} = %v, want at least %d", got, names)
	}
}

// TestNoMetrics: `gatehouse up --no-metrics` counts nothing and serves no /metrics, and calls
// go through as before (bench/ measures what metrics cost with it).
func TestNoMetrics(t *testing.T) {
	t.Parallel()
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("echo", echo),
		Args:   []string{"--no-metrics"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := g.Connect(t, ctx, "echo")
	defer cs.Close()
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); err != nil || res.IsError {
		t.Fatalf("echo: %v %+v", err, res)
	}
	resp, err := http.Get(g.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /metrics with --no-metrics: %d, want 404", resp.StatusCode)
	}
}
