package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/proc"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/report"
	"github.com/gatehouse-mcp/gatehouse/internal/pgcluster"
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
	// GatehousePostgres keeps the audit log in PostgreSQL (--audit-store postgres): a
	// cluster of the benchmark's own, fsync on, its data on the audit disk's file system.
	GatehousePostgres = "gatehouse-pg"
)

// gatewayVariant is one way of running `gatehouse up` in front of the echo server.
type gatewayVariant struct {
	key         string // the -paths key
	name        string // the report's path name
	description string
	// setup returns the variant's extra flags and environment, and the pids of its own
	// processes (an OTLP sink, a database) whose CPU is reported beside the hop's; nil: none.
	setup func(ctx context.Context, f *fleet) (args, env []string, side []int, err error)
}

// tracedName is the traced variant's path name.
const tracedName = "gatehouse, traced"

// gatewayVariants are the gateway paths in run order.
var gatewayVariants = []gatewayVariant{
	{key: Gatehouse, name: report.Gateway,
		description: "floor 1 through `gatehouse up` (single process: authentication, policy, quota, audit; metrics on, traces with ids only, the file audit store)"},
	{key: GatehouseNoMetrics, name: "gatehouse, no metrics",
		description: "gatehouse with `--no-metrics`: nothing counted, no /metrics",
		setup: func(context.Context, *fleet) ([]string, []string, []int, error) {
			return []string{"--no-metrics"}, nil, nil, nil
		}},
	{key: GatehouseTraced, name: tracedName,
		description: "gatehouse exporting every span (OTEL_TRACES_SAMPLER=always_on) over OTLP/HTTP to a sink process that accepts them all; the sink's CPU is the side column",
		setup: func(ctx context.Context, f *fleet) ([]string, []string, []int, error) {
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
			return nil, env, []int{sink.PID()}, nil
		}},
	{key: GatehousePostgres, name: "gatehouse, postgres audit",
		description: "gatehouse with `--audit-store postgres`: the audit log in a PostgreSQL cluster of the benchmark's (Debian's binaries, fsync on, on the audit disk's file system); the cluster's CPU, its backends' included, is the side column",
		setup:       func(ctx context.Context, f *fleet) ([]string, []string, []int, error) { return f.startPostgres(ctx) }},
}

// startGatewayVariant starts v's gateway and returns its path.
func (f *fleet) startGatewayVariant(ctx context.Context, v gatewayVariant, token, echoURL string, echo *proc.Process, opts func(int) caller.Options) (*path, error) {
	var args, env []string
	var side []int
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

func sideName(side []int) string {
	if len(side) == 0 {
		return ""
	}
	return fmt.Sprintf("%d process(es)", len(side))
}

// sinkStats reads an OTLP sink's counts: export requests, bytes and spans taken.
func sinkStats(ctx context.Context, addr string) (requests, bytes, spans int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stats", nil)
	if err != nil {
		return 0, 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	_, err = fmt.Fscan(io.LimitReader(resp.Body, 128), &requests, &bytes, &spans)
	return requests, bytes, spans, err
}

// startPostgres starts the PostgreSQL cluster of the postgres variant (stopped and removed
// when the fleet closes) and returns the gateway's flags for it.
func (f *fleet) startPostgres(ctx context.Context) ([]string, []string, []int, error) {
	if _, err := pgcluster.Bin(); err != nil {
		return nil, nil, nil, err
	}
	c, err := pgcluster.Init(pgcluster.Options{Fsync: true, Logs: f.logFile("postgres")})
	if err != nil {
		return nil, nil, nil, err
	}
	f.onClose(func() error {
		err := c.Stop(stopGrace)
		return errors.Join(err, c.Remove())
	})
	sctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := c.Start(sctx); err != nil {
		return nil, nil, nil, err
	}
	dsn, err := c.CreateDatabase(sctx)
	if err != nil {
		return nil, nil, nil, err
	}
	// The DSN holds the password: a file only its owner reads, never a flag's value.
	dsnFile := filepath.Join(f.Work, "postgres-dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn+"\n"), 0o600); err != nil {
		return nil, nil, nil, err
	}
	return []string{"--audit-store", "postgres", "--audit-postgres-dsn-file", dsnFile}, nil, []int{c.PID()}, nil
}
