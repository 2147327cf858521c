// Package loadgen drives a closed loop: a fixed number of sessions, each
// issuing its next call as soon as the previous one returns, until a total
// number of calls is done. Session setup and warm-up calls happen before the
// measured window and are not counted.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Session is one open client connection that can make the workload's call.
// A Session is used by one goroutine at a time.
type Session interface {
	Call(ctx context.Context) error
	Close() error
}

// Dialer opens a Session (for MCP, connect and initialize).
type Dialer func(ctx context.Context) (Session, error)

// Config is one closed-loop run.
type Config struct {
	// Sessions is the number of concurrent sessions (≥ 1).
	Sessions int
	// Calls is the number of measured calls, shared by all sessions (≥ 1).
	Calls int
	// Warmup is the number of calls each session makes before the measured
	// window opens; they are not recorded.
	Warmup int
	// OnStart and OnEnd, when set, run just before the measured window opens
	// and just after it closes (e.g. to sample a process's CPU time).
	OnStart, OnEnd func()
}

// Result is what a run measured.
type Result struct {
	// Latencies of the successful measured calls, in completion order per
	// session, sessions concatenated.
	Latencies []time.Duration
	// Elapsed is the wall time of the measured window.
	Elapsed time.Duration
	// Errors counts failed measured calls; FirstError is the first of them.
	Errors     int
	FirstError error
}

// Throughput is successful calls per second over the measured window.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Elapsed.Seconds()
}

// maxSetupErrors is how many dial or warm-up errors a run tolerates before
// it gives up: a path that cannot open its sessions is broken, not slow.
const maxSetupErrors = 1

// Run opens cfg.Sessions sessions, warms each up, then runs cfg.Calls calls
// in a closed loop and closes the sessions. It fails if a session cannot be
// opened or warmed up, or if ctx ends; failures of measured calls are counted
// in the Result instead.
func Run(ctx context.Context, cfg Config, dial Dialer) (Result, error) {
	if cfg.Sessions < 1 || cfg.Calls < 1 || cfg.Warmup < 0 {
		return Result{}, fmt.Errorf("loadgen: need sessions ≥ 1, calls ≥ 1, warmup ≥ 0 (got %d, %d, %d)", cfg.Sessions, cfg.Calls, cfg.Warmup)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sessions := make([]Session, cfg.Sessions)
	defer func() {
		for _, s := range sessions {
			if s != nil {
				s.Close()
			}
		}
	}()

	// Open and warm up every session concurrently, as hosts would arrive.
	var setup sync.WaitGroup
	setupErrs := make([]error, cfg.Sessions)
	for i := range sessions {
		setup.Go(func() {
			s, err := dial(ctx)
			if err != nil {
				setupErrs[i] = fmt.Errorf("session %d: open: %w", i, err)
				return
			}
			sessions[i] = s
			for w := range cfg.Warmup {
				if err := s.Call(ctx); err != nil {
					setupErrs[i] = fmt.Errorf("session %d: warm-up call %d: %w", i, w, err)
					return
				}
			}
		})
	}
	setup.Wait()
	if err := errors.Join(firstN(setupErrs, maxSetupErrors)...); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}

	// Each session records into its own slice; preallocated so that appending
	// does not allocate inside the window.
	perSession := make([][]time.Duration, cfg.Sessions)
	errCounts := make([]int, cfg.Sessions)
	firstErrs := make([]error, cfg.Sessions)
	var next atomic.Int64
	startGate := make(chan struct{})
	var work sync.WaitGroup
	for i, s := range sessions {
		perSession[i] = make([]time.Duration, 0, cfg.Calls/cfg.Sessions+1)
		work.Go(func() {
			<-startGate
			for next.Add(1) <= int64(cfg.Calls) {
				if ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := s.Call(ctx)
				d := time.Since(t0)
				if err != nil {
					errCounts[i]++
					if firstErrs[i] == nil {
						firstErrs[i] = err
					}
					continue
				}
				perSession[i] = append(perSession[i], d)
			}
		})
	}

	if cfg.OnStart != nil {
		cfg.OnStart()
	}
	start := time.Now()
	close(startGate)
	work.Wait()
	elapsed := time.Since(start)
	if cfg.OnEnd != nil {
		cfg.OnEnd()
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}

	res := Result{Elapsed: elapsed, Latencies: make([]time.Duration, 0, cfg.Calls)}
	for i := range sessions {
		res.Latencies = append(res.Latencies, perSession[i]...)
		res.Errors += errCounts[i]
		if res.FirstError == nil {
			res.FirstError = firstErrs[i]
		}
	}
	return res, nil
}

// firstN returns up to n non-nil errors of errs.
func firstN(errs []error, n int) []error {
	var out []error
	for _, err := range errs {
		if err != nil && len(out) < n {
			out = append(out, err)
		}
	}
	return out
}
