package suite_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/benchtest"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/floor"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/suite"
)

// TestMain lets the test binary double as the floor servers, as gatebench
// does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve-floor" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := floor.Serve(ctx, os.Args[2:], os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestCallsFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		calls, size, sessions, want int
	}{
		{calls: 0, size: 64, sessions: 1, want: 2000},
		{calls: 0, size: 64, sessions: 8, want: 2000},
		{calls: 0, size: 64, sessions: 32, want: 8000},
		{calls: 0, size: 64, sessions: 128, want: 32000},
		{calls: 0, size: 4096, sessions: 32, want: 8000},
		{calls: 0, size: 16384, sessions: 1, want: 1000},
		{calls: 0, size: 16384, sessions: 32, want: 4000},
		{calls: 500, size: 64, sessions: 32, want: 500},
		{calls: 500, size: 16384, sessions: 32, want: 500},
	}
	for _, tc := range tests {
		if got := (suite.Config{Calls: tc.calls}).CallsFor(tc.size, tc.sessions); got != tc.want {
			t.Errorf("CallsFor(%d, %d) with Calls=%d = %d, want %d", tc.size, tc.sessions, tc.calls, got, tc.want)
		}
	}
}

func TestRunRejectsConfig(t *testing.T) {
	t.Parallel()
	root := benchtest.RepoRoot(t)
	valid := func() suite.Config {
		return suite.Config{Setup: suite.Setup{Repo: root, RunTimeout: time.Minute}, Sessions: []int{1}, Sizes: []int{64}, Repeats: 1, FloorCommand: []string{"x"}}
	}
	tests := []struct {
		name    string
		mutate  func(*suite.Config)
		wantSub string
	}{
		{name: "not the work tree", mutate: func(c *suite.Config) { c.Repo = t.TempDir() }, wantSub: "go.work"},
		{name: "zero sessions", mutate: func(c *suite.Config) { c.Sessions = []int{1, 0} }, wantSub: "sessions"},
		{name: "no sessions", mutate: func(c *suite.Config) { c.Sessions = nil }, wantSub: "sessions"},
		{name: "tiny size", mutate: func(c *suite.Config) { c.Sizes = []int{5} }, wantSub: "sizes"},
		{name: "huge size", mutate: func(c *suite.Config) { c.Sizes = []int{64 << 20} }, wantSub: "sizes"},
		{name: "negative calls", mutate: func(c *suite.Config) { c.Calls = -1 }, wantSub: "calls"},
		{name: "no repeats", mutate: func(c *suite.Config) { c.Repeats = 0 }, wantSub: "repeats"},
		{name: "unknown path", mutate: func(c *suite.Config) { c.Paths = []string{"floor9"} }, wantSub: "floor9"},
		{name: "no timeout", mutate: func(c *suite.Config) { c.RunTimeout = 0 }, wantSub: "timeout"},
		{name: "negative probe", mutate: func(c *suite.Config) { c.ProbeAppends = -1 }, wantSub: "probe"},
		{name: "huge probe", mutate: func(c *suite.Config) { c.ProbeAppends = 1_000_000 }, wantSub: "probe"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid()
			tc.mutate(&cfg)
			if _, err := suite.Run(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), tc.wantSub) {
				t.Fatalf("Run = %v, want an error containing %q", err, tc.wantSub)
			}
		})
	}
}

// TestRunFloors runs a tiny benchmark end to end over the real floors and a
// gateway that cannot start, and checks the shape of what comes back.
func TestRunFloors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts processes")
	}
	t.Parallel()
	root := benchtest.RepoRoot(t)
	var progress strings.Builder
	rep, err := suite.Run(t.Context(), suite.Config{
		Setup: suite.Setup{
			Repo:         root,
			Protocol:     "2025-11-25",
			GatehouseBin: "/bin/false", // exits at once: the path is noted and skipped
			RunTimeout:   time.Minute,
			Progress:     &progress,
		},
		Sessions:     []int{1, 3},
		Sizes:        []int{64, 1024},
		Calls:        30,
		Warmup:       6,
		Repeats:      2,
		ProbeAppends: 3,
		FloorCommand: []string{os.Args[0], "serve-floor"},
	})
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	if got := len(rep.Paths); got != 4 {
		t.Fatalf("measured %d paths, want the four floors", got)
	}
	if len(rep.Runs) != 2*2*2*4 {
		t.Fatalf("%d runs, want 32", len(rep.Runs))
	}
	// Interleaved: consecutive runs cycle through the paths.
	for i, run := range rep.Runs {
		if want := rep.Paths[i%4].Name; run.Path != want {
			t.Fatalf("run %d is %s, want %s (interleaved)", i, run.Path, want)
		}
		if run.Failed != "" || run.Errors != 0 || run.Calls != 30 {
			t.Fatalf("run %d: %+v", i, run)
		}
	}
	if len(rep.Notes) == 0 || !strings.Contains(rep.Notes[0], "gatehouse not measured") {
		t.Fatalf("notes = %q, want the gateway noted as not measured", rep.Notes)
	}
	// One fdatasync probe per interleaved cycle, each of the asked size.
	if len(rep.Probes) != 2*2*2 {
		t.Fatalf("%d probes, want 8", len(rep.Probes))
	}
	for i, p := range rep.Probes {
		if p.Failed != "" || p.Appends != 3 || !(p.Latency.P50 > 0) {
			t.Fatalf("probe %d: %+v", i, p)
		}
	}
	if !strings.Contains(rep.Machine.AuditDisk, "the gateway did not run") {
		t.Errorf("audit disk = %q, want it to say the gateway did not run", rep.Machine.AuditDisk)
	}
	goals := rep.Goals()
	if len(goals) != 3 || goals[0].Status() != "not measured" {
		t.Errorf("goals without a gateway = %+v, want not measured", goals)
	}
	md := rep.Markdown()
	for _, want := range []string{"| floor 0 |", "| floor 1 |", "| floor 2 |", "| floor 3 |", "Latency added over floor 1", "1 KiB arguments", "## The audit disk", "## Goals"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
