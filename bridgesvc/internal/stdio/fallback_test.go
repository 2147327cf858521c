package stdio

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/stdio/stdiotest"
)

// TestCgroupCloneFailureFallsBack: when children cannot be cloned into a cgroup (here the
// "cgroup" is a plain directory), the child starts without one and the Supervisor falls back
// for good.
func TestCgroupCloneFailureFallsBack(t *testing.T) {
	t.Parallel()
	s, err := NewSupervisor(Options{NoCgroup: true, Grace: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	s.cg = &cgroups{root: root}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Start(Spec{Argv: []string{exe}, Env: map[string]string{stdiotest.EnvMode: "server"}})
	if err != nil {
		t.Fatalf("Start = %v, want a start without a cgroup", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer s.Close(ctx)
	if c.cgroup != "" || s.cg != nil {
		t.Fatalf("child cgroup %q, supervisor cgroups %v: want none after the failed clone", c.cgroup, s.cg)
	}
	if left, _ := os.ReadDir(root); len(left) != 0 {
		t.Fatalf("the failed cgroup was left behind: %v", left)
	}
}
