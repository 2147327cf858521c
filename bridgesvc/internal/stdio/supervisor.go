// Package stdio runs MCP servers as child processes and speaks newline-delimited JSON-RPC to
// them: one Child per (session, server), started by a Supervisor that bounds how many run at
// once and reaps every one of them.
//
// A child is executed from its argv (never through a shell) in its own process group, with a
// scrubbed environment, in a cgroup of its own where the machine allows it (see contain.go).
// Shutdown follows the MCP stdio transport: close stdin, wait, SIGTERM the group, wait,
// SIGKILL the group; then whatever is left of the child's process tree is killed and the
// child is always reaped.
package stdio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
)

// inheritedEnv are the only variables a child takes from the gateway's own environment.
var inheritedEnv = []string{"PATH", "HOME", "LANG", "TMPDIR"}

// Options configure a Supervisor. Zero values take the defaults noted.
type Options struct {
	// Grace is each wait of the shutdown sequence (default 2s).
	Grace time.Duration
	// MaxChildren bounds the live children (default 256).
	MaxChildren int
	// MaxChildrenPerTenant bounds the live children of one tenant (default MaxChildren).
	MaxChildrenPerTenant int
	// MaxChildrenPerPrincipal bounds the live children of one principal of a tenant (default
	// MaxChildrenPerTenant).
	MaxChildrenPerPrincipal int
	// StateDir, when set, records the live children so that the next start after a crash
	// ends them; it is locked for the Supervisor's life.
	StateDir string
	// NoCgroup disables the cgroup per child even where the machine allows it (the
	// subreaper fallback is used instead).
	NoCgroup bool
	// MaxLine bounds one stdout line, i.e. one message (default 16 MiB).
	MaxLine int
	// MaxStderrLine bounds one logged stderr line; the rest of a longer line is dropped
	// (default 4 KiB).
	MaxStderrLine int
	// ListenQueue bounds the messages held for Listen streams (default 256).
	ListenQueue int
	// Getenv reads the gateway's environment for the inherited variables (default os.Getenv).
	Getenv func(string) string
	// Logger receives lifecycle events and the children's stderr (default slog.Default()).
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Grace <= 0 {
		o.Grace = 2 * time.Second
	}
	if o.MaxChildren <= 0 {
		o.MaxChildren = 256
	}
	if o.MaxChildrenPerTenant <= 0 || o.MaxChildrenPerTenant > o.MaxChildren {
		o.MaxChildrenPerTenant = o.MaxChildren
	}
	if o.MaxChildrenPerPrincipal <= 0 || o.MaxChildrenPerPrincipal > o.MaxChildrenPerTenant {
		o.MaxChildrenPerPrincipal = o.MaxChildrenPerTenant
	}
	if o.MaxLine <= 0 {
		o.MaxLine = 16 << 20
	}
	if o.MaxStderrLine <= 0 {
		o.MaxStderrLine = 4 << 10
	}
	if o.ListenQueue <= 0 {
		o.ListenQueue = 256
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Spec says what to run.
type Spec struct {
	// Argv is the command and its arguments; Argv[0] is looked up in PATH when it has no slash.
	Argv []string
	// Env is added to the inherited variables, overriding them.
	Env map[string]string
	// Dir is the working directory; empty means the gateway's.
	Dir string
	// Logger, when set, is used for this child (e.g. carrying session and server attributes).
	Logger *slog.Logger
	// Principal and Tenant own the child: it counts against their caps until reaped. Empty
	// values are a principal and a tenant like any other (callers that do not say).
	Principal, Tenant string
}

// owner is who a child counts against: a principal is scoped by its tenant.
type owner struct{ tenant, principal string }

// Supervisor starts children and keeps track of them until they are reaped.
type Supervisor struct {
	opts  Options
	state *stateDir // nil without a StateDir

	mu           sync.Mutex
	children     map[*Child]struct{}
	count        int // children started or starting, not yet reaped
	perTenant    map[string]int
	perPrincipal map[owner]int
	records      map[string]record // by marker: what the state file holds
	cg           *cgroups          // nil when children get no cgroup
	closed       bool
	closeState   sync.Once
}

// NewSupervisor returns a Supervisor with opts. It picks how children's process trees are
// contained (and logs which), and with a StateDir it first ends the children a previous run
// recorded there.
func NewSupervisor(opts Options) (*Supervisor, error) {
	opts.defaults()
	s := &Supervisor{
		opts:         opts,
		children:     map[*Child]struct{}{},
		perTenant:    map[string]int{},
		perPrincipal: map[owner]int{},
		records:      map[string]record{},
	}
	log := opts.Logger
	var cgErr error
	if opts.NoCgroup {
		cgErr = errors.New("disabled")
	} else {
		s.cg, cgErr = detectCgroups()
	}
	if s.cg != nil {
		log.Info("stdio children contained", "mechanism", "cgroup", "cgroup_root", s.cg.root, "parent_death_signal", "SIGKILL")
	} else if err := becomeSubreaper(); err != nil {
		log.Warn("stdio children contained by process group only: no cgroup and no subreaper", "cgroup", cgErr, "err", err)
	} else {
		log.Info("stdio children contained", "mechanism", "subreaper", "no_cgroup", cgErr.Error(), "parent_death_signal", "SIGKILL")
	}
	if opts.StateDir != "" {
		st, recs, err := openState(opts.StateDir, log)
		if err != nil {
			return nil, err
		}
		s.state = st
		if len(recs) > 0 {
			n, left := endRecorded(recs, log)
			log.Info("ended the stdio children of the previous run", "recorded", len(recs), "ended", n)
			for _, r := range left {
				s.records[r.Marker] = r // retried at the next start
			}
		}
		if err := s.saveState(); err != nil {
			st.close()
			return nil, err
		}
	}
	return s, nil
}

// Len is the number of children started and not yet reaped.
func (s *Supervisor) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Start runs spec. It fails with upstream.ErrTooMany at the global, per-tenant or
// per-principal limit (the message says which) and with upstream.ErrSpawn when the command
// cannot be started.
func (s *Supervisor) Start(spec Spec) (*Child, error) {
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return nil, fmt.Errorf("%w: the server has no command", upstream.ErrSpawn)
	}
	env, err := s.environ(spec.Env)
	if err != nil {
		return nil, err
	}
	if spec.Dir != "" {
		// exec reports a bad directory as if the command were missing; say what it is.
		if fi, err := os.Stat(spec.Dir); err != nil || !fi.IsDir() {
			if err == nil {
				err = errors.New("not a directory")
			}
			return nil, fmt.Errorf("%w: working directory: %v", upstream.ErrSpawn, err)
		}
	}
	who := owner{tenant: spec.Tenant, principal: spec.Principal}
	if err := s.reserve(who); err != nil {
		return nil, err
	}
	c, err := s.spawn(spec, env, who)
	s.mu.Lock()
	if err == nil {
		s.children[c] = struct{}{}
	}
	closed := s.closed
	s.mu.Unlock()
	if err != nil {
		s.release(who)
		return nil, err
	}
	c.start()
	if closed {
		_ = c.Close(context.Background())
		return nil, fmt.Errorf("%w: the bridge is shutting down", upstream.ErrClosed)
	}
	return c, nil
}

// Close shuts every child down concurrently and returns once all are reaped; when ctx ends
// first the remaining ones are killed at once. No child starts afterwards.
func (s *Supervisor) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	children := make([]*Child, 0, len(s.children))
	for c := range s.children {
		children = append(children, c)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range children {
		wg.Go(func() { _ = c.Close(ctx) })
	}
	wg.Wait()
	if s.state != nil {
		s.closeState.Do(func() {
			s.logState(s.saveState())
			s.state.close()
		})
	}
	return ctx.Err()
}

// reserve counts a child against every cap at once, or against none.
func (s *Supervisor) reserve(who owner) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return fmt.Errorf("%w: the bridge is shutting down", upstream.ErrClosed)
	case s.count >= s.opts.MaxChildren:
		return fmt.Errorf("%w: the bridge runs its maximum of %d stdio servers", upstream.ErrTooMany, s.opts.MaxChildren)
	case s.perTenant[who.tenant] >= s.opts.MaxChildrenPerTenant:
		return fmt.Errorf("%w: the tenant runs its maximum of %d stdio servers (per-tenant cap)", upstream.ErrTooMany, s.opts.MaxChildrenPerTenant)
	case s.perPrincipal[who] >= s.opts.MaxChildrenPerPrincipal:
		return fmt.Errorf("%w: the principal runs its maximum of %d stdio servers (per-principal cap)", upstream.ErrTooMany, s.opts.MaxChildrenPerPrincipal)
	}
	s.count++
	s.perTenant[who.tenant]++
	s.perPrincipal[who]++
	return nil
}

func (s *Supervisor) release(who owner) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count--
	if s.perTenant[who.tenant]--; s.perTenant[who.tenant] <= 0 {
		delete(s.perTenant, who.tenant)
	}
	if s.perPrincipal[who]--; s.perPrincipal[who] <= 0 {
		delete(s.perPrincipal, who)
	}
}

// remove forgets a reaped child: its counts are released and its record dropped.
func (s *Supervisor) remove(c *Child, keepRecord bool) {
	s.mu.Lock()
	delete(s.children, c)
	if !keepRecord {
		delete(s.records, c.marker)
	}
	s.mu.Unlock()
	s.release(c.owner)
	if !keepRecord {
		s.logState(s.saveState())
	}
}

// setRecord records (or updates) a child in the state file.
func (s *Supervisor) setRecord(r record) error {
	s.mu.Lock()
	s.records[r.Marker] = r
	s.mu.Unlock()
	return s.saveState()
}

func (s *Supervisor) dropRecord(marker string) {
	s.mu.Lock()
	delete(s.records, marker)
	s.mu.Unlock()
	s.logState(s.saveState())
}

// saveState writes the records to the state file (a no-op without a StateDir).
func (s *Supervisor) saveState() error {
	if s.state == nil {
		return nil
	}
	s.state.mu.Lock()
	defer s.state.mu.Unlock()
	s.mu.Lock()
	recs := make([]record, 0, len(s.records))
	for _, r := range s.records {
		recs = append(recs, r)
	}
	s.mu.Unlock()
	return s.state.save(recs)
}

func (s *Supervisor) logState(err error) {
	if err != nil {
		s.opts.Logger.Warn("cannot update the stdio state file", "err", err)
	}
}

// environ builds the scrubbed environment: the inherited variables the gateway has, then the
// server's own.
func (s *Supervisor) environ(extra map[string]string) ([]string, error) {
	env := make([]string, 0, len(inheritedEnv)+len(extra))
	for _, k := range inheritedEnv {
		if _, override := extra[k]; override {
			continue
		}
		if v := s.opts.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range extra {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("%w: invalid environment variable %q", upstream.ErrSpawn, k)
		}
		env = append(env, k+"="+v)
	}
	return env, nil
}

// spawn starts the process with three pipes whose gateway ends are pollable, so that closing
// them unblocks pending reads and writes.
func (s *Supervisor) spawn(spec Spec, env []string, who owner) (*Child, error) {
	logger := spec.Logger
	if logger == nil {
		logger = s.opts.Logger
	}
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	inR, inW, err := pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: stdin pipe: %v", upstream.ErrSpawn, err)
	}
	outR, outW, err := pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("%w: stdout pipe: %v", upstream.ErrSpawn, err)
	}
	errR, errW, err := pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("%w: stderr pipe: %v", upstream.ErrSpawn, err)
	}
	marker := newMarker()
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Env = append(env, EnvMarker+"="+marker) // last: it wins over a configured variable of that name
	cmd.Dir = spec.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd, cgroup, err := s.startContained(cmd, marker)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("%w: %v", upstream.ErrSpawn, err)
	}
	// The child holds its own copies now.
	_ = inR.Close()
	_ = outW.Close()
	_ = errW.Close()
	pid := cmd.Process.Pid
	rec := record{Marker: marker, Pid: pid, Cgroup: cgroup}
	// The child is not reaped before start() runs wait, so the pid still names it.
	if st, err := readStat(pid); err == nil {
		rec.Start = st.start
	}
	s.logState(s.setRecord(rec))
	c := newChild(s, cmd, inW, outR, errR, logger.With("pid", pid))
	c.owner, c.marker, c.cgroup = who, marker, cgroup
	c.log.Info("upstream started", "command", spec.Argv[0])
	return c, nil
}

// startContained starts cmd in its own process group with SIGKILL as its parent-death signal,
// cloned into a new cgroup when the Supervisor uses them, and returns the started command (a
// copy of cmd after a retry) and the cgroup. The marker and the cgroup are recorded in the
// state file before the child exists. When the clone into the cgroup fails where a plain start works, cgroups
// are given up for good (logged) and the plain start kept.
func (s *Supervisor) startContained(cmd *exec.Cmd, marker string) (*exec.Cmd, string, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	s.mu.Lock()
	cg := s.cg
	s.mu.Unlock()
	// A fallback scan for orphans to reap must not see this child before it is owned.
	reaper.scan.RLock()
	defer reaper.scan.RUnlock()
	start := func(cmd *exec.Cmd) error {
		if err := startOnLockedThread(cmd); err != nil {
			return err
		}
		own(cmd.Process.Pid, true)
		return nil
	}
	if cg == nil {
		// Recorded first: a crash right after the start still leaves the marker to find.
		s.logState(s.setRecord(record{Marker: marker}))
		if err := start(cmd); err != nil {
			s.dropRecord(marker)
			return nil, "", err
		}
		return cmd, "", nil
	}
	path, dir, cgErr := cg.create(marker)
	if cgErr == nil {
		s.logState(s.setRecord(record{Marker: marker, Cgroup: path}))
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(dir.Fd())
		cgErr = start(cmd)
		_ = dir.Close()
		if cgErr == nil {
			return cmd, path, nil
		}
		_ = os.Remove(path)
		s.dropRecord(marker)
		if !cgroupStartFailed(cgErr) {
			return nil, "", cgErr
		}
		// Retry without the cgroup: if that works, the cgroup was the trouble.
		cmd = retryable(cmd)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	s.logState(s.setRecord(record{Marker: marker}))
	if err := start(cmd); err != nil {
		s.dropRecord(marker)
		return nil, "", err
	}
	s.mu.Lock()
	if s.cg == cg {
		s.cg = nil
	}
	s.mu.Unlock()
	if err := becomeSubreaper(); err != nil {
		s.opts.Logger.Warn("stdio children no longer get a cgroup; no subreaper either", "err", cgErr, "subreaper", err)
	} else {
		s.opts.Logger.Warn("stdio children no longer get a cgroup; falling back to the subreaper", "err", cgErr)
	}
	return cmd, "", nil
}

// retryable is a fresh copy of cmd, which cannot be started twice.
func retryable(cmd *exec.Cmd) *exec.Cmd {
	return &exec.Cmd{Path: cmd.Path, Args: cmd.Args, Env: cmd.Env, Dir: cmd.Dir,
		Stdin: cmd.Stdin, Stdout: cmd.Stdout, Stderr: cmd.Stderr}
}
