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

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/floor"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/proc"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/report"
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

// fleet owns every process the benchmark starts.
type fleet struct {
	cfg      Config
	work     string
	diskDir  string // floor 3's journal goes here
	progress io.Writer
	procs    []*proc.Process
	// gatehouseData is the gateway's data dir once it has started ("" if not).
	gatehouseData string
}

// start builds and starts what the configured paths need, and returns the
// paths in run order. A gateway that cannot be built or started is left out
// with a note; anything else failing is fatal.
func (f *fleet) start(ctx context.Context, rep *report.Report) ([]*path, error) {
	want := func(key string) bool {
		for _, p := range f.cfg.Paths {
			if p == key {
				return true
			}
		}
		return false
	}
	token, err := RandomToken()
	if err != nil {
		return nil, err
	}
	opts := func(size int) caller.Options { return caller.Options{Token: token, ArgsSize: size} }
	var paths []*path

	if want(Floor0) {
		addr, p, err := f.startFloor(ctx, "raw echo", "-role", "echo")
		if err != nil {
			return nil, err
		}
		dialers, err := f.dialers(func(size int) (loadgen.Dialer, error) {
			return caller.RawHTTP("http://"+addr+"/mcp", opts(size))
		})
		if err != nil {
			return nil, err
		}
		paths = append(paths, &path{
			info:     report.Path{Name: "floor 0", Description: "raw loopback HTTP: the client POSTs the bytes of the tools/call, a net/http server echoes them", Upstream: "raw echo"},
			dialers:  dialers,
			upstream: p,
		})
	}
	if !want(Floor1) && !want(Floor2) && !want(Floor3) && !want(Gatehouse) {
		return paths, nil
	}

	echoBin := filepath.Join(f.work, "echo")
	fmt.Fprintln(f.progress, "building examples/servers/echo")
	if err := f.build(ctx, echoBin, "./examples/servers/echo"); err != nil {
		return nil, err
	}
	echoAddr, err := proc.FreeAddr()
	if err != nil {
		return nil, err
	}
	echo, err := f.run(ctx, "echo", []string{echoBin, "-http", echoAddr, "-log-level", "warn"}, "http://"+echoAddr+"/healthz", readyTimeout)
	if err != nil {
		return nil, err
	}
	echoURL := "http://" + echoAddr + "/mcp"

	if want(Floor1) {
		dialers, err := f.dialers(func(size int) (loadgen.Dialer, error) {
			return caller.MCP(echoURL, f.cfg.Protocol, opts(size))
		})
		if err != nil {
			return nil, err
		}
		paths = append(paths, &path{
			info:     report.Path{Name: report.Direct, Description: "the Go SDK client straight to the echo server (Streamable HTTP)", Upstream: "echo"},
			dialers:  dialers,
			upstream: echo,
		})
	}
	if want(Floor2) {
		addr, p, err := f.startFloor(ctx, "reverse proxy", "-role", "proxy", "-target", "http://"+echoAddr)
		if err != nil {
			return nil, err
		}
		dialers, err := f.dialers(func(size int) (loadgen.Dialer, error) {
			return caller.MCP("http://"+addr+"/mcp", f.cfg.Protocol, opts(size))
		})
		if err != nil {
			return nil, err
		}
		paths = append(paths, &path{
			info:     report.Path{Name: report.Proxy, Description: "floor 1 through a bare net/http/httputil.ReverseProxy (FlushInterval -1) in its own process", Hop: "reverse proxy", Upstream: "echo"},
			dialers:  dialers,
			hop:      p,
			upstream: echo,
		})
	}
	if want(Floor3) {
		journal := filepath.Join(f.diskDir, "floor3.journal")
		addr, p, err := f.startFloor(ctx, "durable proxy", "-role", "durable-proxy", "-target", "http://"+echoAddr, "-journal", journal)
		if err != nil {
			return nil, err
		}
		dialers, err := f.dialers(func(size int) (loadgen.Dialer, error) {
			return caller.MCP("http://"+addr+"/mcp", f.cfg.Protocol, opts(size))
		})
		if err != nil {
			return nil, err
		}
		paths = append(paths, &path{
			info:     report.Path{Name: report.Durable, Description: fmt.Sprintf("floor 2, plus one append of a %d-byte record and fdatasync on the audit disk per POST, made before forwarding it (write-ahead)", floor.RecordSize), Hop: "durable proxy", Upstream: "echo"},
			dialers:  dialers,
			hop:      p,
			upstream: echo,
		})
	}
	if want(Gatehouse) {
		addr, p, err := f.startGatehouse(ctx, echoURL, token)
		if err != nil {
			rep.Notes = append(rep.Notes, "gatehouse not measured: "+err.Error())
			fmt.Fprintln(f.progress, "gatehouse not measured:", err)
		} else {
			dialers, err := f.dialers(func(size int) (loadgen.Dialer, error) {
				return caller.MCP("http://"+addr+"/servers/echo/mcp", f.cfg.Protocol, opts(size))
			})
			if err != nil {
				return nil, err
			}
			paths = append(paths, &path{
				info:     report.Path{Name: report.Gateway, Description: "floor 1 through `gatehouse up` (single process: authentication, policy, quota, audit)", Hop: "gatehouse", Upstream: "echo"},
				dialers:  dialers,
				hop:      p,
				upstream: echo,
			})
		}
	}
	return paths, nil
}

// dialers makes one Dialer per workload size.
func (f *fleet) dialers(newDialer func(size int) (loadgen.Dialer, error)) (map[int]loadgen.Dialer, error) {
	out := map[int]loadgen.Dialer{}
	for _, size := range f.cfg.Sizes {
		d, err := newDialer(size)
		if err != nil {
			return nil, err
		}
		out[size] = d
	}
	return out, nil
}

// startFloor runs this program as a floor server and returns its address.
func (f *fleet) startFloor(ctx context.Context, name string, args ...string) (string, *proc.Process, error) {
	addr, err := proc.FreeAddr()
	if err != nil {
		return "", nil, err
	}
	argv := append(append(append([]string{}, f.cfg.FloorCommand...), "-listen", addr), args...)
	p, err := f.run(ctx, name, argv, "http://"+addr+"/healthz", readyTimeout)
	return addr, p, err
}

// startGatehouse builds (unless given) and starts the gateway in front of
// the echo server, and returns its address.
func (f *fleet) startGatehouse(ctx context.Context, echoURL, token string) (string, *proc.Process, error) {
	bin := f.cfg.GatehouseBin
	if bin == "" {
		bin = filepath.Join(f.work, "gatehouse")
		fmt.Fprintln(f.progress, "building cmd/gatehouse")
		if err := f.build(ctx, bin, "./cmd/gatehouse"); err != nil {
			return "", nil, err
		}
	}
	cfgPath := filepath.Join(f.work, "gatehouse.yaml")
	config := fmt.Sprintf("servers:\n  - name: echo\n    transport: http\n    url: %s\n    tenants: [default]\n", echoURL)
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return "", nil, fmt.Errorf("write config: %w", err)
	}
	dataDir := filepath.Join(f.work, "gatehouse-data")
	addr, err := proc.FreeAddr()
	if err != nil {
		return "", nil, err
	}
	argv := append([]string{bin, "up", "--config", cfgPath, "--listen", addr, "--data-dir", dataDir}, f.cfg.GatehouseArgs...)
	// The dev token is a secret: the environment, not the command line.
	p, err := f.run(ctx, "gatehouse", argv, "http://"+addr+"/healthz", gatehouseReadyTimeout, "GATEHOUSE_DEV_TOKEN="+token)
	if err == nil {
		f.gatehouseData = dataDir
	}
	return addr, p, err
}

// run starts a process in the repository root and waits until url answers.
func (f *fleet) run(ctx context.Context, name string, argv []string, url string, timeout time.Duration, env ...string) (*proc.Process, error) {
	logPath := filepath.Join(f.work, strings.ReplaceAll(name, " ", "-")+".log")
	spec := proc.Spec{Name: name, Argv: argv, Dir: f.cfg.Repo, LogPath: logPath}
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
	fmt.Fprintf(f.progress, "%s ready (pid %d)\n", name, p.PID())
	return p, nil
}

// stopAll stops every process, in reverse start order, noting any that had
// died on its own during the benchmark.
func (f *fleet) stopAll(rep *report.Report) {
	for i := len(f.procs) - 1; i >= 0; i-- {
		p := f.procs[i]
		select {
		case <-p.Exited():
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s exited during the benchmark; log tail: %s", p.Name, p.LogTail(500)))
			continue
		default:
		}
		if err := p.Stop(stopGrace); err != nil {
			rep.Notes = append(rep.Notes, err.Error())
		}
	}
	f.procs = nil
}

// build runs `go build -o out pkg` in the repository root.
func (f *fleet) build(ctx context.Context, out, pkg string) error {
	return Build(ctx, f.cfg.Repo, out, pkg)
}

// Build runs `go build -o out pkg` in repo, bounded by buildTimeout.
func Build(ctx context.Context, repo, out, pkg string) error {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = repo
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

// RandomToken returns a fresh bearer token for the gateway's dev principal.
func RandomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return "gb_" + hex.EncodeToString(b), nil
}
