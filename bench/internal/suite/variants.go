package suite

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/proc"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/report"
)

// Path keys of the gateway's variants: what observability costs a call is the difference
// between the default gateway and a variant that turns one part off or on (`gatebench
// observe`).
const (
	// GatehouseNoMetrics is `gatehouse up --no-metrics`: nothing counted, no /metrics.
	GatehouseNoMetrics = "gatehouse-nometrics"
	// GatehouseTraced exports every span over OTLP/HTTP (sampler always_on) to a sink
	// process of the benchmark's, which accepts them all.
	GatehouseTraced = "gatehouse-traced"
)

// gatewayVariant is one way of running `gatehouse up` in front of the echo server.
type gatewayVariant struct {
	key         string // the -paths key
	name        string // the report's path name
	description string
	// setup returns the variant's extra flags and environment, and the processes of its
	// own (an OTLP sink, a database) whose CPU is reported beside the hop's; nil: none.
	setup func(ctx context.Context, f *fleet) (args, env []string, side []*proc.Process, err error)
}

// gatewayVariants are the gateway paths in run order.
var gatewayVariants = []gatewayVariant{
	{key: Gatehouse, name: report.Gateway,
		description: "floor 1 through `gatehouse up` (single process: authentication, policy, quota, audit; metrics on, traces with ids only, the file audit store)"},
	{key: GatehouseNoMetrics, name: "gatehouse, no metrics",
		description: "gatehouse with `--no-metrics`: nothing counted, no /metrics",
		setup: func(context.Context, *fleet) ([]string, []string, []*proc.Process, error) {
			return []string{"--no-metrics"}, nil, nil, nil
		}},
	{key: GatehouseTraced, name: "gatehouse, traced",
		description: "gatehouse exporting every span (OTEL_TRACES_SAMPLER=always_on) over OTLP/HTTP to a sink process that accepts them all; the sink's CPU is the side column",
		setup: func(ctx context.Context, f *fleet) ([]string, []string, []*proc.Process, error) {
			addr, sink, err := f.startFloor(ctx, "otlp sink", "-role", "otlp-sink")
			if err != nil {
				return nil, nil, nil, err
			}
			f.sinks = append(f.sinks, addr)
			env := []string{
				"OTEL_TRACES_EXPORTER=otlp",
				"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
				"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + addr,
				"OTEL_TRACES_SAMPLER=always_on",
			}
			return nil, env, []*proc.Process{sink}, nil
		}},
}

// startGatewayVariant starts v's gateway and returns its path.
func (f *fleet) startGatewayVariant(ctx context.Context, v gatewayVariant, token, echoURL string, echo *proc.Process, opts func(int) caller.Options) (*path, error) {
	var args, env []string
	var side []*proc.Process
	if v.setup != nil {
		var err error
		if args, env, side, err = v.setup(ctx, f); err != nil {
			return nil, err
		}
	}
	gw, err := f.StartGateway(ctx, GatewaySpec{
		Name:      v.key,
		Bin:       f.cfg.GatehouseBin,
		Upstreams: []Upstream{{Name: "echo", URL: echoURL}},
		Token:     token,
		Args:      append(append([]string{}, f.cfg.GatehouseArgs...), args...),
		Env:       env,
	})
	if err != nil {
		return nil, err
	}
	if f.cfg.GatehouseBin == "" {
		f.cfg.GatehouseBin = gw.Bin // built once, for every variant
	}
	if f.gatehouseData == "" {
		f.gatehouseData = gw.DataDir
	}
	dialers, err := f.dialers(func(size int) (loadgen.Dialer, error) {
		return caller.MCP("http://"+gw.Addr+"/servers/echo/mcp", f.cfg.Protocol, opts(size))
	})
	if err != nil {
		return nil, err
	}
	return &path{
		info:     report.Path{Name: v.name, Description: v.description, Hop: "gatehouse", Upstream: "echo", Side: sideName(side)},
		dialers:  dialers,
		hop:      gw.Process,
		upstream: echo,
		side:     side,
	}, nil
}

func sideName(side []*proc.Process) string {
	if len(side) == 0 {
		return ""
	}
	return fmt.Sprintf("%d process(es)", len(side))
}

// sinkStats reads an OTLP sink's counts: export requests and bytes taken.
func sinkStats(ctx context.Context, addr string) (requests, bytes int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stats", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	_, err = fmt.Fscan(io.LimitReader(resp.Body, 64), &requests, &bytes)
	return requests, bytes, err
}
