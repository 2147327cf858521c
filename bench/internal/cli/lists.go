package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
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
	env := func(name, def string) string {
		if v := getenv("GATEBENCH_" + name); v != "" {
			return v
		}
		return def
	}
	var cfg lists.Config
	var paths, ghArgs, out string
	fs := flag.NewFlagSet("gatebench lists", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Repo, "repo", env("REPO", "."), "root of the Gatehouse work tree (holds go.work)")
	fs.IntVar(&cfg.ExtraTools, "extra-tools", 100, "synthetic tools of each of the three echo servers (beside their own)")
	fs.IntVar(&cfg.Lists, "lists", 200, "measured tools/list per run (one session, closed loop)")
	fs.IntVar(&cfg.Warmup, "warmup", 20, "tools/list per run before the measured ones")
	fs.IntVar(&cfg.Repeats, "repeats", 5, "runs of each path, interleaved")
	fs.BoolVar(&cfg.Quick, "quick", false, fmt.Sprintf("smoke test: unless set explicitly, -lists %d -warmup %d -repeats %d -profile 0; the report says its figures mean nothing", quickLists.lists, quickLists.warmup, quickLists.repeats))
	fs.StringVar(&cfg.Protocol, "protocol", "2025-11-25", "MCP protocol version the client initializes with (empty: the SDK's latest)")
	fs.StringVar(&paths, "paths", strings.Join(lists.AllPaths, ","), "paths to measure (they run in the order of the default)")
	fs.StringVar(&cfg.GatehouseBin, "gatehouse-bin", env("GATEHOUSE_BIN", ""), "prebuilt gatehouse binary (default: go build ./cmd/gatehouse)")
	fs.StringVar(&ghArgs, "gatehouse-args", "", "extra flags for `gatehouse up`, space-separated")
	fs.DurationVar(&cfg.Profile, "profile", 10*time.Second, "after the runs, profile the gateway's CPU this long while it serves aggregated lists, and report the top (0: no profile)")
	fs.DurationVar(&cfg.RunTimeout, "run-timeout", 5*time.Minute, "limit on each run")
	fs.BoolVar(&cfg.KeepWorkDir, "keep", false, "keep the work directory (binaries, configs, process logs, the profile)")
	fs.StringVar(&out, "out", "docs/benchmarks-lists.md", "also write the report here (empty: stdout only)")
	if err := fs.Parse(args); err != nil {
		return cfg, "", err
	}
	if fs.NArg() > 0 {
		return cfg, "", fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, q := range []struct {
			flag  string
			value *int
			quick int
		}{
			{"lists", &cfg.Lists, quickLists.lists},
			{"warmup", &cfg.Warmup, quickLists.warmup},
			{"repeats", &cfg.Repeats, quickLists.repeats},
		} {
			if !set[q.flag] {
				*q.value = q.quick
			}
		}
		if !set["profile"] {
			cfg.Profile = 0
		}
	}
	cfg.Paths = list(paths)
	cfg.GatehouseArgs = strings.Fields(ghArgs)
	var err error
	if cfg.Repo, err = filepath.Abs(cfg.Repo); err != nil {
		return cfg, "", fmt.Errorf("-repo: %w", err)
	}
	return cfg, out, nil
}
