package loadgen_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
)

// fakeSession counts calls; every failEvery-th call (if > 0) fails.
type fakeSession struct {
	pool      *fakePool
	failEvery int64
	mu        sync.Mutex
	calls     int64
	busy      atomic.Bool
}

func (s *fakeSession) Call(context.Context) error {
	if !s.busy.CompareAndSwap(false, true) {
		s.pool.concurrentUse.Store(true)
	}
	defer s.busy.Store(false)
	s.mu.Lock()
	s.calls++
	n := s.calls
	s.mu.Unlock()
	s.pool.calls.Add(1)
	if s.pool.started.Load() && s.failEvery > 0 && n%s.failEvery == 0 {
		return errors.New("boom")
	}
	return nil
}

func (s *fakeSession) Close() error {
	s.pool.closed.Add(1)
	return nil
}

type fakePool struct {
	calls, opened, closed atomic.Int64
	started               atomic.Bool
	concurrentUse         atomic.Bool
	failEvery             int64
	failDialAt            int64 // the n-th dial (1-based) fails when > 0
}

func (p *fakePool) dial(context.Context) (loadgen.Session, error) {
	n := p.opened.Add(1)
	if p.failDialAt > 0 && n == p.failDialAt {
		p.opened.Add(-1)
		return nil, errors.New("refused")
	}
	return &fakeSession{pool: p, failEvery: p.failEvery}, nil
}

func TestRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		cfg           loadgen.Config
		failEvery     int64
		wantLatencies int
		wantErrors    int
	}{
		{name: "one session", cfg: loadgen.Config{Sessions: 1, Calls: 100, Warmup: 5}, wantLatencies: 100},
		{name: "many sessions", cfg: loadgen.Config{Sessions: 32, Calls: 1000, Warmup: 3}, wantLatencies: 1000},
		{name: "more sessions than calls", cfg: loadgen.Config{Sessions: 8, Calls: 3}, wantLatencies: 3},
		{name: "calls not divisible", cfg: loadgen.Config{Sessions: 7, Calls: 100, Warmup: 1}, wantLatencies: 100},
		{name: "failures counted", cfg: loadgen.Config{Sessions: 1, Calls: 100}, failEvery: 10, wantLatencies: 90, wantErrors: 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool := &fakePool{failEvery: tc.failEvery}
			var starts, ends int
			tc.cfg.OnStart = func() { starts++; pool.started.Store(true) }
			tc.cfg.OnEnd = func() { ends++ }
			res, err := loadgen.Run(t.Context(), tc.cfg, pool.dial)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if len(res.Latencies) != tc.wantLatencies || res.Errors != tc.wantErrors {
				t.Fatalf("got %d latencies, %d errors; want %d, %d", len(res.Latencies), res.Errors, tc.wantLatencies, tc.wantErrors)
			}
			if (res.FirstError != nil) != (tc.wantErrors > 0) {
				t.Fatalf("FirstError = %v with %d errors", res.FirstError, res.Errors)
			}
			wantCalls := int64(tc.cfg.Calls + tc.cfg.Sessions*tc.cfg.Warmup)
			if got := pool.calls.Load(); got != wantCalls {
				t.Fatalf("made %d calls, want %d (measured + warm-up)", got, wantCalls)
			}
			if pool.opened.Load() != int64(tc.cfg.Sessions) || pool.closed.Load() != int64(tc.cfg.Sessions) {
				t.Fatalf("opened %d, closed %d sessions; want %d each", pool.opened.Load(), pool.closed.Load(), tc.cfg.Sessions)
			}
			if starts != 1 || ends != 1 {
				t.Fatalf("OnStart ran %d times, OnEnd %d; want once each", starts, ends)
			}
			if pool.concurrentUse.Load() {
				t.Fatal("a session was used by two goroutines at once")
			}
			for _, d := range res.Latencies {
				if d < 0 {
					t.Fatalf("negative latency %v", d)
				}
			}
			if res.Elapsed < 0 {
				t.Fatalf("negative elapsed %v", res.Elapsed)
			}
		})
	}
}

func TestRunSetupFailure(t *testing.T) {
	t.Parallel()
	pool := &fakePool{failDialAt: 3}
	_, err := loadgen.Run(t.Context(), loadgen.Config{Sessions: 4, Calls: 10}, pool.dial)
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Run = %v, want the dial error", err)
	}
	if pool.closed.Load() != pool.opened.Load() {
		t.Fatalf("opened %d sessions but closed %d", pool.opened.Load(), pool.closed.Load())
	}
}

func TestRunInvalidConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  loadgen.Config
	}{
		{name: "no sessions", cfg: loadgen.Config{Sessions: 0, Calls: 1}},
		{name: "no calls", cfg: loadgen.Config{Sessions: 1, Calls: 0}},
		{name: "negative warmup", cfg: loadgen.Config{Sessions: 1, Calls: 1, Warmup: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool := &fakePool{}
			if _, err := loadgen.Run(t.Context(), tc.cfg, pool.dial); err == nil {
				t.Fatal("Run accepted an invalid config")
			}
		})
	}
}

func TestRunCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	pool := &fakePool{}
	if _, err := loadgen.Run(ctx, loadgen.Config{Sessions: 2, Calls: 10}, pool.dial); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

func TestThroughput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		res  loadgen.Result
		want float64
	}{
		{name: "zero elapsed", res: loadgen.Result{}, want: 0},
		{name: "two calls in one second", res: loadgen.Result{Latencies: make([]time.Duration, 2), Elapsed: time.Second}, want: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.res.Throughput(); got != tc.want {
				t.Fatalf("Throughput = %v, want %v", got, tc.want)
			}
		})
	}
}
