package suite

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/floor"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/proc"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/report"
)

// fleet is the tools/call benchmark's Fleet: the echo server, the floor servers and the
// gateway.
type fleet struct {
	*Fleet
	cfg     Config
	diskDir string // floor 3's journal goes here
	// gatehouseData is the first gateway's data dir once it has started ("" if not).
	gatehouseData string
	// sinks are the OTLP sinks' addresses (the traced variant's), read after the runs.
	sinks []string
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
	if !want(Floor1) && !want(Floor2) && !want(Floor3) && !slices.ContainsFunc(gatewayVariants, func(v gatewayVariant) bool { return want(v.key) }) {
		return paths, nil
	}

	echoBin, err := f.BuildEcho(ctx)
	if err != nil {
		return nil, err
	}
	echoAddr, echo, err := f.StartEcho(ctx, "echo", echoBin)
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
	for _, v := range gatewayVariants {
		if !want(v.key) {
			continue
		}
		p, err := f.startGatewayVariant(ctx, v, token, echoURL, echo, opts)
		if err != nil {
			rep.Notes = append(rep.Notes, v.name+" not measured: "+err.Error())
			fmt.Fprintln(f.Progress, v.name, "not measured:", err)
			continue
		}
		paths = append(paths, p)
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
	p, err := f.Start(ctx, name, argv, "http://"+addr+"/healthz", readyTimeout)
	return addr, p, err
}
