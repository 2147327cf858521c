package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/lists"
)

// listsSubcommand runs the benchmark of tools/list of a large aggregated list instead.
const listsSubcommand = "lists"

// quickLists is what -quick sets for the list benchmark: every path end to end, and every
// list still checked, in well under a minute.
var quickLists = struct{ lists, warmup, repeats int }{lists: 20, warmup: 2, repeats: 2}

// runLists is `gatebench lists`: the list benchmark, printed and written to its own file.
// A run whose lists were wrong prints what it measured, writes nothing and fails.
func runLists(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, out, err := parseLists(args, getenv, stderr)
	if err != nil {
		return err
	}
	cfg.Progress = stderr
	cfg.Command = strings.TrimSpace("gatebench lists " + strings.Join(args, " "))
	start := time.Now()
	rep, err := lists.Run(ctx, cfg)
	if rep == nil {
		return err
	}
	fmt.Fprintf(stderr, "finished in %v\n", time.Since(start).Round(time.Second))
	if err != nil {
		io.WriteString(stdout, rep.Markdown())
		return fmt.Errorf("the lists were not what they should be, no report written: %w", err)
	}
	return emit(rep.Markdown(), out, stdout, stderr)
}

// parseLists turns the command line of `gatebench lists` into its configuration and the
// report path.
func parseLists(args []string, getenv func(string) string, stderr io.Writer) (lists.Config, string, error) {
	var cfg lists.Config
	fs := newBenchFlags("gatebench lists", getenv, stderr, benchUsage{
		allPaths: lists.AllPaths,
		paths:    "paths to measure (they run in the order of the default)",
		quick:    fmt.Sprintf("smoke test: unless set explicitly, -lists %d -warmup %d -repeats %d -profile 0; the report says its figures mean nothing", quickLists.lists, quickLists.warmup, quickLists.repeats),
		keeps:    "binaries, configs, process logs, the profile",
		out:      "docs/benchmarks-lists.md",
	})
	fs.IntVar(&cfg.ExtraTools, "extra-tools", 100, "synthetic tools of each of the three echo servers (beside their own)")
	fs.IntVar(&cfg.Lists, "lists", 200, "measured tools/list per run (one session, closed loop)")
	fs.IntVar(&cfg.Warmup, "warmup", 20, "tools/list per run before the measured ones")
	fs.IntVar(&cfg.Repeats, "repeats", 5, "runs of each path, interleaved")
	fs.DurationVar(&cfg.Profile, "profile", 10*time.Second, "after the runs, profile the gateway's CPU this long while it serves aggregated lists, and report the top (0: no profile)")
	if err := fs.parse(args,
		quickInt("lists", &cfg.Lists, quickLists.lists),
		quickInt("warmup", &cfg.Warmup, quickLists.warmup),
		quickInt("repeats", &cfg.Repeats, quickLists.repeats),
		quickValue{flag: "profile", set: func() { cfg.Profile = 0 }},
	); err != nil {
		return cfg, "", err
	}
	var err error
	cfg.Setup, err = fs.setup()
	return cfg, fs.out, err
}
