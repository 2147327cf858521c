package report_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/report"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
)

// sample builds a report of three repeats of four paths at 64 B, 1 session,
// with latencies chosen so every derived figure is easy to check by hand.
func sample() *report.Report {
	r := &report.Report{
		Machine: report.Machine{CPUs: 2, CPUModel: "Test CPU", Kernel: "Linux 6.1", GoVersion: "go1.26.8", Commit: "abc1234", Date: time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)},
		Params:  report.Params{Command: "gatebench", Sessions: []int{1}, Sizes: []int{64}, Calls: map[report.Workload]int{{Size: 64, Sessions: 1}: 1000}, Warmup: 100, Repeats: 3, Protocol: "2025-11-25"},
		Paths: []report.Path{
			{Name: "floor 0", Description: "raw HTTP echo", Upstream: "raw echo"},
			{Name: report.Direct, Description: "SDK client to echo", Upstream: "echo"},
			{Name: report.Proxy, Description: "through a reverse proxy", Hop: "proxy", Upstream: "echo"},
			{Name: "gatehouse", Description: "through the gateway", Hop: "gatehouse", Upstream: "echo"},
		},
	}
	// p50 per repeat: floor 1 = 100,110,120; floor 2 = +10,+20,+30; gatehouse = +100,+90,+200.
	base := []float64{100, 110, 120}
	add := map[string][]float64{"floor 0": {-50, -50, -50}, report.Direct: {0, 0, 0}, report.Proxy: {10, 20, 30}, "gatehouse": {100, 90, 200}}
	for rep := range 3 {
		for _, p := range []string{"floor 0", report.Direct, report.Proxy, "gatehouse"} {
			p50 := base[rep] + add[p][rep]
			hop := time.Duration(rep+1) * 100 * time.Millisecond
			if p == "floor 0" || p == report.Direct {
				hop = -1
			}
			r.Runs = append(r.Runs, report.Run{Path: p, Size: 64, Sessions: 1, Repeat: rep + 1, Outcome: report.Outcome{
				Calls:       1000,
				Elapsed:     time.Duration(rep+1) * time.Second,
				Latency:     stats.Latency{P50: p50, P90: p50 * 1.5, P99: p50 * 2, Max: p50 * 3},
				HopCPU:      hop,
				UpstreamCPU: -1,
				ClientCPU:   -1,
			}})
		}
	}
	return r
}

func TestCell(t *testing.T) {
	t.Parallel()
	r := sample()
	tests := []struct {
		path                       string
		wantTput, wantP50, wantHop float64
		wantTputMin, wantTputMax   float64
		wantP50Min, wantP50Max     float64
		wantHopN, wantRuns         int
	}{
		{path: report.Direct, wantTput: 500, wantTputMin: 1000.0 / 3, wantTputMax: 1000, wantP50: 110, wantP50Min: 100, wantP50Max: 120, wantHop: math.NaN(), wantRuns: 3},
		{path: "gatehouse", wantTput: 500, wantTputMin: 1000.0 / 3, wantTputMax: 1000, wantP50: 200, wantP50Min: 200, wantP50Max: 320, wantHop: 0.2, wantHopN: 3, wantRuns: 3},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			c := r.Cell(tc.path, 64, 1)
			if c.Runs != tc.wantRuns || c.Failed != 0 || c.Errors != 0 {
				t.Fatalf("runs/failed/errors = %d/%d/%d", c.Runs, c.Failed, c.Errors)
			}
			check := func(name string, got, want float64) {
				t.Helper()
				if math.IsNaN(want) != math.IsNaN(got) || math.Abs(got-want) > 1e-9 {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
			check("throughput median", c.Throughput.Median, tc.wantTput)
			check("throughput min", c.Throughput.Min, tc.wantTputMin)
			check("throughput max", c.Throughput.Max, tc.wantTputMax)
			check("p50 median", c.P50.Median, tc.wantP50)
			check("p50 min", c.P50.Min, tc.wantP50Min)
			check("p50 max", c.P50.Max, tc.wantP50Max)
			check("hop CPU s/1k", c.HopCPU.Median, tc.wantHop)
			if c.HopCPU.N != tc.wantHopN {
				t.Errorf("hop CPU has %d samples, want %d", c.HopCPU.N, tc.wantHopN)
			}
			if c.UpstreamCPU.N != 0 {
				t.Errorf("upstream CPU has %d samples, want none (not measured)", c.UpstreamCPU.N)
			}
		})
	}
}

func TestAdded(t *testing.T) {
	t.Parallel()
	r := sample()
	tests := []struct {
		path                   string
		wantMedian, wantMin    float64
		wantMax, wantP99Median float64
	}{
		{path: report.Proxy, wantMedian: 20, wantMin: 10, wantMax: 30, wantP99Median: 40},
		{path: "gatehouse", wantMedian: 100, wantMin: 90, wantMax: 200, wantP99Median: 200},
		{path: report.Direct, wantMedian: 0, wantMin: 0, wantMax: 0, wantP99Median: 0},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			a := r.Added(tc.path, 64, 1)
			if a.P50.N != 3 || a.P50.Median != tc.wantMedian || a.P50.Min != tc.wantMin || a.P50.Max != tc.wantMax {
				t.Fatalf("added p50 = %+v, want median %v (%v–%v)", a.P50, tc.wantMedian, tc.wantMin, tc.wantMax)
			}
			if a.P99.Median != tc.wantP99Median {
				t.Fatalf("added p99 median = %v, want %v", a.P99.Median, tc.wantP99Median)
			}
		})
	}
}

func TestAddedSkipsUnpairedAndFailed(t *testing.T) {
	t.Parallel()
	r := sample()
	// Repeat 2 of floor 1 failed: its gatehouse run has nothing to pair with.
	for i := range r.Runs {
		if r.Runs[i].Path == report.Direct && r.Runs[i].Repeat == 2 {
			r.Runs[i].Failed = "connect: refused"
		}
	}
	a := r.Added("gatehouse", 64, 1)
	if a.P50.N != 2 || a.P50.Min != 100 || a.P50.Max != 200 {
		t.Fatalf("added p50 = %+v, want the two paired repeats (100, 200)", a.P50)
	}
	if c := r.Cell(report.Direct, 64, 1); c.Failed != 1 || c.FirstError != "connect: refused" || c.P50.N != 2 {
		t.Fatalf("cell = %+v", c)
	}
}

func TestRatio(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		gateway, floor float64
		want           float64
	}{
		{name: "five times", gateway: 100, floor: 20, want: 5},
		{name: "below floor", gateway: 10, floor: 20, want: 0.5},
		{name: "zero floor", gateway: 10, floor: 0, want: math.NaN()},
		{name: "negative floor", gateway: 10, floor: -3, want: math.NaN()},
		{name: "NaN gateway", gateway: math.NaN(), floor: 3, want: math.NaN()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := report.Ratio(tc.gateway, tc.floor)
			if math.IsNaN(tc.want) != math.IsNaN(got) || (!math.IsNaN(got) && got != tc.want) {
				t.Fatalf("Ratio(%v, %v) = %v, want %v", tc.gateway, tc.floor, got, tc.want)
			}
		})
	}
}

func TestMarkdown(t *testing.T) {
	t.Parallel()
	r := sample()
	r.Notes = []string{"a note\nover | two lines"}
	r.Runs = append(r.Runs, report.Run{Path: "gatehouse", Size: 64, Sessions: 1, Repeat: 4, Outcome: report.Outcome{Failed: "boom | bang\nsecond line"}})
	md := r.Markdown()
	for _, want := range []string{
		"# Gatehouse benchmarks",
		"- Commit: abc1234",
		"- Machine: 2 CPUs, Test CPU; Linux 6.1",
		"- Go: go1.26.8",
		"## tools/call echo, 64 B arguments",
		"### 1 session, 1000 calls per run",
		"| floor 1 | 500 (333–1000) | 110 (100–120) | 220 (200–240) | — | — | — | 0 |",
		"| gatehouse | 500 (333–1000) | 200 (200–320) | 400 (400–640) | 0.200 (0.100–0.300) | — | — | 0, 1/4 runs failed |",
		"| 1 | floor 2 | 20 (10–30) | 40 (20–60) | — | — |",
		"| 1 | gatehouse | 100 (90–200) | 200 (180–400) | 5.0× | 5.0× |",
		"boom \\| bang second line",
		"- a note over \\| two lines",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "NaN") {
		t.Error("report prints NaN")
	}
	if t.Failed() {
		t.Log(md)
	}
}
