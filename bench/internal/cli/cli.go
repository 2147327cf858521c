// Package cli is gatebench's command line: it parses flags into a
// suite.Config, runs the suite, and prints and writes the report. It also
// serves the floor servers when the program is re-executed as one.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/floor"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/suite"
)

// floorSubcommand re-executes this program as a floor server.
const floorSubcommand = "serve-floor"

// Run is the whole program; getenv supplies GATEBENCH_* fallbacks.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == floorSubcommand {
		return floor.Serve(ctx, args[1:], stderr)
	}
	if len(args) > 0 && args[0] == listsSubcommand {
		return runLists(ctx, args[1:], getenv, stdout, stderr)
	}
	kind, name := callsBench, "gatebench"
	if len(args) > 0 && args[0] == observeSubcommand {
		kind, name, args = observeBench, "gatebench "+observeSubcommand, args[1:]
	}
	cfg, out, err := parseKind(kind, args, getenv, stderr)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	cfg.FloorCommand = []string{self, floorSubcommand}
	cfg.Progress = stderr
	cfg.Command = strings.TrimSpace(name + " " + strings.Join(args, " "))

	start := time.Now()
	rep, err := suite.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "finished in %v\n", time.Since(start).Round(time.Second))
	return emit(rep.Markdown(), out, stdout, stderr)
}

// emit prints a report and, unless out is empty, writes it there.
func emit(md, out string, stdout, stderr io.Writer) error {
	if _, err := io.WriteString(stdout, md); err != nil {
		return err
	}
	if out == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Fprintln(stderr, "report written to", out)
	return nil
}

// quick is what -quick sets: enough to run every path and workload end to
// end in well under a minute, far too little to measure anything.
var quick = struct{ calls, warmup, repeats, probe int }{calls: 200, warmup: 20, repeats: 2, probe: 20}

// observeSubcommand runs the tools/call benchmark over the gateway's variants instead: what
// metrics, exported traces and each audit store cost a call, next to the bare hop.
const observeSubcommand = "observe"

// benchKind is one of the two benchmarks of tools/call: against the floors (the default),
// or of the gateway's variants (observe).
type benchKind struct {
	name, sizes, out string
	paths            []string
	observe          bool
}

var (
	callsBench   = benchKind{name: "gatebench", sizes: "64,16384", out: "docs/benchmarks.md", paths: suite.DefaultPaths}
	observeBench = benchKind{name: "gatebench observe", sizes: "64", out: "docs/benchmarks-observability.md", observe: true,
		paths: []string{suite.Floor1, suite.Floor2, suite.Gatehouse, suite.GatehouseNoMetrics, suite.GatehouseTraced, suite.GatehousePostgres}}
)

// parse turns the command line of the default benchmark into a suite configuration and the
// report path.
func parse(args []string, getenv func(string) string, stderr io.Writer) (suite.Config, string, error) {
	return parseKind(callsBench, args, getenv, stderr)
}

// parseKind turns the command line of one tools/call benchmark into a suite configuration
// and the report path.
func parseKind(kind benchKind, args []string, getenv func(string) string, stderr io.Writer) (suite.Config, string, error) {
	cfg := suite.Config{Observe: kind.observe}
	var sessions, sizes string
	fs := newBenchFlags(kind.name, getenv, stderr, benchUsage{
		allPaths: kind.paths,
		paths:    "paths to measure, in run order, of " + strings.Join(suite.AllPaths, ", "),
		quick:    fmt.Sprintf("smoke test: unless set explicitly, -calls %d -warmup %d -repeats %d -fsync-probe %d; the report says its figures mean nothing", quick.calls, quick.warmup, quick.repeats, quick.probe),
		keeps:    "binaries, configs, process logs",
		out:      kind.out,
	})
	fs.StringVar(&sessions, "sessions", "1,32", "concurrent sessions per run, comma-separated")
	fs.StringVar(&sizes, "sizes", kind.sizes, "echo arguments sizes in bytes, comma-separated")
	fs.IntVar(&cfg.Calls, "calls", 0, "measured calls per run (0: max(2000, 250 × sessions), halved for arguments over 4 KiB)")
	fs.IntVar(&cfg.Warmup, "warmup", 200, "warm-up calls per run, spread over its sessions (at least one each)")
	fs.IntVar(&cfg.Repeats, "repeats", 5, "runs of each path per workload and concurrency, interleaved")
	fs.IntVar(&cfg.ProbeAppends, "fsync-probe", suite.DefaultProbeAppends, "fdatasynced appends timed on the audit disk before each interleaved cycle")
	if err := fs.parse(args,
		quickInt("calls", &cfg.Calls, quick.calls),
		quickInt("warmup", &cfg.Warmup, quick.warmup),
		quickInt("repeats", &cfg.Repeats, quick.repeats),
		quickInt("fsync-probe", &cfg.ProbeAppends, quick.probe),
	); err != nil {
		return cfg, "", err
	}
	var errs []error
	var err error
	if cfg.Setup, err = fs.setup(); err != nil {
		errs = append(errs, err)
	}
	if cfg.Sessions, err = ints(sessions); err != nil {
		errs = append(errs, fmt.Errorf("-sessions: %w", err))
	}
	if cfg.Sizes, err = ints(sizes); err != nil {
		errs = append(errs, fmt.Errorf("-sizes: %w", err))
	}
	return cfg, fs.out, errors.Join(errs...)
}

// ints parses "1,32" into [1 32].
func ints(s string) ([]int, error) {
	var out []int
	for _, f := range list(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// list splits a comma-separated list, dropping blanks.
func list(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
