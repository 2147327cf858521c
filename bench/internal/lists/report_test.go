package lists_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/lists"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/report"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/suite"
)

// sample is three repeats of the four paths, with latencies chosen so that every ratio is
// easy to check by hand: per repeat, direct p50 = 1, 2, 4 ms; direct ×3 = 3×; one server
// through the gateway = 2×; aggregated = 6×, 9×, 12× direct (so 2, 3, 4 × direct ×3).
func sample() *lists.Report {
	r := &lists.Report{
		Machine: report.Machine{CPUs: 2, CPUModel: "Test CPU", Kernel: "Linux 6.1", GoVersion: "go1.26.8", Commit: "abc1234", Date: time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)},
		Params:  lists.Params{Command: "gatebench lists", Servers: 3, ExtraTools: 100, Lists: 200, Warmup: 20, Repeats: 3, Protocol: "2025-11-25"},
		Paths: []lists.Path{
			{Key: lists.Direct, Name: "direct", Description: "one server", WantTools: 103},
			{Key: lists.Direct3, Name: "direct ×3", Description: "three servers", WantTools: 309},
			{Key: lists.GatewayOne, Name: "gateway, one server", Description: "one | server", WantTools: 103},
			{Key: lists.GatewayAll, Name: "gateway, aggregated", Description: "all servers", WantTools: 309},
		},
	}
	base := []float64{1000, 2000, 4000}
	factor := map[string][]float64{
		lists.Direct: {1, 1, 1}, lists.Direct3: {3, 3, 3}, lists.GatewayOne: {2, 2, 2}, lists.GatewayAll: {6, 9, 12},
	}
	tools := map[string]int{lists.Direct: 103, lists.Direct3: 309, lists.GatewayOne: 103, lists.GatewayAll: 309}
	for rep := range 3 {
		for _, p := range r.Paths {
			p50 := base[rep] * factor[p.Key][rep]
			gw := time.Duration(-1)
			if p.Key == lists.GatewayOne || p.Key == lists.GatewayAll {
				gw = time.Duration(rep+1) * 200 * time.Millisecond
			}
			r.Runs = append(r.Runs, lists.Result{
				Path: p.Key, Repeat: rep + 1,
				Outcome: report.Outcome{
					Calls: 200, Elapsed: 2 * time.Second,
					Latency: stats.Latency{P50: p50, P90: p50 * 1.5, P99: p50 * 2, Max: p50 * 3},
					HopCPU:  gw, UpstreamCPU: 100 * time.Millisecond, ClientCPU: -1,
				},
				Answer: caller.ListAnswer{Tools: tools[p.Key], Pages: 1, Bytes: int64(tools[p.Key]) * 700},
			})
		}
	}
	return r
}

func TestCell(t *testing.T) {
	t.Parallel()
	r := sample()
	c := r.Cell(lists.GatewayAll)
	if c.Runs != 3 || c.Failed != 0 || c.Errors != 0 {
		t.Fatalf("runs %d failed %d errors %d", c.Runs, c.Failed, c.Errors)
	}
	// p50s of 6, 18 and 48 ms.
	if c.P50.Median != 18000 || c.P50.Min != 6000 || c.P50.Max != 48000 {
		t.Errorf("p50 = %+v", c.P50)
	}
	if c.Throughput.Median != 100 {
		t.Errorf("lists/s = %v, want 100", c.Throughput.Median)
	}
	// 0.2, 0.4 and 0.6 s over 200 lists: 1, 2 and 3 s per 1,000.
	if c.HopCPU.Median != 2 || c.HopCPU.Min != 1 || c.HopCPU.Max != 3 {
		t.Errorf("gateway CPU = %+v", c.HopCPU)
	}
	if c.UpstreamCPU.Median != 0.5 {
		t.Errorf("upstream CPU = %+v, want 0.5 s per 1,000", c.UpstreamCPU)
	}
	if c.ClientCPU.N != 0 {
		t.Errorf("client CPU was not measured but summarises %+v", c.ClientCPU)
	}
	if c.Tools != [2]int64{309, 309} || c.Bytes != [2]int64{309 * 700, 309 * 700} || c.Pages != [2]int64{1, 1} {
		t.Errorf("tools %v bytes %v pages %v", c.Tools, c.Bytes, c.Pages)
	}
	if d := r.Cell(lists.Direct); d.HopCPU.N != 0 {
		t.Errorf("direct has a gateway CPU: %+v", d.HopCPU)
	}
}

func TestRatio(t *testing.T) {
	t.Parallel()
	r := sample()
	tests := []struct {
		num, den       string
		med, min, max  float64
		wantUndetected bool
	}{
		{num: lists.GatewayAll, den: lists.Direct3, med: 3, min: 2, max: 4},
		{num: lists.GatewayAll, den: lists.GatewayOne, med: 4.5, min: 3, max: 6},
		{num: lists.GatewayOne, den: lists.Direct, med: 2, min: 2, max: 2},
	}
	for _, tc := range tests {
		got := r.Ratio(tc.num, tc.den)
		if got.P50.N != 3 || got.P50.Median != tc.med || got.P50.Min != tc.min || got.P50.Max != tc.max {
			t.Errorf("%s ÷ %s p50 = %+v, want %v (%v–%v)", tc.num, tc.den, got.P50, tc.med, tc.min, tc.max)
		}
		// p99 is twice p50 for every path: the same ratios.
		if got.P99.Median != tc.med {
			t.Errorf("%s ÷ %s p99 = %+v", tc.num, tc.den, got.P99)
		}
	}

	// A repeat whose denominator failed is left out, not divided by zero.
	r.Runs[1].Failed = "boom" // repeat 1, direct ×3
	if got := r.Ratio(lists.GatewayAll, lists.Direct3); got.P50.N != 2 || got.P50.Min != 3 {
		t.Errorf("with repeat 1's direct ×3 failed: %+v", got.P50)
	}
	r.Runs[5].Latency.P50 = 0 // repeat 2, direct ×3
	if got := r.Ratio(lists.GatewayAll, lists.Direct3); got.P50.N != 1 || got.P50.Median != 4 {
		t.Errorf("with a zero denominator: %+v (NaN left out)", got.P50)
	}
	if got := r.Ratio(lists.GatewayAll, "nothing"); got.P50.N != 0 || !math.IsNaN(got.P50.Median) {
		t.Errorf("ratio to a path never run = %+v", got.P50)
	}
}

func TestErr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(r *lists.Report)
		wantErr string
	}{
		{name: "every list right", mutate: func(*lists.Report) {}},
		{name: "a wrong list", mutate: func(r *lists.Report) {
			r.Runs[3].Errors = 1
			r.Runs[3].FirstError = `tools/list lacks "echo3__tool_0100"`
		}, wantErr: `gateway, aggregated: 0 of 3 runs failed, 1 lists wrong or failed; first: tools/list lacks "echo3__tool_0100"`},
		{name: "a failed run", mutate: func(r *lists.Report) { r.Runs[0].Failed = "connect refused" }, wantErr: "direct: 1 of 3 runs failed"},
		{name: "a list of the wrong size", mutate: func(r *lists.Report) { r.Runs[7].Answer.Tools = 206 }, wantErr: "gateway, aggregated: lists held 206 to 309 tools, want 309"},
		{name: "a path never run", mutate: func(r *lists.Report) { r.Runs = r.Runs[:3] }, wantErr: "gateway, aggregated: no run"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := sample()
			tc.mutate(r)
			err := r.Err()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Err = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Err = %v, want %q", err, tc.wantErr)
			}
			if md := r.Markdown(); !strings.Contains(md, "## Errors") {
				t.Fatalf("the report does not show the error:\n%s", md)
			}
		})
	}
}

func TestMarkdown(t *testing.T) {
	t.Parallel()
	r := sample()
	r.Profile = "flat  flat%   sum%        cum   cum%\n0.41s 16.80% 16.80%      0.42s 17.21%  encoding/json.stateInString"
	md := r.Markdown()
	for _, want := range []string{
		"- Commit: abc1234",
		"- Machine: 2 CPUs, Test CPU; Linux 6.1",
		"`examples/servers/echo -extra-tools 100`",
		"(direct, direct ×3, gateway, one server, gateway, aggregated, then again) and repeated 3 times",
		"| one \\| server | 103 |", // a | in a description does not break the table
		// direct: p50 1, 2, 4 ms; p99 twice that; 100 lists/s; no gateway CPU; 0.5 s upstream.
		"| direct | 103 | 1 | 72100 | 100 (100–100) | 2.00 (1.00–4.00) | 4.00 (2.00–8.00) | — | 0.500 (0.500–0.500) | — | 0 |",
		"| gateway, aggregated | 309 | 1 | 216300 | 100 (100–100) | 18.00 (6.00–48.00) | 36.00 (12.00–96.00) | 2.000 (1.000–3.000) | 0.500 (0.500–0.500) | — | 0 |",
		"| aggregated ÷ direct ×3: what one list of everything through the gateway costs against the host fetching the three lists itself | 3.00× (2.00–4.00) | 3.00× (2.00–4.00) |",
		"| one server through the gateway ÷ direct: the gateway's cost on one server's list | 2.00× (2.00–2.00) | 2.00× (2.00–2.00) |",
		"encoding/json.stateInString",
		"| 12 | 3 | gateway, aggregated | 200 | 0 | 2.000 | 48.00 | 96.00 | 144.00 | 216300 | 0.60 | 0.10 | — |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, unwanted := range []string{"Quick run", "## Errors", "## Notes"} {
		if strings.Contains(md, unwanted) {
			t.Errorf("report holds %q", unwanted)
		}
	}
	r.Params.Quick = true
	r.Notes = []string{"echo2 exited | early"}
	md = r.Markdown()
	if !strings.Contains(md, "Quick run (smoke test)") || !strings.Contains(md, "- echo2 exited \\| early") {
		t.Errorf("quick banner or note missing:\n%s", md)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	t.Parallel()
	good := lists.Config{Setup: suite.Setup{Repo: t.TempDir(), RunTimeout: time.Minute}, ExtraTools: 100, Lists: 200, Warmup: 20, Repeats: 5}
	tests := []struct {
		name    string
		mutate  func(c *lists.Config)
		wantErr string
	}{
		{name: "not the work tree", mutate: func(*lists.Config) {}, wantErr: "go.work"},
		{name: "no extra tools", mutate: func(c *lists.Config) { c.ExtraTools = 0 }, wantErr: "extra tools 0"},
		{name: "too many extra tools", mutate: func(c *lists.Config) { c.ExtraTools = 10_001 }, wantErr: "extra tools 10001"},
		{name: "no lists", mutate: func(c *lists.Config) { c.Lists = 0 }, wantErr: "lists 0"},
		{name: "negative warmup", mutate: func(c *lists.Config) { c.Warmup = -1 }, wantErr: "warmup -1"},
		{name: "no repeats", mutate: func(c *lists.Config) { c.Repeats = 0 }, wantErr: "repeats 0"},
		{name: "unknown path", mutate: func(c *lists.Config) { c.Paths = []string{"direct", "floor1"} }, wantErr: `path "floor1"`},
		{name: "endless profile", mutate: func(c *lists.Config) { c.Profile = time.Hour }, wantErr: "profile 1h0m0s"},
		{name: "no run timeout", mutate: func(c *lists.Config) { c.RunTimeout = 0 }, wantErr: "run timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tc.mutate(&cfg)
			rep, err := lists.Run(t.Context(), cfg)
			if rep != nil || err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run = %v, %v; want no report and an error containing %q", rep, err, tc.wantErr)
			}
		})
	}
}
