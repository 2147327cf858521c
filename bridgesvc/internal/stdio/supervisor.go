// Package stdio runs MCP servers as child processes and speaks newline-delimited JSON-RPC to
// them: one Child per (session, server), started by a Supervisor that bounds how many run at
// once and reaps every one of them.
//
// A child is executed from its argv (never through a shell) in its own process group, with a
// scrubbed environment. Shutdown follows the MCP stdio transport: close stdin, wait, SIGTERM
// the group, wait, SIGKILL the group; the child is always reaped.
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
}

// Supervisor starts children and keeps track of them until they are reaped.
type Supervisor struct {
	opts     Options
	mu       sync.Mutex
	children map[*Child]struct{}
	starting int
	closed   bool
}

// NewSupervisor returns a Supervisor with opts.
func NewSupervisor(opts Options) *Supervisor {
	opts.defaults()
	return &Supervisor{opts: opts, children: map[*Child]struct{}{}}
}

// Len is the number of children started and not yet reaped.
func (s *Supervisor) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.children) + s.starting
}

// Start runs spec. It fails with upstream.ErrTooMany at the MaxChildren limit and with
// upstream.ErrSpawn when the command cannot be started.
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
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: the bridge is shutting down", upstream.ErrClosed)
	case len(s.children)+s.starting >= s.opts.MaxChildren:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d children already running", upstream.ErrTooMany, s.opts.MaxChildren)
	}
	s.starting++
	s.mu.Unlock()

	c, err := s.spawn(spec, env)
	s.mu.Lock()
	s.starting--
	if err == nil {
		s.children[c] = struct{}{}
	}
	closed := s.closed
	s.mu.Unlock()
	if err != nil {
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
	return ctx.Err()
}

func (s *Supervisor) remove(c *Child) {
	s.mu.Lock()
	delete(s.children, c)
	s.mu.Unlock()
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
func (s *Supervisor) spawn(spec Spec, env []string) (*Child, error) {
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
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Env = env
	cmd.Dir = spec.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		closeAll()
		return nil, fmt.Errorf("%w: %v", upstream.ErrSpawn, err)
	}
	// The child holds its own copies now.
	_ = inR.Close()
	_ = outW.Close()
	_ = errW.Close()
	c := newChild(s, cmd, inW, outR, errR, logger.With("pid", cmd.Process.Pid))
	c.log.Info("upstream started", "command", spec.Argv[0])
	return c, nil
}
