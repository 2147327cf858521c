// Package suite runs the benchmark: it builds and starts every process on
// loopback (the echo upstream, the floor servers, the gateway), then runs the
// closed-loop workloads path after path, interleaved and repeated, and
// collects a report.
package suite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/floor"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/proc"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/report"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
)

// Path keys accepted in Config.Paths, in the order runs interleave.
const (
	Floor0    = "floor0"
	Floor1    = "floor1"
	Floor2    = "floor2"
	Floor3    = "floor3"
	Gatehouse = "gatehouse"
)

// AllPaths is every path, in run order.
var AllPaths = []string{Floor0, Floor1, Floor2, Floor3, Gatehouse, GatehouseNoMetrics, GatehouseTraced, GatehousePostgres}

// DefaultPaths are what a run measures unless told otherwise: the floors and the gateway
// as it runs by default (`gatebench observe` measures the variants).
var DefaultPaths = []string{Floor0, Floor1, Floor2, Floor3, Gatehouse}

// Config is one benchmark.
type Config struct {
	Setup
	// Sessions are the concurrency levels; Sizes the echo arguments sizes.
	Sessions []int
	Sizes    []int
	// Calls is the number of measured calls per run; 0 picks
	// max(2000, 250 × sessions), halved for arguments over 4 KiB.
	Calls int
	// Warmup is the number of warm-up calls per run, spread over its
	// sessions (at least one each).
	Warmup int
	// Repeats is how many times each (size, sessions, path) runs.
	Repeats int
	// ProbeAppends is how many fdatasynced appends the audit-disk probe
	// times before each interleaved cycle; 0 means DefaultProbeAppends.
	ProbeAppends int
	// FloorCommand is the argv that runs a floor server (floor.Serve) when
	// followed by its flags: this program re-executed.
	FloorCommand []string
	// Observe makes the report of `gatebench observe`: what each variant of the gateway
	// costs a call over the default one, instead of the goals.
	Observe bool
}

// CallsFor is the number of measured calls per run of a workload. The
// automatic count is halved for large arguments, whose calls cost several
// times more in the SDK's JSON handling, to keep a default run near five
// minutes on two cores.
func (c Config) CallsFor(size, sessions int) int {
	if c.Calls > 0 {
		return c.Calls
	}
	n := max(2000, 250*sessions)
	if size > 4<<10 {
		n /= 2
	}
	return n
}

// warmupPerSession spreads Warmup over the sessions, at least one each.
func (c Config) warmupPerSession(sessions int) int {
	return max(1, (c.Warmup+sessions-1)/sessions)
}

// DefaultProbeAppends is the default size of one fdatasync probe.
const DefaultProbeAppends = 200

func (c Config) probeAppends() int {
	if c.ProbeAppends == 0 {
		return DefaultProbeAppends
	}
	return c.ProbeAppends
}

// problems are what is wrong with the workloads of c.
func (c Config) problems() []error {
	var errs []error
	if len(c.Sessions) == 0 || slices.ContainsFunc(c.Sessions, func(n int) bool { return n < 1 || n > 4096 }) {
		errs = append(errs, fmt.Errorf("sessions %v: want 1 to 4096 each", c.Sessions))
	}
	if len(c.Sizes) == 0 || slices.ContainsFunc(c.Sizes, func(n int) bool { _, err := caller.EchoText(n); return err != nil }) {
		errs = append(errs, fmt.Errorf("sizes %v: want 11 B to %d B each", c.Sizes, caller.MaxArgsSize))
	}
	if c.Calls < 0 || c.Calls > 10_000_000 {
		errs = append(errs, fmt.Errorf("calls %d: want 0 (automatic) to 10000000", c.Calls))
	}
	if c.ProbeAppends < 0 || c.ProbeAppends > 100_000 {
		errs = append(errs, fmt.Errorf("probe appends %d: want 0 (default) to 100000", c.ProbeAppends))
	}
	if c.Warmup < 0 || c.Repeats < 1 || c.Repeats > 1000 {
		errs = append(errs, fmt.Errorf("warmup %d, repeats %d: want warmup ≥ 0 and 1 to 1000 repeats", c.Warmup, c.Repeats))
	}
	if len(c.FloorCommand) == 0 {
		errs = append(errs, errors.New("no floor command"))
	}
	return errs
}

// path is one way to the echo tool, ready to dial.
type path struct {
	info     report.Path
	dialers  map[int]loadgen.Dialer // by arguments size
	hop      *proc.Process          // nil when the path has no hop process
	upstream *proc.Process
	// side are the pids of the path's own processes beside the hop (an OTLP sink, a
	// database), whose CPU, with their children's, is reported as the side's.
	side []int
}

// Run runs the benchmark described by cfg.
func Run(ctx context.Context, cfg Config) (*report.Report, error) {
	if err := cfg.Prepare(AllPaths, cfg.problems()...); err != nil {
		return nil, err
	}
	rep := &report.Report{
		Machine: DescribeMachine(ctx, cfg.Repo),
		Params: report.Params{
			Command:  cfg.Command,
			Sessions: cfg.Sessions,
			Sizes:    cfg.Sizes,
			Calls:    map[report.Workload]int{},
			Warmup:   cfg.Warmup,
			Repeats:  cfg.Repeats,
			Protocol: cfg.Protocol,

			ProbeAppends: cfg.probeAppends(),
			RecordSize:   floor.RecordSize,
			Quick:        cfg.Quick,
			Observe:      cfg.Observe,
		},
	}
	for _, size := range cfg.Sizes {
		for _, s := range cfg.Sessions {
			rep.Params.Calls[report.Workload{Size: size, Sessions: s}] = cfg.CallsFor(size, s)
		}
	}

	fl, err := NewFleet(cfg.Setup, "gatebench-")
	if err != nil {
		return nil, err
	}
	defer func() { rep.Notes = append(rep.Notes, fl.Close()...) }()

	// The audit disk: floor 3's journal, the probe's file and the gateway's
	// data dir are siblings in the work directory, so on one file system.
	diskDir := filepath.Join(fl.Work, "disk")
	if err := os.Mkdir(diskDir, 0o700); err != nil {
		return nil, fmt.Errorf("audit disk dir: %w", err)
	}
	probe, err := floor.OpenJournal(filepath.Join(diskDir, "probe.journal"))
	if err != nil {
		return nil, err
	}
	defer probe.Close()

	f := &fleet{Fleet: fl, cfg: cfg, diskDir: diskDir}
	paths, err := f.start(ctx, rep)
	if err != nil {
		return nil, err
	}
	var diskNotes []string
	rep.Machine.AuditDisk, diskNotes = describeDisk(diskDir, f.gatehouseData)
	rep.Notes = append(rep.Notes, diskNotes...)
	paths = prime(ctx, cfg, paths, rep)
	if len(paths) == 0 {
		return nil, fmt.Errorf("no path works: %s", strings.Join(rep.Notes, "; "))
	}
	for _, p := range paths {
		rep.Paths = append(rep.Paths, p.info)
	}

	total := len(cfg.Sizes) * len(cfg.Sessions) * cfg.Repeats * len(paths)
	n := 0
	for _, size := range cfg.Sizes {
		for _, sessions := range cfg.Sessions {
			for repeat := 1; repeat <= cfg.Repeats; repeat++ {
				pr := measureProbe(probe, cfg.probeAppends(), size, sessions, repeat)
				rep.Probes = append(rep.Probes, pr)
				fmt.Fprintf(cfg.Progress, "%s\n", probeLine(pr))
				for _, p := range paths {
					if err := ctx.Err(); err != nil {
						return nil, err
					}
					n++
					run := measure(ctx, cfg, p, size, sessions, repeat)
					rep.Runs = append(rep.Runs, run)
					fmt.Fprintf(cfg.Progress, "[%d/%d] %s\n", n, total, progressLine(run))
				}
			}
		}
	}
	// What the traced variant exported: the spans went somewhere, and were accepted.
	for _, addr := range f.sinks {
		requests, bytes, spans, err := sinkStats(ctx, addr)
		if err != nil {
			rep.Notes = append(rep.Notes, "the OTLP sink's counts could not be read: "+err.Error())
			continue
		}
		// Every call the traced gateway served (warm-up and priming included) made its spans;
		// fewer spans per call than a call makes means the exporter dropped some.
		calls := 0
		for _, run := range rep.Runs {
			if run.Path == tracedName {
				calls += run.Calls + run.Errors
			}
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("the traced gateway's OTLP sink accepted %d export requests: %d spans, %d bytes; %.1f spans per measured call (warm-up and priming calls made spans too)",
			requests, spans, bytes, float64(spans)/float64(max(calls, 1))))
	}
	return rep, nil
}

// prime makes one short discarded run per path at the highest concurrency,
// so that no measured run pays for a process's first connections and heap
// growth, and drops (with a note) any path that cannot serve at all.
func prime(ctx context.Context, cfg Config, paths []*path, rep *report.Report) []*path {
	sessions := slices.Max(cfg.Sessions)
	var ok []*path
	for _, p := range paths {
		var failed error
		for _, size := range cfg.Sizes {
			runCtx, cancel := context.WithTimeout(ctx, cfg.RunTimeout)
			res, err := loadgen.Run(runCtx, loadgen.Config{Sessions: sessions, Calls: 10 * sessions, Warmup: 5}, p.dialers[size])
			cancel()
			if err == nil && res.Errors > 0 {
				err = fmt.Errorf("%d of %d calls failed, first: %w", res.Errors, 10*sessions, res.FirstError)
			}
			if err != nil {
				failed = err
				break
			}
		}
		if failed != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s not measured: priming run failed: %v", p.info.Name, failed))
			fmt.Fprintf(cfg.Progress, "%s: priming failed, path dropped: %v\n", p.info.Name, failed)
			continue
		}
		ok = append(ok, p)
	}
	return ok
}

// measure makes one run and turns it into a report row.
func measure(ctx context.Context, cfg Config, p *path, size, sessions, repeat int) report.Run {
	out := Measure(ctx, Measurement{
		Load: loadgen.Config{
			Sessions: sessions,
			Calls:    cfg.CallsFor(size, sessions),
			Warmup:   cfg.warmupPerSession(sessions),
		},
		Dial:      p.dialers[size],
		Timeout:   cfg.RunTimeout,
		Hop:       p.hop,
		Upstreams: []*proc.Process{p.upstream},
		Side:      p.side,
	})
	return report.Run{Path: p.info.Name, Size: size, Sessions: sessions, Repeat: repeat, Outcome: out}
}

// measureProbe times appends fdatasynced appends to j: the audit disk's
// cost in the cycle of (size, sessions, repeat).
func measureProbe(j *floor.Journal, appends, size, sessions, repeat int) report.Probe {
	pr := report.Probe{Size: size, Sessions: sessions, Repeat: repeat}
	lat, err := floor.Probe(j, appends)
	if err != nil {
		pr.Failed = err.Error()
		return pr
	}
	pr.Appends = len(lat)
	pr.Latency = stats.Latencies(lat)
	return pr
}

func probeLine(p report.Probe) string {
	head := fmt.Sprintf("%6d B, %3d sessions, repeat %d, fdatasync", p.Size, p.Sessions, p.Repeat)
	if p.Failed != "" {
		return head + " FAILED: " + p.Failed
	}
	return fmt.Sprintf("%s %d appends  p50 %7.0f µs  p99 %7.0f µs", head, p.Appends, p.Latency.P50, p.Latency.P99)
}

func progressLine(r report.Run) string {
	head := fmt.Sprintf("%6d B, %3d sessions, repeat %d, %-9s", r.Size, r.Sessions, r.Repeat, r.Path)
	if r.Failed != "" {
		return head + " FAILED: " + r.Failed
	}
	line := fmt.Sprintf("%s %8.0f calls/s  p50 %7.0f µs  p99 %7.0f µs", head, float64(r.Calls)/r.Elapsed.Seconds(), r.Latency.P50, r.Latency.P99)
	if r.HopCPU >= 0 {
		line += fmt.Sprintf("  hop CPU %.2fs", r.HopCPU.Seconds())
	}
	if r.Errors > 0 {
		line += fmt.Sprintf("  %d errors, first: %s", r.Errors, r.FirstError)
	}
	return line
}

// DescribeMachine gathers what a report states about where it ran, for the repository at
// repo (its commit).
func DescribeMachine(ctx context.Context, repo string) report.Machine {
	m := report.Machine{CPUs: runtime.NumCPU(), Date: time.Now().UTC(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if v, err := output(ctx, repo, nil, "go", "env", "GOVERSION"); err == nil && v != "" {
		m.GoVersion = v
	}
	m.Commit = "unknown"
	if c, err := output(ctx, repo, nil, "git", "rev-parse", "--short", "HEAD"); err == nil && c != "" {
		m.Commit = c
		// GIT_OPTIONAL_LOCKS=0: a read-only look that never writes the index.
		if st, err := output(ctx, repo, []string{"GIT_OPTIONAL_LOCKS=0"}, "git", "status", "--porcelain"); err == nil && st != "" {
			m.Commit += " (with uncommitted changes)"
		}
	}
	return m
}

// output runs a command in dir and returns its trimmed stdout.
func output(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}
