package proc

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

// TestTreeCPUCountsChildren: a living child's CPU time is in its parent's tree.
func TestTreeCPUCountsChildren(t *testing.T) {
	// A child that burns some CPU, then waits to be killed.
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec sleep 60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var child int64
	testsync.WaitFor(t, 30*time.Second, "the child to use CPU", func() bool {
		d, err := CPUTime(cmd.Process.Pid)
		child = int64(d)
		return err == nil && d > 0
	})
	self := os.Getpid()
	own, err := CPUTime(self)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := TreeCPU(self) // read after both: CPU time only grows
	if err != nil {
		t.Fatal(err)
	}
	if int64(tree) < int64(own)+child {
		t.Fatalf("tree CPU %v < own %v + child %v", tree, own, child)
	}
	if _, err := TreeCPU(1 << 30); err == nil {
		t.Fatal("TreeCPU of a pid that does not exist: no error")
	}
	if p, err := parsePPID([]byte("12 (a) b) S 34 12 12 0")); err != nil || p != 34 {
		t.Fatalf("parsePPID = %d, %v; want 34", p, err)
	}
}

// TestTreeCPUKeepsExitedChildren: a child that exited and was reaped still counts, in its
// parent's cutime: the tree's time never goes down when a child exits.
func TestTreeCPUKeepsExitedChildren(t *testing.T) {
	before, err := TreeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
	if err := cmd.Run(); err != nil { // Run waits: the child is reaped
		t.Fatal(err)
	}
	child := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	after, err := TreeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The child's time, as the tick counter has it, is in after and not in before; allow
	// one tick of rounding for each of utime and stime.
	if after-before < child-2*time.Second/ClockTicks {
		t.Fatalf("tree CPU grew %v across a reaped child that used %v", after-before, child)
	}
}
