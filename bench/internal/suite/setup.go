package suite

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Setup is what every benchmark is configured with beside its workloads: the work tree, the
// paths, how the client and the gateway run, and what the run reports to. Both benchmarks'
// configurations (Config here, lists.Config) embed it.
type Setup struct {
	// Repo is the root of the Gatehouse work tree (it holds go.work); the
	// echo server and the gateway are built from it.
	Repo string
	// Quick marks a smoke-test run in the report.
	Quick bool
	// Protocol is the MCP protocol version the client initializes with.
	Protocol string
	// Paths to measure (the benchmark's keys; they run in the benchmark's order, not
	// theirs); empty means all of them.
	Paths []string
	// GatehouseBin is a prebuilt gateway; empty builds ./cmd/gatehouse.
	GatehouseBin string
	// GatehouseArgs are extra flags for `gatehouse up`.
	GatehouseArgs []string
	// RunTimeout bounds each run, so a wedged path cannot hang the benchmark.
	RunTimeout time.Duration
	// KeepWorkDir leaves binaries, configs and logs behind for inspection.
	KeepWorkDir bool
	// Command is the command line, for the report.
	Command string
	// Progress receives one line per run.
	Progress io.Writer
}

// check returns what is wrong with s for a benchmark whose paths are all.
func (s Setup) check(all []string) []error {
	var errs []error
	if s.Repo == "" {
		errs = append(errs, errors.New("no repository root"))
	} else if _, err := os.Stat(filepath.Join(s.Repo, "go.work")); err != nil {
		errs = append(errs, fmt.Errorf("%s is not the Gatehouse work tree (no go.work): run from the repository root or pass -repo", s.Repo))
	}
	for _, p := range s.Paths {
		if !slices.Contains(all, p) {
			errs = append(errs, fmt.Errorf("path %q: want one of %s", p, strings.Join(all, ", ")))
		}
	}
	if s.RunTimeout <= 0 {
		errs = append(errs, errors.New("run timeout must be positive"))
	}
	return errs
}

// Prepare checks s for a benchmark whose paths are all, and fills in its defaults (every
// path; progress to nowhere). extra are the benchmark's own complaints about its
// configuration, reported with s's.
func (s *Setup) Prepare(all []string, extra ...error) error {
	if err := errors.Join(append(s.check(all), extra...)...); err != nil {
		return err
	}
	if len(s.Paths) == 0 {
		s.Paths = all
	}
	if s.Progress == nil {
		s.Progress = io.Discard
	}
	return nil
}
