// Package lists benchmarks tools/list of a large list: three echo servers of a hundred-odd
// tools each, listed straight from one server, from all three one after another (what a
// host without a gateway pays to see everything), through the gateway's endpoint of one
// server, and through its aggregated endpoint /mcp (every server's tools in one list).
// Runs are interleaved and repeated like the tools/call benchmark's (package suite), and
// every list is checked to hold exactly the tools it should.
package lists

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/proc"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
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
	// Repo is the root of the Gatehouse work tree (it holds go.work).
	Repo string
	// ExtraTools is the number of synthetic tools of each echo server (-extra-tools).
	ExtraTools int
	// Lists is the number of measured lists per run; Warmup the lists before them.
	Lists, Warmup int
	// Repeats is how many times each path runs.
	Repeats int
	// Quick marks a smoke-test run in the report.
	Quick bool
	// Protocol is the MCP protocol version the client initializes with.
	Protocol string
	// Paths to measure (keys above; they run in AllPaths order); empty means AllPaths.
	Paths []string
	// GatehouseBin is a prebuilt gateway; empty builds ./cmd/gatehouse.
	GatehouseBin string
	// GatehouseArgs are extra flags for `gatehouse up`.
	GatehouseArgs []string
	// Profile, when positive, is how long to profile the gateway's CPU while one session
	// lists the aggregated endpoint, after the measured runs; the top of the profile goes
	// into the report.
	Profile time.Duration
	// RunTimeout bounds each run.
	RunTimeout time.Duration
	// KeepWorkDir leaves binaries, configs, logs (and the profile) behind.
	KeepWorkDir bool
	// Command is the command line, for the report.
	Command string
	// Progress receives one line per run.
	Progress io.Writer
}

// Bounds of the configuration: a list benchmark of more is a different benchmark.
const (
	maxExtraTools = 10_000
	maxLists      = 1_000_000
	maxProfile    = 5 * time.Minute
)

func (c Config) validate() error {
	var errs []error
	if c.Repo == "" {
		errs = append(errs, errors.New("no repository root"))
	} else if _, err := os.Stat(filepath.Join(c.Repo, "go.work")); err != nil {
		errs = append(errs, fmt.Errorf("%s is not the Gatehouse work tree (no go.work): run from the repository root or pass -repo", c.Repo))
	}
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
	for _, p := range c.Paths {
		if !slices.Contains(AllPaths, p) {
			errs = append(errs, fmt.Errorf("path %q: want one of %s", p, strings.Join(AllPaths, ", ")))
		}
	}
	if c.Profile < 0 || c.Profile > maxProfile {
		errs = append(errs, fmt.Errorf("profile %v: want 0 (none) to %v", c.Profile, maxProfile))
	}
	if c.RunTimeout <= 0 {
		errs = append(errs, errors.New("run timeout must be positive"))
	}
	return errors.Join(errs...)
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
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(cfg.Paths) == 0 {
		cfg.Paths = AllPaths
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	work, err := os.MkdirTemp("", "listbench-")
	if err != nil {
		return nil, err
	}
	if cfg.KeepWorkDir {
		fmt.Fprintf(cfg.Progress, "work directory (kept): %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	rep := &Report{
		Machine: suite.DescribeMachine(ctx, cfg.Repo),
		Params: Params{
			Command: cfg.Command, Servers: Servers, ExtraTools: cfg.ExtraTools,
			Lists: cfg.Lists, Warmup: cfg.Warmup, Repeats: cfg.Repeats, Protocol: cfg.Protocol,
			PageSize: 0, Quick: cfg.Quick,
		},
	}
	f := &fleet{cfg: cfg, work: work, progress: cfg.Progress}
	defer f.stopAll(rep)
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
	run := Result{Path: p.info.Key, Repeat: repeat, GatewayCPU: -1, UpstreamCPU: -1, ClientCPU: -1}
	var gw0, up0, client0 time.Duration
	self := os.Getpid()
	lc := loadgen.Config{
		Sessions: 1,
		Calls:    f.cfg.Lists,
		Warmup:   f.cfg.Warmup,
		OnStart: func() {
			gw0, up0, client0 = f.gatewayCPU(), f.upstreamCPU(), pidCPU(self)
		},
		OnEnd: func() {
			run.GatewayCPU = since(f.gatewayCPU(), gw0)
			run.UpstreamCPU = since(f.upstreamCPU(), up0)
			run.ClientCPU = since(pidCPU(self), client0)
		},
	}
	runCtx, cancel := context.WithTimeout(ctx, f.cfg.RunTimeout)
	defer cancel()
	res, err := loadgen.Run(runCtx, lc, p.dial)
	if err != nil {
		run.Failed = err.Error()
		return run
	}
	run.Lists = len(res.Latencies)
	run.Errors = res.Errors
	if res.FirstError != nil {
		run.FirstError = res.FirstError.Error()
	}
	run.Elapsed = res.Elapsed
	run.Latency = stats.Latencies(res.Latencies)
	run.Answer = p.rec.Last()
	return run
}

// since is now − then, or -1 when either is unknown.
func since(now, then time.Duration) time.Duration {
	if now < 0 || then < 0 {
		return -1
	}
	return now - then
}

// pidCPU is the CPU time of pid so far, or -1 when unreadable.
func pidCPU(pid int) time.Duration {
	d, err := proc.CPUTime(pid)
	if err != nil {
		return -1
	}
	return d
}

func progressLine(name string, r Result) string {
	head := fmt.Sprintf("repeat %d, %-22s", r.Repeat, name)
	if r.Failed != "" {
		return head + " FAILED: " + r.Failed
	}
	line := fmt.Sprintf("%s %6.0f lists/s  p50 %7.2f ms  p99 %7.2f ms  %4d tools  %8d B", head,
		r.Throughput(), r.Latency.P50/1e3, r.Latency.P99/1e3, r.Answer.Tools, r.Answer.Bytes)
	if r.GatewayCPU >= 0 {
		line += fmt.Sprintf("  gateway CPU %.2fs", r.GatewayCPU.Seconds())
	}
	if r.Errors > 0 {
		line += fmt.Sprintf("  %d errors, first: %s", r.Errors, r.FirstError)
	}
	return line
}
