package report

import (
	"math"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
)

// Cost is what one path costs a call at one workload, and what it costs over another path
// (the default gateway), each a summary over the repeats. A difference pairs the runs of one
// repeat, which ran back to back.
type Cost struct {
	Path string
	// CPU is the hop's and the side processes' CPU µs per call; Throughput calls/s; P50 µs.
	CPU, Throughput, P50 stats.Summary
	// OverCPU and OverP50 are CPU µs per call and p50 µs over the base path (N 0: this is
	// the base, or it has no paired run); OverBareCPU and OverBareP50 the same over floor 2,
	// the bare hop.
	OverCPU, OverP50, OverBareCPU, OverBareP50 stats.Summary
}

// cpuPerCall is a run's hop and side CPU in µs per call; NaN when the hop was not measured,
// or the path has side processes (side) and their time was not: a cost left out would
// read as a saving.
func cpuPerCall(o Outcome, side bool) float64 {
	if o.HopCPU < 0 || o.Calls == 0 || (side && o.SideCPU < 0) {
		return math.NaN()
	}
	d := o.HopCPU
	if o.SideCPU > 0 {
		d += o.SideCPU
	}
	return float64(d.Microseconds()) / float64(o.Calls)
}

// Costs is the cost of each path with a hop at w, and over base.
func (r *Report) Costs(w Workload, base string) []Cost {
	var out []Cost
	repeats := r.repeats(w)
	for _, p := range r.Paths {
		if p.Hop == "" {
			continue
		}
		c := Cost{Path: p.Name}
		side := p.Side != ""
		var cpu, tput, p50, overCPU, overP50, bareCPU, bareP50 []float64
		for _, rep := range repeats {
			run, ok := r.runAt(p.Name, w, rep)
			if !ok {
				continue
			}
			cpu = append(cpu, cpuPerCall(run.Outcome, side))
			tput = append(tput, run.Throughput())
			p50 = append(p50, run.Latency.P50)
			if b, ok := r.runAt(Proxy, w, rep); ok && p.Name != Proxy {
				bareCPU = append(bareCPU, cpuPerCall(run.Outcome, side)-cpuPerCall(b.Outcome, false))
				bareP50 = append(bareP50, run.Latency.P50-b.Latency.P50)
			}
			if b, ok := r.runAt(base, w, rep); ok && p.Name != base && p.Name != Proxy {
				overCPU = append(overCPU, cpuPerCall(run.Outcome, side)-cpuPerCall(b.Outcome, r.hasSide(base)))
				overP50 = append(overP50, run.Latency.P50-b.Latency.P50)
			}
		}
		if len(cpu) == 0 {
			continue
		}
		c.CPU, c.Throughput, c.P50 = stats.Summarize(cpu), stats.Summarize(tput), stats.Summarize(p50)
		c.OverCPU, c.OverP50 = stats.Summarize(overCPU), stats.Summarize(overP50)
		c.OverBareCPU, c.OverBareP50 = stats.Summarize(bareCPU), stats.Summarize(bareP50)
		out = append(out, c)
	}
	return out
}

// writeCosts renders what each path costs a call, over the default gateway.
func (r *Report) writeCosts(w Printf) {
	w("## What each part costs a call\n\n")
	w("Each gateway below is the default one (`%s`) with one part changed; what a part costs is the difference from the default gateway, computed per repeat between runs of one interleaved cycle (which ran back to back) and summarised as median (min–max). ", Gateway)
	w("CPU is the gateway process's user+system time, plus that of the path's side processes (the OTLP sink, the database and its backends) where it has any, per call. ")
	w("Floor 2 is the bare hop: a reverse proxy that does nothing but forward. A negative difference is within the noise of this machine unless its whole range is below zero.\n\n")
	for _, size := range r.Params.Sizes {
		for _, sessions := range r.Params.Sessions {
			costs := r.Costs(Workload{size, sessions}, Gateway)
			if len(costs) == 0 {
				continue
			}
			w("### %s arguments, %d session%s\n\n", bytesLabel(size), sessions, plural(sessions))
			WriteTableHead(w, "path", "calls/s", "p50 µs", "CPU µs per call", "CPU µs over floor 2", "p50 µs over floor 2", "CPU µs over gatehouse", "p50 µs over gatehouse")
			for _, c := range costs {
				w("| %s | %s | %s | %s | %s | %s | %s | %s |\n", c.Path, FormatSummary(c.Throughput, 0), FormatSummary(c.P50, 0),
					FormatSummary(c.CPU, 0), FormatSummary(c.OverBareCPU, 0), FormatSummary(c.OverBareP50, 0), FormatSummary(c.OverCPU, 0), FormatSummary(c.OverP50, 0))
			}
			w("\n")
		}
	}
}

// hasSide reports whether path has side processes.
func (r *Report) hasSide(path string) bool {
	for _, p := range r.Paths {
		if p.Name == path {
			return p.Side != ""
		}
	}
	return false
}
