package report_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/report"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
)

// TestCosts: a variant's cost over the default gateway pairs the runs of one repeat, and
// counts the side processes' CPU with the hop's.
func TestCosts(t *testing.T) {
	t.Parallel()
	r := &report.Report{
		Params: report.Params{Sessions: []int{1}, Sizes: []int{64}, Repeats: 3, Observe: true},
		Paths:  []report.Path{{Name: report.Direct}, {Name: report.Proxy, Hop: "proxy"}, {Name: report.Gateway, Hop: "gatehouse"}, {Name: "traced", Hop: "gatehouse", Side: "1"}},
	}
	add := func(path string, repeat int, hopMs, sideMs int, p50 float64) {
		side := time.Duration(-1)
		if sideMs >= 0 {
			side = time.Duration(sideMs) * time.Millisecond
		}
		r.Runs = append(r.Runs, report.Run{Path: path, Size: 64, Sessions: 1, Repeat: repeat, Outcome: report.Outcome{
			Calls: 1000, Elapsed: time.Second, Latency: stats.Latency{P50: p50},
			HopCPU: time.Duration(hopMs) * time.Millisecond, UpstreamCPU: -1, ClientCPU: -1, SideCPU: side,
		}})
	}
	for i, rep := range []int{1, 2, 3} {
		add(report.Direct, rep, 0, -1, 100)
		add(report.Proxy, rep, 100, -1, 150)
		add(report.Gateway, rep, []int{500, 600, 700}[i], -1, 400)
		// 10, 30, 20 µs more of the gateway's own CPU, 40 µs of the sink's; p50 5, 15, 10 more.
		add("traced", rep, []int{510, 630, 720}[i], 40, 400+[]float64{5, 15, 10}[i])
	}
	costs := r.Costs(report.Workload{Size: 64, Sessions: 1}, report.Gateway)
	if len(costs) != 3 || costs[0].Path != report.Proxy || costs[2].Path != "traced" {
		t.Fatalf("costs of %v, want floor 2, gatehouse and traced", costs)
	}
	traced := costs[2]
	if traced.OverCPU.N != 3 || traced.OverCPU.Median != 60 || traced.OverCPU.Min != 50 || traced.OverCPU.Max != 70 {
		t.Errorf("traced over gatehouse: CPU %+v, want median 60 µs (50–70)", traced.OverCPU)
	}
	if traced.OverP50.Median != 10 {
		t.Errorf("traced over gatehouse: p50 %+v, want median 10 µs", traced.OverP50)
	}
	if traced.OverBareCPU.Median != 570 || costs[1].OverBareCPU.Median != 500 || costs[0].OverBareCPU.N != 0 {
		t.Errorf("over floor 2: traced %+v, gatehouse %+v, floor 2 %+v; want 570, 500 and none", traced.OverBareCPU, costs[1].OverBareCPU, costs[0].OverBareCPU)
	}
	if costs[1].OverCPU.N != 0 {
		t.Errorf("the base has a cost over itself: %+v", costs[1].OverCPU)
	}
	// A side read that failed is no figure, not a saving.
	r.Runs[len(r.Runs)-1].SideCPU = -1
	if c := r.Costs(report.Workload{Size: 64, Sessions: 1}, report.Gateway)[2]; c.CPU.N != 2 {
		t.Errorf("traced with a failed side read: %d CPU figures, want 2 (the third is unknown)", c.CPU.N)
	}
	md := r.Markdown()
	if !strings.Contains(md, "## What each part costs a call") || strings.Contains(md, "## Goals") {
		t.Errorf("observe report: want the costs and no goals:\n%s", md)
	}
}
