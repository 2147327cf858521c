package stdio

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/stdio/stdiotest"
)

// sleeper starts the test binary as a process that blocks forever, with extra environment.
// It stays in the test's process group, so that the subreaper (which other tests of this
// package turn on) leaves its zombie to cmd.Wait.
func sleeper(t *testing.T, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append([]string{stdiotest.EnvMode + "=sleep"}, env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// endedBy reports the signal that ended cmd, after sending SIGTERM: a SIGKILL sent earlier
// (by endRecorded) wins over it.
func endedBy(t *testing.T, cmd *exec.Cmd) syscall.Signal {
	t.Helper()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("Wait = %v", err)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() {
		t.Fatalf("process exited with %v, not by a signal", ws)
	}
	return ws.Signal()
}

// TestEndRecorded: a start after a crash kills what the state file names, and only that: a
// pid now used by another process (another start time) and a cgroup that is not a bridge's
// are left alone.
func TestEndRecorded(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	same, reused, marked := sleeper(t), sleeper(t), sleeper(t, EnvMarker+"="+strings.Repeat("ab", 16))
	start := func(cmd *exec.Cmd) uint64 {
		st, err := readStat(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		return st.start
	}
	recs := []record{
		{Marker: strings.Repeat("01", 16), Pid: same.Process.Pid, Start: start(same)},
		{Marker: strings.Repeat("02", 16), Pid: reused.Process.Pid, Start: start(reused) - 1},
		{Marker: strings.Repeat("ab", 16)},
	}
	var foreign *exec.Cmd
	if cg, err := detectCgroups(); err == nil {
		// A cgroup outside the bridge's naming, with a process in it.
		path := filepath.Join(cg.root, "gatehouse-test-foreign-"+newMarker())
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		foreign = sleeper(t)
		if err := os.WriteFile(filepath.Join(path, "cgroup.procs"), []byte(strconv.Itoa(foreign.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := removeCgroup(path, recoverTimeout); err != nil {
				t.Errorf("remove the test cgroup: %v", err)
			}
		})
		recs = append(recs, record{Marker: strings.Repeat("03", 16), Cgroup: path})
	}
	endRecorded(recs, quiet)
	if sig := endedBy(t, same); sig != syscall.SIGKILL {
		t.Errorf("recorded child ended by %v, want SIGKILL", sig)
	}
	if sig := endedBy(t, marked); sig != syscall.SIGKILL {
		t.Errorf("process with a recorded marker ended by %v, want SIGKILL", sig)
	}
	if sig := endedBy(t, reused); sig != syscall.SIGTERM {
		t.Errorf("process on a reused pid ended by %v, want our SIGTERM: it was killed", sig)
	}
	if foreign != nil {
		if sig := endedBy(t, foreign); sig != syscall.SIGTERM {
			t.Errorf("process in a foreign cgroup ended by %v, want our SIGTERM: it was killed", sig)
		}
	}
}
