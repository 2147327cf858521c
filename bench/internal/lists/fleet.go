package lists

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/proc"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/suite"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// serverName is the name of the i-th upstream (0-based) in the gateway's configuration, and
// so the prefix of its tools on the aggregated endpoint.
func serverName(i int) string { return fmt.Sprintf("echo%d", i+1) }

// fleet is the list benchmark's suite.Fleet: three echo servers and the gateway.
type fleet struct {
	*suite.Fleet
	cfg       Config
	upstreams []*proc.Process
	gateway   *suite.Gateway // nil until started
	debugAddr string         // the gateway's profiler ("" unless profiling)
}

// start builds and starts three echo servers and the gateway in front of them, reads each
// server's own list (what every other list is checked against), and returns the paths in
// run order.
func (f *fleet) start(ctx context.Context) ([]*path, error) {
	echoBin, err := f.BuildEcho(ctx)
	if err != nil {
		return nil, err
	}
	token, err := suite.RandomToken()
	if err != nil {
		return nil, err
	}
	opts := caller.Options{Token: token}

	urls := make([]string, Servers)
	own := make([][]string, Servers) // each server's tool names, as it lists them
	for i := range Servers {
		addr, p, err := f.StartEcho(ctx, serverName(i), echoBin, "-extra-tools", fmt.Sprint(f.cfg.ExtraTools))
		if err != nil {
			return nil, err
		}
		f.upstreams = append(f.upstreams, p)
		urls[i] = "http://" + addr + "/mcp"
		if own[i], err = listNames(ctx, urls[i], f.cfg.Protocol); err != nil {
			return nil, fmt.Errorf("%s: %w", serverName(i), err)
		}
		if len(own[i]) < f.cfg.ExtraTools {
			return nil, fmt.Errorf("%s lists %d tools, fewer than its %d synthetic ones: is examples/servers/echo's -extra-tools broken?", serverName(i), len(own[i]), f.cfg.ExtraTools)
		}
	}
	var every, prefixed []string
	for i, names := range own {
		every = append(every, names...)
		for _, n := range names {
			prefixed = append(prefixed, serverName(i)+"__"+n)
		}
	}

	want := func(key string) bool { return slices.Contains(f.cfg.Paths, key) }
	var paths []*path
	add := func(info Path, targets []caller.ListTarget) error {
		rec := &caller.ListRecorder{}
		dial, err := caller.ToolsList(targets, f.cfg.Protocol, opts, rec)
		if err != nil {
			return err
		}
		paths = append(paths, &path{info: info, dial: dial, rec: rec})
		return nil
	}
	if want(Direct) {
		if err := add(Path{Key: Direct, Name: "direct", WantTools: len(own[0]),
			Description: "the Go SDK client straight to one echo server (Streamable HTTP)"},
			[]caller.ListTarget{{Endpoint: urls[0], Want: own[0]}}); err != nil {
			return nil, err
		}
	}
	if want(Direct3) {
		targets := make([]caller.ListTarget, Servers)
		for i := range Servers {
			targets[i] = caller.ListTarget{Endpoint: urls[i], Want: own[i]}
		}
		if err := add(Path{Key: Direct3, Name: "direct ×3", WantTools: len(every),
			Description: "one client session to each of the three echo servers; one list is their three lists fetched one after another (a host without a gateway)"},
			targets); err != nil {
			return nil, err
		}
	}
	if !want(GatewayOne) && !want(GatewayAll) {
		return paths, nil
	}
	addr, err := f.startGatehouse(ctx, urls, token)
	if err != nil {
		return nil, err
	}
	if want(GatewayOne) {
		if err := add(Path{Key: GatewayOne, Name: "gateway, one server", WantTools: len(own[0]),
			Description: fmt.Sprintf("`gatehouse up`, one server's endpoint `/servers/%s/mcp`", serverName(0))},
			[]caller.ListTarget{{Endpoint: "http://" + addr + "/servers/" + serverName(0) + "/mcp", Want: own[0]}}); err != nil {
			return nil, err
		}
	}
	if want(GatewayAll) {
		if err := add(Path{Key: GatewayAll, Name: "gateway, aggregated", WantTools: len(prefixed),
			Description: "`gatehouse up`, the aggregated endpoint `/mcp`: the three servers' lists fetched in parallel, filtered by policy, named `<server>__<tool>` and merged"},
			[]caller.ListTarget{{Endpoint: "http://" + addr + "/mcp", Want: prefixed}}); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// listNames reads every page of a server's tools/list.
func listNames(ctx context.Context, endpoint, protocol string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "gatebench", Version: "v0.1.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint}, &mcp.ClientSessionOptions{ProtocolVersion: protocol})
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", endpoint, err)
	}
	defer cs.Close()
	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			return nil, fmt.Errorf("tools/list: %w", err)
		}
		names = append(names, tool.Name)
	}
	return names, nil
}

// startGatehouse builds (unless given) and starts the gateway in front of the upstreams,
// each approved for the dev principal's tenant, with lists in one page, and returns its
// address.
func (f *fleet) startGatehouse(ctx context.Context, urls []string, token string) (string, error) {
	spec := suite.GatewaySpec{Bin: f.cfg.GatehouseBin, Token: token, Args: []string{"--list-page-size", "0"}}
	for i, u := range urls {
		spec.Upstreams = append(spec.Upstreams, suite.Upstream{Name: serverName(i), URL: u})
	}
	if f.cfg.Profile > 0 {
		var err error
		if f.debugAddr, err = proc.FreeAddr(); err != nil {
			return "", err
		}
		spec.Args = append(spec.Args, "--debug-addr", f.debugAddr)
	}
	spec.Args = append(spec.Args, f.cfg.GatehouseArgs...)
	gw, err := f.StartGateway(ctx, spec)
	if err != nil {
		return "", err
	}
	f.gateway = gw
	return gw.Addr, nil
}

// profile takes a CPU profile of the gateway for d while one session lists the aggregated
// endpoint in a closed loop, and returns the top of `go tool pprof` by cumulative and by
// flat time. The profile file stays in the work directory (see -keep).
func (f *fleet) profile(ctx context.Context, p *path, d time.Duration) (string, error) {
	if f.gateway == nil || f.debugAddr == "" {
		return "", errors.New("the gateway runs without --debug-addr")
	}
	out := filepath.Join(f.Work, "gateway-aggregated.pprof")
	ctx, cancel := context.WithTimeout(ctx, d+f.cfg.RunTimeout)
	defer cancel()
	sess, err := p.dial(ctx)
	if err != nil {
		return "", err
	}
	defer sess.Close()

	fetched := make(chan error, 1)
	go func() {
		fetched <- fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", f.debugAddr, int(d.Seconds())), out)
	}()
	lists := 0
	for {
		select {
		case err := <-fetched:
			if err != nil {
				return "", err
			}
			fmt.Fprintf(f.Progress, "profiled the gateway over %d aggregated lists: %s\n", lists, out)
			return f.pprofTop(ctx, out)
		default:
		}
		if err := sess.Call(ctx); err != nil {
			return "", fmt.Errorf("list while profiling: %w", err)
		}
		lists++
	}
}

// maxProfileBytes bounds the profile read from the gateway.
const maxProfileBytes = 64 << 20

func fetchProfile(ctx context.Context, url, out string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch profile: %s", resp.Status)
	}
	file, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(file, io.LimitReader(resp.Body, maxProfileBytes)); err != nil {
		file.Close()
		return fmt.Errorf("fetch profile: %w", err)
	}
	return file.Close()
}

// pprofTop renders the top of a profile, by cumulative then by flat time.
func (f *fleet) pprofTop(ctx context.Context, profile string) (string, error) {
	var b strings.Builder
	for _, sort := range []string{"-cum", "-flat"} {
		cmd := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", sort, f.gateway.Bin, profile)
		cmd.Dir = f.cfg.Repo
		text, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("go tool pprof: %w", err)
		}
		b.Write(text)
		b.WriteString("\n")
	}
	return b.String(), nil
}
