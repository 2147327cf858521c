package suite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/proc"
)

const (
	// readyTimeout bounds how long a process gets to answer its health check;
	// the gateway starts an embedded etcd, so it gets longer.
	readyTimeout          = 30 * time.Second
	gatehouseReadyTimeout = 90 * time.Second
	// stopGrace is how long a process gets to exit after SIGTERM.
	stopGrace = 10 * time.Second
	// buildTimeout bounds each `go build`.
	buildTimeout = 10 * time.Minute
)

// Fleet owns the processes a benchmark starts and its work directory: it builds binaries
// from the work tree into the directory, starts each process in the work tree with its log
// in the directory, and stops them all at the end. Both benchmarks (tools/call here,
// tools/list in package lists) run on one.
type Fleet struct {
	// Repo is the root of the Gatehouse work tree.
	Repo string
	// Work is the work directory: binaries, configs and logs.
	Work string
	// Progress receives a line per build and per process ready.
	Progress io.Writer
	keep     bool
	procs    []*proc.Process
	// closers run after every process has stopped (a database the gateway wrote to), in
	// reverse order; logs are the log files they write to.
	closers []func() error
	logs    []*os.File
}

// onClose runs fn when the fleet closes, after its processes have stopped.
func (f *Fleet) onClose(fn func() error) { f.closers = append(f.closers, fn) }

// logFile is a log file named after name in the work directory (io.Discard if it cannot be
// made), closed with the fleet.
func (f *Fleet) logFile(name string) io.Writer {
	file, err := os.Create(filepath.Join(f.Work, strings.ReplaceAll(name, " ", "-")+".log"))
	if err != nil {
		return io.Discard
	}
	f.logs = append(f.logs, file)
	return file
}

// NewFleet makes the fleet of a benchmark set up as s, with a fresh work directory named
// after prefix, which Close removes unless s keeps it.
func NewFleet(s Setup, prefix string) (*Fleet, error) {
	work, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	if s.KeepWorkDir {
		fmt.Fprintf(s.Progress, "work directory (kept): %s\n", work)
	}
	return &Fleet{Repo: s.Repo, Work: work, Progress: s.Progress, keep: s.KeepWorkDir}, nil
}

// Start starts a process in the work tree and waits until url answers. env, when given,
// is added to this process's environment.
func (f *Fleet) Start(ctx context.Context, name string, argv []string, url string, timeout time.Duration, env ...string) (*proc.Process, error) {
	logPath := filepath.Join(f.Work, strings.ReplaceAll(name, " ", "-")+".log")
	spec := proc.Spec{Name: name, Argv: argv, Dir: f.Repo, LogPath: logPath}
	if len(env) > 0 {
		spec.Env = append(os.Environ(), env...)
	}
	p, err := proc.Start(spec)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx, url, timeout); err != nil {
		p.Stop(stopGrace)
		return nil, err
	}
	f.procs = append(f.procs, p)
	fmt.Fprintf(f.Progress, "%s ready (pid %d)\n", name, p.PID())
	return p, nil
}

// Close stops every process, in reverse start order, and removes the work directory unless
// it is kept. It returns notes for the report on any process that had died on its own
// during the benchmark or would not stop.
func (f *Fleet) Close() []string {
	var notes []string
	for i := len(f.procs) - 1; i >= 0; i-- {
		p := f.procs[i]
		select {
		case <-p.Exited():
			notes = append(notes, fmt.Sprintf("%s exited during the benchmark; log tail: %s", p.Name, p.LogTail(500)))
			continue
		default:
		}
		if err := p.Stop(stopGrace); err != nil {
			notes = append(notes, err.Error())
		}
	}
	f.procs = nil
	for i := len(f.closers) - 1; i >= 0; i-- {
		if err := f.closers[i](); err != nil {
			notes = append(notes, err.Error())
		}
	}
	f.closers = nil
	for _, l := range f.logs {
		l.Close()
	}
	f.logs = nil
	if !f.keep {
		os.RemoveAll(f.Work)
	}
	return notes
}

// Build runs `go build -o out pkg` in the work tree, bounded by buildTimeout.
func (f *Fleet) Build(ctx context.Context, out, pkg string) error {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = f.Repo
	msg, err := cmd.CombinedOutput()
	if err != nil {
		text := strings.TrimSpace(string(msg))
		if len(text) > 1500 {
			text = text[:1500] + "…"
		}
		return fmt.Errorf("go build %s: %w: %s", pkg, err, text)
	}
	return nil
}

// BuildEcho builds the example echo server into the work directory and returns the binary.
func (f *Fleet) BuildEcho(ctx context.Context) (string, error) {
	bin := filepath.Join(f.Work, "echo")
	fmt.Fprintln(f.Progress, "building examples/servers/echo")
	return bin, f.Build(ctx, bin, "./examples/servers/echo")
}

// StartEcho starts the echo server bin as name on a free loopback port, with args after its
// own flags, and returns its address.
func (f *Fleet) StartEcho(ctx context.Context, name, bin string, args ...string) (string, *proc.Process, error) {
	addr, err := proc.FreeAddr()
	if err != nil {
		return "", nil, err
	}
	argv := append([]string{bin, "-http", addr, "-log-level", "warn"}, args...)
	p, err := f.Start(ctx, name, argv, "http://"+addr+"/healthz", readyTimeout)
	return addr, p, err
}

// Upstream is an HTTP MCP server the gateway fronts.
type Upstream struct {
	Name string
	URL  string
}

// GatewaySpec is a `gatehouse up` to start.
type GatewaySpec struct {
	// Name tells gateways of one fleet apart (their data dirs, configs and logs);
	// empty: "gatehouse".
	Name string
	// Bin is a prebuilt gateway; empty builds ./cmd/gatehouse into the work directory.
	Bin string
	// Upstreams are the servers it fronts, each approved for the dev principal's tenant.
	Upstreams []Upstream
	// Token is the dev principal's bearer token.
	Token string
	// Args are flags after the fleet's own.
	Args []string
	// Env is more environment (NAME=value).
	Env []string
}

// Gateway is a started `gatehouse up`.
type Gateway struct {
	Addr    string
	Bin     string // the binary it runs
	DataDir string
	Process *proc.Process
}

// StartGateway builds (unless given) and starts the gateway in front of spec's upstreams.
func (f *Fleet) StartGateway(ctx context.Context, spec GatewaySpec) (*Gateway, error) {
	name := spec.Name
	if name == "" {
		name = "gatehouse"
	}
	g := &Gateway{Bin: spec.Bin, DataDir: filepath.Join(f.Work, name+"-data")}
	if g.Bin == "" {
		g.Bin = filepath.Join(f.Work, "gatehouse")
		fmt.Fprintln(f.Progress, "building cmd/gatehouse")
		if err := f.Build(ctx, g.Bin, "./cmd/gatehouse"); err != nil {
			return nil, err
		}
	}
	var config strings.Builder
	config.WriteString("servers:\n")
	for _, u := range spec.Upstreams {
		fmt.Fprintf(&config, "  - name: %s\n    transport: http\n    url: %s\n    tenants: [default]\n", u.Name, u.URL)
	}
	cfgPath := filepath.Join(f.Work, name+".yaml")
	if err := os.WriteFile(cfgPath, []byte(config.String()), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	var err error
	if g.Addr, err = proc.FreeAddr(); err != nil {
		return nil, err
	}
	argv := append([]string{g.Bin, "up", "--config", cfgPath, "--listen", g.Addr, "--data-dir", g.DataDir}, spec.Args...)
	// The dev token is a secret: the environment, not the command line.
	env := append([]string{"GATEHOUSE_DEV_TOKEN=" + spec.Token}, spec.Env...)
	if g.Process, err = f.Start(ctx, name, argv, "http://"+g.Addr+"/healthz", gatehouseReadyTimeout, env...); err != nil {
		return nil, err
	}
	return g, nil
}

// RandomToken returns a fresh bearer token for the gateway's dev principal.
func RandomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return "gb_" + hex.EncodeToString(b), nil
}
