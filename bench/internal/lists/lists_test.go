package lists_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/benchtest"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/lists"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/suite"
)

// TestRunDirect runs a tiny list benchmark end to end over the direct paths (real echo
// servers with synthetic tools; the gateway's paths are left to `make bench-quick`, which
// builds it) and checks the shape of what comes back.
func TestRunDirect(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts processes")
	}
	t.Parallel()
	var progress strings.Builder
	rep, err := lists.Run(t.Context(), lists.Config{
		Setup: suite.Setup{
			Repo:       benchtest.RepoRoot(t),
			Protocol:   "2025-11-25",
			Paths:      []string{lists.Direct3, lists.Direct},
			RunTimeout: time.Minute,
			Progress:   &progress,
		},
		ExtraTools: 7,
		Lists:      6,
		Warmup:     1,
		Repeats:    2,
	})
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	if len(rep.Paths) != 2 || rep.Paths[0].Key != lists.Direct || rep.Paths[0].WantTools != 10 || rep.Paths[1].WantTools != 30 {
		t.Fatalf("paths = %+v, want direct (3 + 7 tools) then direct ×3 (30), in run order", rep.Paths)
	}
	if len(rep.Runs) != 4 {
		t.Fatalf("%d runs, want 4", len(rep.Runs))
	}
	for i, run := range rep.Runs {
		want := rep.Paths[i%2]
		if run.Path != want.Key || run.Repeat != i/2+1 {
			t.Fatalf("run %d is %s repeat %d, want %s repeat %d (interleaved)", i, run.Path, run.Repeat, want.Key, i/2+1)
		}
		if run.Failed != "" || run.Errors != 0 || run.Calls != 6 || run.Answer.Tools != want.WantTools || run.Answer.Bytes <= 0 {
			t.Fatalf("run %d: %+v", i, run)
		}
		if run.HopCPU >= 0 || run.UpstreamCPU < 0 {
			t.Fatalf("run %d: gateway CPU %v (no gateway ran), upstream CPU %v", i, run.HopCPU, run.UpstreamCPU)
		}
	}
	if pages := rep.Runs[1].Answer.Pages; pages != 3 {
		t.Fatalf("direct ×3 took %d pages, want one per server", pages)
	}
	md := rep.Markdown()
	for _, want := range []string{"| direct | 10 | 1 |", "| direct ×3 | 30 | 3 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
