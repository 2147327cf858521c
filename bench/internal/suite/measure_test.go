package suite_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/proc"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/suite"
)

// session fails every third call.
type session struct{ n *atomic.Int64 }

func (s session) Call(context.Context) error {
	if s.n.Add(1)%3 == 0 {
		return errors.New("third")
	}
	return nil
}

func (s session) Close() error { return nil }

func TestMeasure(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	dial := func(context.Context) (loadgen.Session, error) { return session{&n}, nil }
	// A sleeping process stands in for the hop and the upstreams: its CPU time is readable.
	other, err := proc.Start(proc.Spec{Name: "sleep", Argv: []string{"sleep", "30"}, LogPath: t.TempDir() + "/sleep.log"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Stop(time.Second) })

	tests := []struct {
		name                        string
		m                           suite.Measurement
		wantHop, wantUp, wantFailed bool
	}{
		{name: "no processes", m: suite.Measurement{Load: loadgen.Config{Sessions: 2, Calls: 30}, Dial: dial, Timeout: time.Minute}},
		{name: "hop and upstreams", m: suite.Measurement{Load: loadgen.Config{Sessions: 1, Calls: 30}, Dial: dial, Timeout: time.Minute, Hop: other, Upstreams: []*proc.Process{other, other}}, wantHop: true, wantUp: true},
		{name: "a nil upstream is not measured", m: suite.Measurement{Load: loadgen.Config{Sessions: 1, Calls: 30}, Dial: dial, Timeout: time.Minute, Upstreams: []*proc.Process{other, nil}}},
		{name: "a run that cannot be made", m: suite.Measurement{Load: loadgen.Config{Sessions: 0, Calls: 30}, Dial: dial, Timeout: time.Minute, Hop: other}, wantFailed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := suite.Measure(t.Context(), tc.m)
			if tc.wantFailed {
				if !strings.Contains(out.Failed, "sessions") || out.Calls != 0 || out.HopCPU != -1 || out.ClientCPU != -1 {
					t.Fatalf("outcome = %+v, want a failed run with nothing measured", out)
				}
				return
			}
			if out.Failed != "" || out.Calls+out.Errors != 30 || out.Errors == 0 || !strings.Contains(out.FirstError, "third") {
				t.Fatalf("outcome = %+v, want 30 calls of which some failed", out)
			}
			if out.Elapsed <= 0 || !(out.Latency.P50 >= 0) || out.Latency.Max < out.Latency.P50 {
				t.Errorf("elapsed %v, latency %+v", out.Elapsed, out.Latency)
			}
			if out.ClientCPU < 0 {
				t.Errorf("client CPU %v: this process's CPU time is readable", out.ClientCPU)
			}
			if (out.HopCPU >= 0) != tc.wantHop || (out.UpstreamCPU >= 0) != tc.wantUp {
				t.Errorf("hop CPU %v, upstream CPU %v; want measured: %v, %v", out.HopCPU, out.UpstreamCPU, tc.wantHop, tc.wantUp)
			}
		})
	}
}
