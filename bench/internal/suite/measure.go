package suite

import (
	"context"
	"os"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/proc"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/report"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
)

// Measurement is one closed-loop run to make.
type Measurement struct {
	// Load is the run; its OnStart and OnEnd are Measure's.
	Load loadgen.Config
	Dial loadgen.Dialer
	// Timeout bounds the run, so that a wedged path cannot hang the benchmark.
	Timeout time.Duration
	// Hop and Upstreams are the processes whose CPU time over the measured window is
	// reported as the hop's and the upstream's (the upstreams' summed); nil, none: not
	// measured.
	Hop       *proc.Process
	Upstreams []*proc.Process
	// Side are the pids of the path's own processes beside the hop, measured with their
	// children; none: not measured.
	Side []int
}

// Measure makes the run and returns what it measured: its latencies and errors, and the
// CPU time the hop, the upstreams and this process (the load generator) used during the
// measured window.
func Measure(ctx context.Context, m Measurement) report.Outcome {
	out := report.Outcome{HopCPU: -1, UpstreamCPU: -1, ClientCPU: -1, SideCPU: -1}
	var hop0, up0, side0, client0 time.Duration
	self := os.Getpid()
	lc := m.Load
	// The load generator's own clock is read last before the window and first after it.
	lc.OnStart = func() {
		hop0 = cpuOf(m.Hop)
		up0 = cpuOf(m.Upstreams...)
		side0 = treeCPU(m.Side)
		client0 = pidCPU(self)
	}
	lc.OnEnd = func() {
		out.ClientCPU = since(pidCPU(self), client0)
		out.HopCPU = since(cpuOf(m.Hop), hop0)
		out.UpstreamCPU = since(cpuOf(m.Upstreams...), up0)
		out.SideCPU = since(treeCPU(m.Side), side0)
	}
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	res, err := loadgen.Run(ctx, lc, m.Dial)
	if err != nil {
		out.Failed = err.Error()
		return out
	}
	out.Calls = len(res.Latencies)
	out.Errors = res.Errors
	if res.FirstError != nil {
		out.FirstError = res.FirstError.Error()
	}
	out.Elapsed = res.Elapsed
	out.Latency = stats.Latencies(res.Latencies)
	return out
}

// cpuOf is the CPU time ps have used so far, summed; -1 when there are none, or one is
// nil or unreadable.
func cpuOf(ps ...*proc.Process) time.Duration {
	if len(ps) == 0 {
		return -1
	}
	var sum time.Duration
	for _, p := range ps {
		if p == nil {
			return -1
		}
		d := pidCPU(p.PID())
		if d < 0 {
			return -1
		}
		sum += d
	}
	return sum
}

// treeCPU is the CPU time pids and their children have used so far, summed; -1 when there
// are none or one is unreadable.
func treeCPU(pids []int) time.Duration {
	if len(pids) == 0 {
		return -1
	}
	var sum time.Duration
	for _, pid := range pids {
		d, err := proc.TreeCPU(pid)
		if err != nil {
			return -1
		}
		sum += d
	}
	return sum
}

// pidCPU is the CPU time of pid so far, or -1 when unreadable.
func pidCPU(pid int) time.Duration {
	d, err := proc.CPUTime(pid)
	if err != nil {
		return -1
	}
	return d
}

// since is now − then, or -1 when either is unknown.
func since(now, then time.Duration) time.Duration {
	if now < 0 || then < 0 {
		return -1
	}
	return now - then
}
