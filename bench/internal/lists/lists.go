// Package lists benchmarks tools/list of a large list: three echo servers of a hundred-odd
// tools each, listed straight from one server, from all three one after another (what a
// host without a gateway pays to see everything), through the gateway's endpoint of one
// server, and through its aggregated endpoint /mcp (every server's tools in one list).
// Runs are interleaved and repeated like the tools/call benchmark's (package suite), and
// every list is checked to hold exactly the tools it should.
package lists

import (
	"context"
	"fmt"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/suite"
)

// Path keys accepted in Config.Paths, in the order runs interleave.
const (
	Direct     = "direct"
	Direct3    = "direct3"
	GatewayOne = "gateway-one"
	GatewayAll = "gateway-all"
)

// AllPaths is every path, in run order.
var AllPaths = []string{Direct, Direct3, GatewayOne, GatewayAll}

// Servers is the number of upstream echo servers.
const Servers = 3

// Config is one list benchmark.
type Config struct {
	suite.Setup
	// ExtraTools is the number of synthetic tools of each echo server (-extra-tools).
	ExtraTools int
	// Lists is the number of measured lists per run; Warmup the lists before them.
	Lists, Warmup int
	// Repeats is how many times each path runs.
	Repeats int
	// Profile, when positive, is how long to profile the gateway's CPU while one session
	// lists the aggregated endpoint, after the measured runs; the top of the profile goes
	// into the report (and the profile stays in the work directory with KeepWorkDir).
	Profile time.Duration
}

// Bounds of the configuration: a list benchmark of more is a different benchmark.
const (
	maxExtraTools = 10_000
	maxLists      = 1_000_000
	maxProfile    = 5 * time.Minute
)

// problems are what is wrong with the workload of c.
func (c Config) problems() []error {
	var errs []error
	if c.ExtraTools < 1 || c.ExtraTools > maxExtraTools {
		errs = append(errs, fmt.Errorf("extra tools %d: want 1 to %d", c.ExtraTools, maxExtraTools))
	}
	if c.Lists < 1 || c.Lists > maxLists {
		errs = append(errs, fmt.Errorf("lists %d: want 1 to %d", c.Lists, maxLists))
	}
	if c.Warmup < 0 || c.Warmup > maxLists {
		errs = append(errs, fmt.Errorf("warmup %d: want 0 to %d", c.Warmup, maxLists))
	}
	if c.Repeats < 1 || c.Repeats > 1000 {
		errs = append(errs, fmt.Errorf("repeats %d: want 1 to 1000", c.Repeats))
	}
	if c.Profile < 0 || c.Profile > maxProfile {
		errs = append(errs, fmt.Errorf("profile %v: want 0 (none) to %v", c.Profile, maxProfile))
	}
	return errs
}

// path is one way to the tools, ready to dial.
type path struct {
	info Path
	dial loadgen.Dialer
	rec  *caller.ListRecorder
}

// Run runs the benchmark. The report it returns may hold runs whose lists were wrong: its
// Err says so, and Run returns that error beside the report, so that the caller can show
// what was measured and still fail.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Prepare(AllPaths, cfg.problems()...); err != nil {
		return nil, err
	}
	rep := &Report{
		Machine: suite.DescribeMachine(ctx, cfg.Repo),
		Params: Params{
			Command: cfg.Command, Servers: Servers, ExtraTools: cfg.ExtraTools,
			Lists: cfg.Lists, Warmup: cfg.Warmup, Repeats: cfg.Repeats, Protocol: cfg.Protocol,
			PageSize: 0, Quick: cfg.Quick,
		},
	}
	fl, err := suite.NewFleet(cfg.Setup, "listbench-")
	if err != nil {
		return nil, err
	}
	defer func() { rep.Notes = append(rep.Notes, fl.Close()...) }()
	f := &fleet{Fleet: fl, cfg: cfg}
	paths, err := f.start(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		rep.Paths = append(rep.Paths, p.info)
	}
	// One discarded run per path: no measured run pays for first connections and heap
	// growth, and a path whose lists are wrong fails here, before minutes of runs.
	for _, p := range paths {
		runCtx, cancel := context.WithTimeout(ctx, cfg.RunTimeout)
		res, err := loadgen.Run(runCtx, loadgen.Config{Sessions: 1, Calls: 10, Warmup: 1}, p.dial)
		cancel()
		if err == nil && res.Errors > 0 {
			err = fmt.Errorf("%d of 10 lists failed, first: %w", res.Errors, res.FirstError)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: priming run: %w", p.info.Name, err)
		}
	}

	total := cfg.Repeats * len(paths)
	n := 0
	for repeat := 1; repeat <= cfg.Repeats; repeat++ {
		for _, p := range paths {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			n++
			run := f.measure(ctx, p, repeat)
			rep.Runs = append(rep.Runs, run)
			fmt.Fprintf(cfg.Progress, "[%d/%d] %s\n", n, total, progressLine(p.info.Name, run))
		}
	}
	if cfg.Profile > 0 {
		if all := findPath(paths, GatewayAll); all == nil {
			rep.Notes = append(rep.Notes, "no profile: the aggregated path was not measured")
		} else if top, err := f.profile(ctx, all, cfg.Profile); err != nil {
			rep.Notes = append(rep.Notes, "no profile: "+err.Error())
		} else {
			rep.Profile = top
		}
	}
	return rep, rep.Err()
}

func findPath(paths []*path, key string) *path {
	for _, p := range paths {
		if p.info.Key == key {
			return p
		}
	}
	return nil
}

// measure makes one run of p and turns it into a report row.
func (f *fleet) measure(ctx context.Context, p *path, repeat int) Result {
	m := suite.Measurement{
		Load:      loadgen.Config{Sessions: 1, Calls: f.cfg.Lists, Warmup: f.cfg.Warmup},
		Dial:      p.dial,
		Timeout:   f.cfg.RunTimeout,
		Upstreams: f.upstreams,
	}
	if f.gateway != nil {
		m.Hop = f.gateway.Process
	}
	run := Result{Path: p.info.Key, Repeat: repeat, Outcome: suite.Measure(ctx, m)}
	if run.Failed == "" {
		run.Answer = p.rec.Last()
	}
	return run
}

func progressLine(name string, r Result) string {
	head := fmt.Sprintf("repeat %d, %-22s", r.Repeat, name)
	if r.Failed != "" {
		return head + " FAILED: " + r.Failed
	}
	line := fmt.Sprintf("%s %6.0f lists/s  p50 %7.2f ms  p99 %7.2f ms  %4d tools  %8d B", head,
		r.Throughput(), r.Latency.P50/1e3, r.Latency.P99/1e3, r.Answer.Tools, r.Answer.Bytes)
	if r.HopCPU >= 0 {
		line += fmt.Sprintf("  gateway CPU %.2fs", r.HopCPU.Seconds())
	}
	if r.Errors > 0 {
		line += fmt.Sprintf("  %d errors, first: %s", r.Errors, r.FirstError)
	}
	return line
}
