// Package proc runs the processes a benchmark measures (upstream servers,
// proxies, the gateway): started with their output in a log file, waited for
// until they answer, sampled for CPU time, and stopped politely then firmly.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Process is a child process started by Start.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	log     *os.File
	done    chan struct{}
	waitErr error
}

// Spec describes a process to start.
type Spec struct {
	Name    string   // for messages
	Argv    []string // program and arguments; never run through a shell
	Dir     string   // working directory ("" for the current one)
	LogPath string   // stdout and stderr go here
	Env     []string // nil: inherit the environment
}

// Start starts spec. The child gets SIGKILL if this process dies first, so a
// crashed benchmark leaves nothing listening.
func Start(spec Spec) (*Process, error) {
	if len(spec.Argv) == 0 {
		return nil, errors.New("proc: empty argv")
	}
	log, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: log: %w", spec.Name, err)
	}
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Dir = spec.Dir
	cmd.Env = spec.Env
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%s: start: %w", spec.Name, err)
	}
	p := &Process{Name: spec.Name, LogPath: spec.LogPath, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the child's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed once the child has exited and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Stop sends SIGTERM, waits up to grace, then sends SIGKILL. It returns the
// exit error only when the child had to be killed or exited on its own before
// Stop (a crash the caller should know about).
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return fmt.Errorf("%s had exited before it was stopped: %v (log: %s)", p.Name, p.waitErr, p.LogPath)
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	// Kill the whole group: the child may have children of its own.
	syscall.Kill(-p.PID(), syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s ignored SIGTERM for %v and was killed", p.Name, grace)
}

// LogTail returns the last n bytes of the child's log, for error messages.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(bytes.TrimSpace(b))
}

// WaitReady polls GET url until it answers 200, the child exits, or timeout
// passes.
func (p *Process) WaitReady(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("%s: readiness: %w", p.Name, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				client.CloseIdleConnections()
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready: %v; log tail:\n%s", p.Name, p.waitErr, p.LogTail(2000))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v (%v); log tail:\n%s", p.Name, timeout, last, p.LogTail(2000))
		case <-tick.C:
		}
	}
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago, for children that must be told their port on the command line.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// ClockTicks is the unit of utime and stime in /proc/PID/stat (USER_HZ). It is
// 100 on every Linux architecture Go supports; reading it properly needs
// sysconf(_SC_CLK_TCK), which is not reachable without cgo.
const ClockTicks = 100

// CPUTime returns the user plus system CPU time pid has used so far.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	utime, stime, err := ParseStat(b)
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / ClockTicks, nil
}

// ParseStat extracts utime and stime (fields 14 and 15, in clock ticks) from
// the contents of /proc/PID/stat. The command name (field 2) is in
// parentheses and may itself contain spaces and parentheses, so fields are
// counted from the last ')'.
func ParseStat(b []byte) (utime, stime uint64, err error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, 0, errors.New("stat: no command name")
	}
	fields := bytes.Fields(b[end+1:])
	// fields[0] is field 3 (state), so field n is fields[n-3].
	if len(fields) < 15-3+1 {
		return 0, 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(fields))
	}
	utime, err = strconv.ParseUint(string(fields[14-3]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("stat: utime: %w", err)
	}
	stime, err = strconv.ParseUint(string(fields[15-3]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("stat: stime: %w", err)
	}
	return utime, stime, nil
}

// TreeCPU returns the CPU time pid and its descendants have used so far: a server that
// forks a process per connection (PostgreSQL) does its work in its children. A living
// process counts its own time and that of the children it has reaped (cutime, cstime); a
// child that exited is in its parent's, so nothing is counted twice or lost when a child
// exits within a measured window.
func TreeCPU(pid int) (time.Duration, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	parent := map[int]int{}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // it exited meanwhile
		}
		if ppid, err := parsePPID(b); err == nil {
			parent[child] = ppid
		}
	}
	in := func(p int) bool {
		for range len(parent) + 1 { // bounded: a cycle in a racy snapshot cannot loop forever
			if p == pid {
				return true
			}
			next, ok := parent[p]
			if !ok || next == 0 || next == p {
				return false
			}
			p = next
		}
		return false
	}
	sum, err := withChildren(pid)
	if err != nil {
		return 0, err
	}
	for p := range parent {
		if p != pid && in(p) {
			if d, err := withChildren(p); err == nil {
				sum += d
			}
		}
	}
	return sum, nil
}

// withChildren is pid's CPU time with that of the children it has reaped.
func withChildren(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, errors.New("stat: no command name")
	}
	fields := bytes.Fields(b[end+1:])
	if len(fields) < 17-3+1 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 15", len(fields))
	}
	var ticks uint64
	for n := 14; n <= 17; n++ { // utime, stime, cutime, cstime
		v, err := strconv.ParseUint(string(fields[n-3]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: field %d: %w", n, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / ClockTicks, nil
}

// parsePPID extracts the parent's pid (field 4) from /proc/PID/stat.
func parsePPID(b []byte) (int, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, errors.New("stat: no command name")
	}
	fields := bytes.Fields(b[end+1:])
	if len(fields) < 2 {
		return 0, errors.New("stat: no parent pid")
	}
	return strconv.Atoi(string(fields[1]))
}
