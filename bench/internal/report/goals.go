package report

import (
	"fmt"
	"math"
	"slices"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
)

// The workloads the goals of issue 5 (item 9) are stated at.
const (
	// GoalLatencySessions and GoalThroughputSessions are the concurrency
	// levels of goals (a) and (c), and (b).
	GoalLatencySessions    = 1
	GoalThroughputSessions = 32
	// GoalLargeSize is the arguments size of goal (c): 16 KiB.
	GoalLargeSize = 16 << 10
)

// Goal is one of the cost goals, computed from the runs of one report: a
// ratio per repeat, from runs of the same interleaved cycle, summarised over
// the repeats.
type Goal struct {
	ID    string // "a", "b", "c"
	Title string // what the ratio divides
	// Workload is where the goal is measured; Size 0 when it was not.
	Workload Workload
	// Bound is the goal: the median ratio must be at most Bound when AtMost,
	// at least Bound otherwise.
	Bound  float64
	AtMost bool
	// Ratio summarises the per-repeat ratios (N is 0 when none could be
	// computed); Within counts the repeats whose ratio meets the bound.
	Ratio  stats.Summary
	Within int
	// Detail states the figures the ratio comes from (medians over the same
	// repeats), and for (b) floor 2's ratio beside it.
	Detail string
	// Missing says why the goal could not be computed ("" when it was).
	Missing string
}

// Met reports whether the median ratio meets the bound (false when not
// measured).
func (g Goal) Met() bool {
	if g.Ratio.N == 0 || math.IsNaN(g.Ratio.Median) {
		return false
	}
	return g.within(g.Ratio.Median)
}

func (g Goal) within(x float64) bool {
	if g.AtMost {
		return x <= g.Bound
	}
	return x >= g.Bound
}

// BoundText renders the bound: "≤ 1.25", "≥ 0.62".
func (g Goal) BoundText() string {
	if g.AtMost {
		return fmt.Sprintf("≤ %g", g.Bound)
	}
	return fmt.Sprintf("≥ %g", g.Bound)
}

// Status is "met", "not met" or "not measured".
func (g Goal) Status() string {
	switch {
	case g.Ratio.N == 0:
		return "not measured"
	case g.Met():
		return "met"
	default:
		return "not met"
	}
}

// Goals computes the three goals of issue 5, item 9:
//
//	(a) at 1 session, the smallest size: gatehouse's added p50 over floor 1
//	    ÷ floor 3's added p50 over floor 1, at most 1.25;
//	(b) at 32 sessions, the smallest size: gatehouse's calls/s ÷ floor 1's,
//	    at least 0.62 (floor 2's ratio beside it);
//	(c) at 1 session, 16 KiB: (gatehouse's added p50 − the fdatasync p50 of
//	    the same cycle) ÷ floor 2's added p50, at most 1.5.
//
// Every ratio pairs runs of one repeat, which ran back to back.
func (r *Report) Goals() []Goal {
	small := 0
	if len(r.Params.Sizes) > 0 {
		small = slices.Min(r.Params.Sizes)
	}
	a := Goal{ID: "a", Title: "gatehouse's added p50 over floor 1 ÷ floor 3's", Bound: 1.25, AtMost: true}
	b := Goal{ID: "b", Title: "gatehouse's calls/s ÷ floor 1's", Bound: 0.62}
	c := Goal{ID: "c", Title: "(gatehouse's added p50 − fdatasync p50) ÷ floor 2's added p50", Bound: 1.5, AtMost: true}

	if w, missing := r.goalWorkload(small, GoalLatencySessions); missing != "" {
		a.Missing = missing
	} else {
		a.Workload = w
		var gh, f3 []float64
		a.fill(r, w, func(rep int) float64 {
			d, ok1 := r.runAt(Direct, w, rep)
			g, ok2 := r.runAt(Gateway, w, rep)
			f, ok3 := r.runAt(Durable, w, rep)
			if !ok1 || !ok2 || !ok3 {
				return math.NaN()
			}
			gh = append(gh, g.Latency.P50-d.Latency.P50)
			f3 = append(f3, f.Latency.P50-d.Latency.P50)
			return Ratio(g.Latency.P50-d.Latency.P50, f.Latency.P50-d.Latency.P50)
		})
		a.Detail = fmt.Sprintf("added p50: gatehouse %s µs, floor 3 %s µs", num(stats.Median(gh), 0), num(stats.Median(f3), 0))
	}

	if w, missing := r.goalWorkload(small, GoalThroughputSessions); missing != "" {
		b.Missing = missing
	} else {
		b.Workload = w
		var proxy []float64
		b.fill(r, w, func(rep int) float64 {
			d, ok1 := r.runAt(Direct, w, rep)
			if !ok1 {
				return math.NaN()
			}
			if p, ok := r.runAt(Proxy, w, rep); ok {
				proxy = append(proxy, Ratio(p.Throughput(), d.Throughput()))
			}
			g, ok2 := r.runAt(Gateway, w, rep)
			if !ok2 {
				return math.NaN()
			}
			return Ratio(g.Throughput(), d.Throughput())
		})
		b.Detail = "floor 2's calls/s ÷ floor 1's: " + FormatSummary(stats.Summarize(proxy), 2)
	}

	if w, missing := r.goalWorkload(GoalLargeSize, GoalLatencySessions); missing != "" {
		c.Missing = missing
	} else {
		c.Workload = w
		var gh, fs, f2 []float64
		c.fill(r, w, func(rep int) float64 {
			d, ok1 := r.runAt(Direct, w, rep)
			g, ok2 := r.runAt(Gateway, w, rep)
			p, ok3 := r.runAt(Proxy, w, rep)
			probe, ok4 := r.probeAt(w, rep)
			if !ok1 || !ok2 || !ok3 || !ok4 {
				return math.NaN()
			}
			gh = append(gh, g.Latency.P50-d.Latency.P50)
			fs = append(fs, probe.Latency.P50)
			f2 = append(f2, p.Latency.P50-d.Latency.P50)
			return Ratio(g.Latency.P50-d.Latency.P50-probe.Latency.P50, p.Latency.P50-d.Latency.P50)
		})
		c.Detail = fmt.Sprintf("gatehouse added p50 %s µs, fdatasync p50 %s µs, floor 2 added p50 %s µs",
			num(stats.Median(gh), 0), num(stats.Median(fs), 0), num(stats.Median(f2), 0))
	}
	return []Goal{a, b, c}
}

// fill computes ratio for every repeat of w and summarises the results.
func (g *Goal) fill(r *Report, w Workload, ratio func(repeat int) float64) {
	var xs []float64
	for _, rep := range r.repeats(w) {
		x := ratio(rep)
		if math.IsNaN(x) {
			continue
		}
		xs = append(xs, x)
		if g.within(x) {
			g.Within++
		}
	}
	g.Ratio = stats.Summarize(xs)
	if g.Ratio.N == 0 {
		g.Missing = "no repeat has every path it needs (or a floor added nothing to divide by)"
	}
}

// goalWorkload checks that the report has runs at (size, sessions).
func (r *Report) goalWorkload(size, sessions int) (Workload, string) {
	if !slices.Contains(r.Params.Sizes, size) {
		return Workload{}, fmt.Sprintf("needs %s arguments in -sizes", bytesLabel(size))
	}
	if !slices.Contains(r.Params.Sessions, sessions) {
		return Workload{}, fmt.Sprintf("needs %d in -sessions", sessions)
	}
	return Workload{Size: size, Sessions: sessions}, ""
}

// repeats lists the repeat numbers that ran at w, ascending.
func (r *Report) repeats(w Workload) []int {
	var out []int
	for _, run := range r.Runs {
		if run.Size == w.Size && run.Sessions == w.Sessions && !slices.Contains(out, run.Repeat) {
			out = append(out, run.Repeat)
		}
	}
	slices.Sort(out)
	return out
}

// runAt finds the successful run of path at w in repeat.
func (r *Report) runAt(path string, w Workload, repeat int) (Run, bool) {
	for _, run := range r.Runs {
		if run.Path == path && run.Size == w.Size && run.Sessions == w.Sessions && run.Repeat == repeat {
			return run, run.Failed == "" && run.Calls > 0
		}
	}
	return Run{}, false
}

// probeAt finds the successful fdatasync probe of w's cycle repeat.
func (r *Report) probeAt(w Workload, repeat int) (Probe, bool) {
	for _, p := range r.Probes {
		if p.Size == w.Size && p.Sessions == w.Sessions && p.Repeat == repeat {
			return p, p.Failed == "" && p.Appends > 0
		}
	}
	return Probe{}, false
}

// ProbeSummary summarises the fdatasync probes at w (all workloads when w is
// the zero Workload): the median and spread over probes of each probe's p50
// and p99, in µs.
func (r *Report) ProbeSummary(w Workload) (p50, p99 stats.Summary) {
	var a, b []float64
	for _, p := range r.Probes {
		if p.Failed != "" || (w != (Workload{}) && (p.Size != w.Size || p.Sessions != w.Sessions)) {
			continue
		}
		a = append(a, p.Latency.P50)
		b = append(b, p.Latency.P99)
	}
	return stats.Summarize(a), stats.Summarize(b)
}
