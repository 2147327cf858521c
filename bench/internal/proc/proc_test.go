package proc_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/proc"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		stat      string
		wantUtime uint64
		wantStime uint64
		wantErr   bool
	}{
		{
			name:      "plain",
			stat:      "1234 (gatehouse) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 75 0 0 20 0 12 0 100 1000000 2000 18446744073709551615",
			wantUtime: 250, wantStime: 75,
		},
		{
			name:      "command with spaces and parentheses",
			stat:      "42 (a (b) c) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 1 1 1",
			wantUtime: 7, wantStime: 3,
		},
		{name: "no command", stat: "42 gatehouse S 1 2 3", wantErr: true},
		{name: "truncated", stat: "42 (x) S 1 42 42 0 -1 0 0 0 0 0 7", wantErr: true},
		{name: "not a number", stat: "42 (x) S 1 42 42 0 -1 0 0 0 0 0 seven 3 0", wantErr: true},
		{name: "empty", stat: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, s, err := proc.ParseStat([]byte(tc.stat))
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseStat error = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && (u != tc.wantUtime || s != tc.wantStime) {
				t.Fatalf("ParseStat = %d, %d; want %d, %d", u, s, tc.wantUtime, tc.wantStime)
			}
		})
	}
}

func TestCPUTimeSelf(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	d, err := proc.CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d < 0 {
		t.Fatalf("CPUTime = %v", d)
	}
}

func sleepBinary(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	return path
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, err := proc.Start(proc.Spec{Name: "sleeper", Argv: []string{sleepBinary(t), "60"}, LogPath: filepath.Join(dir, "log")})
	if err != nil {
		t.Fatal(err)
	}
	if p.PID() <= 0 {
		t.Fatalf("PID = %d", p.PID())
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Stop returned before the process was reaped")
	}
}

func TestStartFailures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name string
		spec proc.Spec
	}{
		{name: "empty argv", spec: proc.Spec{Name: "x", LogPath: filepath.Join(dir, "a")}},
		{name: "missing program", spec: proc.Spec{Name: "x", Argv: []string{filepath.Join(dir, "nope")}, LogPath: filepath.Join(dir, "b")}},
		{name: "unwritable log", spec: proc.Spec{Name: "x", Argv: []string{"true"}, LogPath: filepath.Join(dir, "no", "such", "dir")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if p, err := proc.Start(tc.spec); err == nil {
				p.Stop(time.Second)
				t.Fatal("Start succeeded")
			}
		})
	}
}

func TestWaitReady(t *testing.T) {
	t.Parallel()
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(ok.Close)
	dir := t.TempDir()
	p, err := proc.Start(proc.Spec{Name: "sleeper", Argv: []string{sleepBinary(t), "60"}, LogPath: filepath.Join(dir, "log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	if err := p.WaitReady(t.Context(), ok.URL, 30*time.Second); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
}

func TestWaitReadyExited(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "log")
	// The child writes a line and exits without ever serving.
	p, err := proc.Start(proc.Spec{Name: "quitter", Argv: []string{os.Args[0], "-test.run=^$", "-test.v"}, LogPath: logPath})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := proc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitReady(t.Context(), "http://"+addr+"/healthz", 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("WaitReady = %v, want an exited error", err)
	}
	<-p.Exited()
	if err := p.Stop(time.Second); err == nil {
		t.Fatal("Stop of an exited process returned nil")
	}
}
