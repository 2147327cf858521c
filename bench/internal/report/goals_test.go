package report_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/report"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
)

// goalSample builds three repeats of floors 1–3 and the gateway at the three
// goal workloads, with figures whose ratios are easy to work out by hand:
//
//	(a) 64 B, 1 session: added p50 gatehouse 300, 200, 150; floor 3 200, 200, 100
//	    → ratios 1.5, 1.0, 1.5
//	(b) 64 B, 32 sessions: calls/s floor 1 1000; floor 2 700; gatehouse 600, 650, 700
//	    → ratios 0.60, 0.65, 0.70 (floor 2: 0.70)
//	(c) 16 KiB, 1 session: added p50 gatehouse 450, 500, 400; fdatasync p50 150, 200, 100;
//	    floor 2 added 100, 200, 100 → ratios 3.0, 1.5, 3.0
func goalSample() *report.Report {
	r := &report.Report{
		Params: report.Params{Sessions: []int{1, 32}, Sizes: []int{64, 16384}, Repeats: 3, ProbeAppends: 200, RecordSize: 200},
		Paths: []report.Path{
			{Name: report.Direct}, {Name: report.Proxy, Hop: "proxy"}, {Name: report.Durable, Hop: "durable proxy"}, {Name: report.Gateway, Hop: "gatehouse"},
		},
	}
	type fig struct{ p50, tput float64 }
	add := func(path string, size, sessions, repeat int, f fig) {
		const calls = 1000
		r.Runs = append(r.Runs, report.Run{Path: path, Size: size, Sessions: sessions, Repeat: repeat, Outcome: report.Outcome{
			Calls:   calls,
			Elapsed: time.Duration(calls / f.tput * float64(time.Second)),
			Latency: stats.Latency{P50: f.p50, P90: f.p50, P99: f.p50 * 2, Max: f.p50 * 3},
			HopCPU:  -1, UpstreamCPU: -1, ClientCPU: -1,
		}})
	}
	for i, rep := range []int{1, 2, 3} {
		base := []float64{100, 110, 120}[i]
		add(report.Direct, 64, 1, rep, fig{base, 1000})
		add(report.Proxy, 64, 1, rep, fig{base + []float64{50, 60, 40}[i], 900})
		add(report.Durable, 64, 1, rep, fig{base + []float64{200, 200, 100}[i], 800})
		add(report.Gateway, 64, 1, rep, fig{base + []float64{300, 200, 150}[i], 700})

		add(report.Direct, 64, 32, rep, fig{5000, 1000})
		add(report.Proxy, 64, 32, rep, fig{6000, 700})
		add(report.Durable, 64, 32, rep, fig{6500, 650})
		add(report.Gateway, 64, 32, rep, fig{7000, []float64{600, 650, 700}[i]})

		add(report.Direct, 16384, 1, rep, fig{1000, 1000})
		add(report.Proxy, 16384, 1, rep, fig{1000 + []float64{100, 200, 100}[i], 900})
		add(report.Durable, 16384, 1, rep, fig{1400, 800})
		add(report.Gateway, 16384, 1, rep, fig{1000 + []float64{450, 500, 400}[i], 700})
		for _, w := range []report.Workload{{Size: 64, Sessions: 1}, {Size: 64, Sessions: 32}, {Size: 16384, Sessions: 1}} {
			p50 := []float64{150, 200, 100}[i]
			r.Probes = append(r.Probes, report.Probe{Size: w.Size, Sessions: w.Sessions, Repeat: rep, Appends: 200, Latency: stats.Latency{P50: p50, P99: 2 * p50}})
		}
	}
	return r
}

func TestGoals(t *testing.T) {
	t.Parallel()
	type want struct {
		id                    string
		workload              report.Workload
		median, min, max      float64
		n, within             int
		status, detailContain string
	}
	tests := []struct {
		name   string
		mutate func(*report.Report)
		want   []want
	}{
		{
			name: "as sampled",
			want: []want{
				{id: "a", workload: report.Workload{Size: 64, Sessions: 1}, median: 1.5, min: 1.0, max: 1.5, n: 3, within: 1, status: "not met", detailContain: "gatehouse 200 µs, floor 3 200 µs"},
				{id: "b", workload: report.Workload{Size: 64, Sessions: 32}, median: 0.65, min: 0.6, max: 0.7, n: 3, within: 2, status: "met", detailContain: "floor 1's: 0.70"},
				{id: "c", workload: report.Workload{Size: 16384, Sessions: 1}, median: 3.0, min: 1.5, max: 3.0, n: 3, within: 1, status: "not met", detailContain: "fdatasync p50 150 µs"},
			},
		},
		{
			name: "gateway within the floors",
			mutate: func(r *report.Report) {
				for i, run := range r.Runs {
					if run.Path != report.Gateway {
						continue
					}
					switch run.Size<<8 | run.Sessions {
					case 64<<8 | 1: // added p50 = floor 3's + 10 %
						f3, _ := find(r, report.Durable, run.Size, run.Sessions, run.Repeat)
						d, _ := find(r, report.Direct, run.Size, run.Sessions, run.Repeat)
						r.Runs[i].Latency.P50 = d.Latency.P50 + 1.1*(f3.Latency.P50-d.Latency.P50)
					case 64<<8 | 32: // 90 % of floor 1's calls/s
						r.Runs[i].Elapsed = time.Duration(float64(run.Calls) / 900 * float64(time.Second))
					case 16384<<8 | 1: // fdatasync plus the floor-2 hop exactly
						p, _ := find(r, report.Proxy, run.Size, run.Sessions, run.Repeat)
						probe := []float64{150, 200, 100}[run.Repeat-1]
						r.Runs[i].Latency.P50 = p.Latency.P50 + probe
					}
				}
			},
			want: []want{
				{id: "a", workload: report.Workload{Size: 64, Sessions: 1}, median: 1.1, min: 1.1, max: 1.1, n: 3, within: 3, status: "met"},
				{id: "b", workload: report.Workload{Size: 64, Sessions: 32}, median: 0.9, min: 0.9, max: 0.9, n: 3, within: 3, status: "met"},
				{id: "c", workload: report.Workload{Size: 16384, Sessions: 1}, median: 1.0, min: 1.0, max: 1.0, n: 3, within: 3, status: "met"},
			},
		},
		{
			name: "failed and unpaired runs are left out",
			mutate: func(r *report.Report) {
				for i, run := range r.Runs {
					// Repeat 1's gateway run at (a) failed; repeat 3 of floor 1 at (b) too.
					if (run.Path == report.Gateway && run.Size == 64 && run.Sessions == 1 && run.Repeat == 1) ||
						(run.Path == report.Direct && run.Size == 64 && run.Sessions == 32 && run.Repeat == 3) {
						r.Runs[i].Failed = "boom"
					}
				}
				// Repeat 2's probe at (c) failed.
				for i, p := range r.Probes {
					if p.Size == 16384 && p.Repeat == 2 {
						r.Probes[i].Failed = "disk full"
					}
				}
			},
			want: []want{
				{id: "a", workload: report.Workload{Size: 64, Sessions: 1}, median: 1.25, min: 1.0, max: 1.5, n: 2, within: 1, status: "met"},
				{id: "b", workload: report.Workload{Size: 64, Sessions: 32}, median: 0.625, min: 0.6, max: 0.65, n: 2, within: 1, status: "met"},
				{id: "c", workload: report.Workload{Size: 16384, Sessions: 1}, median: 3.0, min: 3.0, max: 3.0, n: 2, within: 0, status: "not met"},
			},
		},
		{
			name: "a floor that adds nothing gives no ratio",
			mutate: func(r *report.Report) {
				for i, run := range r.Runs {
					if run.Path == report.Durable && run.Size == 64 && run.Sessions == 1 {
						d, _ := find(r, report.Direct, run.Size, run.Sessions, run.Repeat)
						r.Runs[i].Latency.P50 = d.Latency.P50
					}
				}
			},
			want: []want{
				{id: "a", workload: report.Workload{Size: 64, Sessions: 1}, n: 0, status: "not measured", detailContain: ""},
				{id: "b", workload: report.Workload{Size: 64, Sessions: 32}, median: 0.65, min: 0.6, max: 0.7, n: 3, within: 2, status: "met"},
				{id: "c", workload: report.Workload{Size: 16384, Sessions: 1}, median: 3.0, min: 1.5, max: 3.0, n: 3, within: 1, status: "not met"},
			},
		},
		{
			name: "workloads not run",
			mutate: func(r *report.Report) {
				r.Params.Sessions = []int{1}
				r.Params.Sizes = []int{64}
			},
			want: []want{
				{id: "a", workload: report.Workload{Size: 64, Sessions: 1}, median: 1.5, min: 1.0, max: 1.5, n: 3, within: 1, status: "not met"},
				{id: "b", n: 0, status: "not measured"},
				{id: "c", n: 0, status: "not measured"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := goalSample()
			if tc.mutate != nil {
				tc.mutate(r)
			}
			goals := r.Goals()
			if len(goals) != len(tc.want) {
				t.Fatalf("%d goals, want %d", len(goals), len(tc.want))
			}
			for i, w := range tc.want {
				g := goals[i]
				if g.ID != w.id || g.Workload != w.workload || g.Ratio.N != w.n || g.Status() != w.status {
					t.Errorf("goal %s: id %s, workload %+v, %d ratios, %s; want %s, %+v, %d, %s (%s)", w.id, g.ID, g.Workload, g.Ratio.N, g.Status(), w.id, w.workload, w.n, w.status, g.Missing)
					continue
				}
				if w.n == 0 {
					if g.Missing == "" {
						t.Errorf("goal %s: not measured without a reason", w.id)
					}
					continue
				}
				near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
				if !near(g.Ratio.Median, w.median) || !near(g.Ratio.Min, w.min) || !near(g.Ratio.Max, w.max) || g.Within != w.within {
					t.Errorf("goal %s: ratio %v (%v–%v), %d within; want %v (%v–%v), %d", w.id, g.Ratio.Median, g.Ratio.Min, g.Ratio.Max, g.Within, w.median, w.min, w.max, w.within)
				}
				if !strings.Contains(g.Detail, w.detailContain) {
					t.Errorf("goal %s: detail %q lacks %q", w.id, g.Detail, w.detailContain)
				}
			}
		})
	}
}

// find is the run of path at (size, sessions, repeat).
func find(r *report.Report, path string, size, sessions, repeat int) (report.Run, bool) {
	for _, run := range r.Runs {
		if run.Path == path && run.Size == size && run.Sessions == sessions && run.Repeat == repeat {
			return run, true
		}
	}
	return report.Run{}, false
}

func TestGoalBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		goal   report.Goal
		median float64
		want   string
	}{
		{name: "at most, on the bound", goal: report.Goal{Bound: 1.25, AtMost: true}, median: 1.25, want: "met"},
		{name: "at most, above", goal: report.Goal{Bound: 1.25, AtMost: true}, median: 1.26, want: "not met"},
		{name: "at least, on the bound", goal: report.Goal{Bound: 0.62}, median: 0.62, want: "met"},
		{name: "at least, below", goal: report.Goal{Bound: 0.62}, median: 0.61, want: "not met"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := tc.goal
			g.Ratio = stats.Summarize([]float64{tc.median})
			if got := g.Status(); got != tc.want {
				t.Fatalf("status of %v against %s = %s, want %s", tc.median, g.BoundText(), got, tc.want)
			}
		})
	}
	if got := (report.Goal{Bound: 1.5, AtMost: true}).Status(); got != "not measured" {
		t.Fatalf("status without ratios = %s", got)
	}
}

func TestMarkdownGoals(t *testing.T) {
	t.Parallel()
	r := goalSample()
	r.Machine.AuditDisk = "ext4 (/tmp/x)"
	md := r.Markdown()
	for _, want := range []string{
		"- Audit disk: ext4 (/tmp/x)",
		"## The audit disk",
		"p50 150 (100–200) µs, p99 300 (200–400) µs",
		"| 16 KiB | 1 | 150 (100–200) | 300 (200–400) | 3 |",
		"## Goals",
		"| (a) gatehouse's added p50 over floor 1 ÷ floor 3's | 64 B, 1 session | ≤ 1.25 | 1.50 (1.00–1.50) | 1/3 | **not met** |",
		"| (b) gatehouse's calls/s ÷ floor 1's | 64 B, 32 sessions | ≥ 0.62 | 0.65 (0.60–0.70) | 2/3 | **met** |",
		"| (c) (gatehouse's added p50 − fdatasync p50) ÷ floor 2's added p50 | 16 KiB, 1 session | ≤ 1.5 | 3.00 (1.50–3.00) | 1/3 | **not met** |",
		"| 1 | floor 3 | 200 (100–200) | 400 (200–400) | 4.0× | 4.0× | — |",
		"| 1 | gatehouse | 200 (150–300) | 400 (300–600) | 4.0× | 4.0× | 1.0× |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "NaN") || strings.Contains(md, "Quick run") {
		t.Error("report prints NaN or calls itself a quick run")
	}
	r.Params.Quick = true
	if !strings.Contains(r.Markdown(), "Quick run (smoke test)") {
		t.Error("a quick run's report does not say so")
	}
	if t.Failed() {
		t.Log(md)
	}
}
