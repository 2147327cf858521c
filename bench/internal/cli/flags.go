package cli

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/suite"
)

// benchFlags is the command line of one benchmark: the flags every benchmark takes (where
// the work tree is, the protocol, the gateway and its flags, the run timeout, -keep, -quick
// and where the report goes), on a flag set that the benchmark's own flags join.
type benchFlags struct {
	*flag.FlagSet
	repo, protocol, paths, gatehouseBin, gatehouseArgs, out string
	runTimeout                                              time.Duration
	keep, quick                                             bool
}

// benchUsage is what the shared flags say differently for each benchmark.
type benchUsage struct {
	allPaths []string // -paths' default
	paths    string   // -paths' usage
	quick    string   // -quick's usage
	keeps    string   // what -keep keeps
	out      string   // -out's default
}

// newBenchFlags makes the flag set of the benchmark name; getenv supplies GATEBENCH_*
// fallbacks.
func newBenchFlags(name string, getenv func(string) string, stderr io.Writer, u benchUsage) *benchFlags {
	env := func(name, def string) string {
		if v := getenv("GATEBENCH_" + name); v != "" {
			return v
		}
		return def
	}
	b := &benchFlags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError)}
	b.SetOutput(stderr)
	b.StringVar(&b.repo, "repo", env("REPO", "."), "root of the Gatehouse work tree (holds go.work)")
	b.BoolVar(&b.quick, "quick", false, u.quick)
	b.StringVar(&b.protocol, "protocol", "2025-11-25", "MCP protocol version the client initializes with (empty: the SDK's latest)")
	b.StringVar(&b.paths, "paths", strings.Join(u.allPaths, ","), u.paths)
	b.StringVar(&b.gatehouseBin, "gatehouse-bin", env("GATEHOUSE_BIN", ""), "prebuilt gatehouse binary (default: go build ./cmd/gatehouse)")
	b.StringVar(&b.gatehouseArgs, "gatehouse-args", "", "extra flags for `gatehouse up`, space-separated")
	b.DurationVar(&b.runTimeout, "run-timeout", 5*time.Minute, "limit on each run")
	b.BoolVar(&b.keep, "keep", false, "keep the work directory ("+u.keeps+")")
	b.StringVar(&b.out, "out", u.out, "also write the report here (empty: stdout only)")
	return b
}

// quickValue is what -quick sets a flag to unless the flag is given explicitly.
type quickValue struct {
	flag string
	set  func()
}

// quickInt sets *p to v.
func quickInt(flag string, p *int, v int) quickValue {
	return quickValue{flag: flag, set: func() { *p = v }}
}

// parse parses args, which must all be flags. With -quick, each of quick's flags that args
// do not set takes its quick value.
func (b *benchFlags) parse(args []string, quick ...quickValue) error {
	if err := b.Parse(args); err != nil {
		return err
	}
	if b.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", b.Args())
	}
	if b.quick {
		set := map[string]bool{}
		b.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, q := range quick {
			if !set[q.flag] {
				q.set()
			}
		}
	}
	return nil
}

// setup is the part of the configuration the shared flags make, with -repo made absolute.
func (b *benchFlags) setup() (suite.Setup, error) {
	s := suite.Setup{
		Quick:         b.quick,
		Protocol:      b.protocol,
		Paths:         list(b.paths),
		GatehouseBin:  b.gatehouseBin,
		GatehouseArgs: strings.Fields(b.gatehouseArgs),
		RunTimeout:    b.runTimeout,
		KeepWorkDir:   b.keep,
	}
	var err error
	if s.Repo, err = filepath.Abs(b.repo); err != nil {
		return s, fmt.Errorf("-repo: %w", err)
	}
	return s, nil
}
