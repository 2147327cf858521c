package cli

import (
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/suite"
)

// parseCase is a command line, with GATEBENCH_* variables, and what parsing it must give.
type parseCase[C any] struct {
	name    string
	args    []string
	env     map[string]string
	check   func(t *testing.T, cfg C, out string)
	wantErr string
}

// testParse runs the cases through a benchmark's parse.
func testParse[C any](t *testing.T, parse func([]string, func(string) string, io.Writer) (C, string, error), tests []parseCase[C]) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			getenv := func(k string) string { return tc.env[k] }
			cfg, out, err := parse(tc.args, getenv, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parse(%q) = %v, want an error containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse(%q): %v", tc.args, err)
			}
			tc.check(t, cfg, out)
		})
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	testParse(t, parse, []parseCase[suite.Config]{
		{
			name: "defaults",
			check: func(t *testing.T, cfg suite.Config, out string) {
				if !slices.Equal(cfg.Sessions, []int{1, 32}) || !slices.Equal(cfg.Sizes, []int{64, 16384}) {
					t.Errorf("sessions %v sizes %v", cfg.Sessions, cfg.Sizes)
				}
				if cfg.Repeats != 5 || cfg.Calls != 0 || cfg.Warmup != 200 || cfg.Protocol != "2025-11-25" || cfg.RunTimeout != 5*time.Minute || cfg.ProbeAppends != 200 || cfg.Quick {
					t.Errorf("cfg = %+v", cfg)
				}
				if !slices.Equal(cfg.Paths, suite.DefaultPaths) || out != "docs/benchmarks.md" || !filepath.IsAbs(cfg.Repo) {
					t.Errorf("paths %v out %q repo %q", cfg.Paths, out, cfg.Repo)
				}
			},
		},
		{
			name: "lists and spaces",
			args: []string{"-sessions", " 1, 8 ,32,", "-sizes", "64", "-paths", "floor1,gatehouse", "-calls", "500", "-out", "", "-gatehouse-args", "--log-level warn  --quota-rate 0"},
			check: func(t *testing.T, cfg suite.Config, out string) {
				if !slices.Equal(cfg.Sessions, []int{1, 8, 32}) || !slices.Equal(cfg.Sizes, []int{64}) || cfg.Calls != 500 || out != "" {
					t.Errorf("cfg = %+v, out %q", cfg, out)
				}
				if !slices.Equal(cfg.Paths, []string{"floor1", "gatehouse"}) {
					t.Errorf("paths = %v", cfg.Paths)
				}
				if !slices.Equal(cfg.GatehouseArgs, []string{"--log-level", "warn", "--quota-rate", "0"}) {
					t.Errorf("gatehouse args = %q", cfg.GatehouseArgs)
				}
			},
		},
		{
			name: "environment fallbacks",
			env:  map[string]string{"GATEBENCH_REPO": "/tmp/elsewhere", "GATEBENCH_GATEHOUSE_BIN": "/opt/gatehouse"},
			check: func(t *testing.T, cfg suite.Config, _ string) {
				if cfg.Repo != "/tmp/elsewhere" || cfg.GatehouseBin != "/opt/gatehouse" {
					t.Errorf("repo %q bin %q", cfg.Repo, cfg.GatehouseBin)
				}
			},
		},
		{
			name: "flag beats environment",
			args: []string{"-repo", "/srv/gatehouse"},
			env:  map[string]string{"GATEBENCH_REPO": "/tmp/elsewhere"},
			check: func(t *testing.T, cfg suite.Config, _ string) {
				if cfg.Repo != "/srv/gatehouse" {
					t.Errorf("repo %q", cfg.Repo)
				}
			},
		},
		{
			name: "quick",
			args: []string{"-quick"},
			check: func(t *testing.T, cfg suite.Config, _ string) {
				if !cfg.Quick || cfg.Calls != 200 || cfg.Warmup != 20 || cfg.Repeats != 2 || cfg.ProbeAppends != 20 {
					t.Errorf("cfg = %+v", cfg)
				}
				if !slices.Equal(cfg.Sessions, []int{1, 32}) || !slices.Equal(cfg.Sizes, []int{64, 16384}) || !slices.Equal(cfg.Paths, suite.DefaultPaths) {
					t.Errorf("quick changed the workloads: sessions %v sizes %v paths %v", cfg.Sessions, cfg.Sizes, cfg.Paths)
				}
			},
		},
		{
			name: "quick keeps explicit flags",
			args: []string{"-repeats", "3", "-quick", "-calls", "50"},
			check: func(t *testing.T, cfg suite.Config, _ string) {
				if !cfg.Quick || cfg.Calls != 50 || cfg.Warmup != 20 || cfg.Repeats != 3 || cfg.ProbeAppends != 20 {
					t.Errorf("cfg = %+v", cfg)
				}
			},
		},
		{name: "bad sessions", args: []string{"-sessions", "1,many"}, wantErr: "-sessions"},
		{name: "empty sizes", args: []string{"-sizes", ","}, wantErr: "-sizes"},
		{name: "unknown flag", args: []string{"-concurrency", "3"}, wantErr: "concurrency"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected arguments"},
	})
}

// TestRunRejectsBadConfig runs each benchmark outside the work tree: it must fail before it
// measures, and print no report.
// TestParseObserve: `gatebench observe` measures the gateway's variants at 64 B, next to
// floors 1 and 2, into its own report.
func TestParseObserve(t *testing.T) {
	t.Parallel()
	cfg, out, err := parseKind(observeBench, nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Observe || out != "docs/benchmarks-observability.md" || !slices.Equal(cfg.Sizes, []int{64}) {
		t.Errorf("cfg = %+v, out %q", cfg, out)
	}
	if !slices.Contains(cfg.Paths, suite.GatehouseTraced) || !slices.Contains(cfg.Paths, suite.GatehouseNoMetrics) || !slices.Contains(cfg.Paths, suite.Floor2) {
		t.Errorf("paths %v: want the bare hop and the variants", cfg.Paths)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, bench := range [][]string{nil, {listsSubcommand}} {
		t.Run(strings.Join(append([]string{"gatebench"}, bench...), " "), func(t *testing.T) {
			t.Parallel()
			var stdout strings.Builder
			args := append(append([]string{}, bench...), "-repo", t.TempDir(), "-out", "")
			err := Run(t.Context(), args, func(string) string { return "" }, &stdout, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "go.work") {
				t.Fatalf("Run %q in a directory without go.work = %v", args, err)
			}
			if stdout.Len() != 0 {
				t.Fatalf("printed a report: %q", stdout.String())
			}
		})
	}
}
