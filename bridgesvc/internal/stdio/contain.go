package stdio

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// How a child's process tree is kept and ended (see docs/architecture.md, "stdio children"):
//
//   - Every child runs in its own process group and gets SIGKILL when the gateway dies
//     (Pdeathsig). The kernel sends that signal when the thread that forked the child exits,
//     so every child is forked from one goroutine locked to its thread, which never exits.
//   - Where the machine allows it (a writable cgroup2 hierarchy), every child is cloned
//     straight into a cgroup of its own (CLONE_INTO_CGROUP: no window in which it could fork
//     outside it). Ending the child kills the whole cgroup (cgroup.kill), so a descendant that
//     left the process group or the session (setsid) ends too; the cgroup is then removed.
//   - Otherwise the gateway becomes a child subreaper: orphaned descendants re-parent to it
//     instead of init. Ending a child kills its process group, its descendants and every
//     orphan the gateway adopted whose environment carries the child's marker; the gateway
//     reaps the zombies of adopted orphans (never a pid a live exec.Cmd owns).

// EnvMarker is the environment variable that marks each child (and the descendants that keep
// its environment) with a random token of its own.
const EnvMarker = "GATEHOUSE_STDIO_CHILD"

// cgroupPrefix names the bridge's per-child cgroups; recovery removes no other.
const cgroupPrefix = "gatehouse-stdio-"

// newMarker returns a random token.
func newMarker() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// starter forks every child from one locked OS thread that never exits, so that Pdeathsig
// fires when the gateway dies and not when some runtime thread does.
var starter struct {
	once sync.Once
	reqs chan startReq
}

type startReq struct {
	cmd  *exec.Cmd
	done chan error
}

func startOnLockedThread(cmd *exec.Cmd) error {
	starter.once.Do(func() {
		starter.reqs = make(chan startReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range starter.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	starter.reqs <- startReq{cmd: cmd, done: done}
	return <-done
}

// cgroups creates the per-child cgroups under the gateway's own cgroup in the cgroup2
// hierarchy.
type cgroups struct {
	root  string // where the per-child cgroups are made
	mount string // the cgroup2 mount point
}

// detectCgroups finds a cgroup2 hierarchy the gateway may create cgroups in and move
// processes into, by making (and removing) a probe cgroup.
func detectCgroups() (*cgroups, error) {
	mount, err := cgroup2Mount()
	if err != nil {
		return nil, err
	}
	own, err := ownCgroup()
	if err != nil {
		return nil, err
	}
	cg := &cgroups{root: filepath.Join(mount, own), mount: mount}
	probe := filepath.Join(cg.root, cgroupPrefix+"probe-"+newMarker())
	if err := os.Mkdir(probe, 0o755); err != nil {
		return nil, fmt.Errorf("create a cgroup in %s: %w", cg.root, err)
	}
	defer os.Remove(probe)
	if err := unix.Access(filepath.Join(probe, "cgroup.procs"), unix.W_OK); err != nil {
		return nil, fmt.Errorf("cgroup.procs in %s not writable: %w", cg.root, err)
	}
	return cg, nil
}

// cgroup2Mount returns the first cgroup2 mount point in /proc/self/mountinfo.
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if ok && len(fields) >= 5 && len(tail) > 0 && tail[0] == "cgroup2" {
			return unescapeMount(fields[4]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no cgroup2 hierarchy mounted")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ownCgroup is the gateway's path in the cgroup2 hierarchy (the "0::" line).
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			if strings.HasSuffix(p, "(deleted)") {
				return "", errors.New("the gateway's cgroup was removed")
			}
			return p, nil
		}
	}
	return "", errors.New("not in a cgroup2 hierarchy")
}

// create makes the cgroup for a child and returns its path and an open descriptor for
// CLONE_INTO_CGROUP.
func (cg *cgroups) create(marker string) (string, *os.File, error) {
	path := filepath.Join(cg.root, cgroupPrefix+marker)
	if err := os.Mkdir(path, 0o755); err != nil {
		return "", nil, fmt.Errorf("create cgroup: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		_ = os.Remove(path)
		return "", nil, fmt.Errorf("open cgroup: %w", err)
	}
	return path, f, nil
}

// ours reports whether path names a per-child cgroup of a bridge (a recorded path is checked
// before anything in it is killed).
func ours(path, mount string) bool {
	return mount != "" && filepath.IsAbs(path) && filepath.Clean(path) == path &&
		strings.HasPrefix(filepath.Base(path), cgroupPrefix) &&
		strings.HasPrefix(path, strings.TrimSuffix(mount, "/")+"/")
}

// killCgroup SIGKILLs every process in the cgroup: cgroup.kill where the kernel has it (5.14),
// else each pid listed, until none is left.
func killCgroup(path string) error {
	err := os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
	if err == nil || errors.Is(err, os.ErrNotExist) && !exists(path) {
		return nil
	}
	for range 100 {
		b, rerr := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if rerr != nil {
			if errors.Is(rerr, os.ErrNotExist) {
				return nil
			}
			return rerr
		}
		pids := strings.Fields(string(b))
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			if pid, perr := strconv.Atoi(p); perr == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return errors.New("processes keep appearing in the cgroup")
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// removeCgroup kills what is left in the cgroup and removes it, waiting up to timeout for
// the killed processes to exit.
func removeCgroup(path string, timeout time.Duration) error {
	if err := killCgroup(path); err != nil {
		return fmt.Errorf("kill cgroup: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err := os.Remove(path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup: %w", err)
		}
		_ = killCgroup(path)
		time.Sleep(wait) // the kernel gives no event for an emptied cgroup a plain rmdir could wait on
	}
}

// cgroupStartFailed reports whether a failed clone into a cgroup should be retried without
// one: what clone3 with CLONE_INTO_CGROUP fails with when the cgroup (delegation, permissions,
// not a cgroup, an old kernel) rather than the command is the trouble. A retry that fails too
// is the command's failure.
func cgroupStartFailed(err error) bool {
	for _, errno := range []unix.Errno{unix.EPERM, unix.EACCES, unix.EBUSY, unix.EBADF, unix.EINVAL, unix.ENOSYS, unix.EOPNOTSUPP, unix.E2BIG} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// reaper is the fallback's process-wide state: the gateway as child subreaper, and which of
// its children are owned by a live exec.Cmd (whose Wait must get their status). Ownership is
// tracked in every mode, since a Supervisor may fall back after children have started.
var reaper = struct {
	once  sync.Once
	err   error
	scan  sync.RWMutex // starts hold it shared, so a scan never sees a child not yet owned
	mu    sync.Mutex
	owned map[int]bool
}{owned: map[int]bool{}}

// becomeSubreaper makes the gateway a child subreaper and starts reaping the orphans it adopts.
func becomeSubreaper() error {
	reaper.once.Do(func() {
		if reaper.err = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); reaper.err != nil {
			return
		}
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGCHLD)
		go func() {
			for range sigs {
				reapOrphans()
			}
		}()
	})
	return reaper.err
}

func own(pid int, owned bool) {
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	if owned {
		reaper.owned[pid] = true
	} else {
		delete(reaper.owned, pid)
	}
}

// reapOrphans reaps the gateway's zombie children that no exec.Cmd of a Supervisor owns and
// that are not in the gateway's own process group: orphans adopted from stdio children (which
// run in groups of their own). A process other code in the gateway starts with os/exec
// stays in the gateway's group, so its Wait is not robbed.
func reapOrphans() {
	reaper.scan.Lock()
	defer reaper.scan.Unlock()
	self, group := os.Getpid(), unix.Getpgrp()
	for _, st := range scanProcs() {
		if st.ppid != self || st.state != 'Z' || st.pgid == group {
			continue
		}
		reaper.mu.Lock()
		owned := reaper.owned[st.pid]
		reaper.mu.Unlock()
		if !owned {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(st.pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// killTree is the fallback's end of a child's tree: it SIGKILLs, until a pass finds none,
// the processes of the child's group, its descendants, and the gateway's adopted orphans
// that carry its marker. The child itself must not have been reaped yet (its pid, and so
// its group id, stay reserved).
func killTree(pid int, marker string) {
	self := os.Getpid()
	for range 20 {
		procs := scanProcs()
		parent := make(map[int]int, len(procs))
		for _, st := range procs {
			parent[st.pid] = st.ppid
		}
		killed := 0
		for _, st := range procs {
			if st.pid == self || st.pid == pid || st.state == 'Z' {
				continue
			}
			if st.pgid == pid || descends(st.pid, pid, parent) || st.ppid == self && hasMarker(st.pid, marker) {
				_ = syscall.Kill(st.pid, syscall.SIGKILL)
				killed++
			}
		}
		if killed == 0 {
			return
		}
	}
}

func hasMarker(pid int, marker string) bool {
	v, ok := envValue(pid, EnvMarker)
	return ok && v == marker
}
