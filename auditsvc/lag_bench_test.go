package auditsvc

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
)

// BenchmarkDeferredLag measures the commit lag of deferred appends: the time from a deferred
// outcome record being queued to its fsync returning, on the hot path's pattern (each call
// appends its decision durably, then its outcome deferred, then a single caller takes hostGap,
// the host's round trip, before its next call), at 1 and 32 concurrent callers, with and without
// the commit delay. It reports the lag's p50 and p99, the durable decision append's p50 (what
// the hot path waits for) and the fsyncs per call.
func BenchmarkDeferredLag(b *testing.B) {
	for _, bc := range []struct {
		callers int
		delay   time.Duration
		hostGap time.Duration // spun, so 32 callers take none: they would starve the writer
	}{{1, 0, hostGap}, {1, defaultCommitDelay, hostGap}, {32, 0, 0}, {32, defaultCommitDelay, 0}} {
		callers := bc.callers
		b.Run(fmt.Sprintf("callers=%d/delay=%v", callers, bc.delay), func(b *testing.B) {
			l, err := openLog(b.TempDir(), limits{
				maxBatch: 256, maxQueue: 1024, maxQueueBytes: defaultMaxQueueBytes, maxOpenCalls: maxOpenCalls,
				commitDelay: bc.delay, now: time.Now,
			}, discard)
			if err != nil {
				b.Fatal(err)
			}
			var lags []time.Duration // written by the writer only, read after close
			decisions := make([]time.Duration, 0, b.N)
			l.observe = func(p *pending) {
				if p.deferred {
					lags = append(lags, time.Since(p.queued))
				}
			}
			l.start()
			s := &Service{store: l, log: l, logger: discard, now: time.Now}
			var next sync.Mutex
			i := 0
			b.ResetTimer()
			var wg sync.WaitGroup
			for range callers {
				wg.Go(func() {
					for {
						next.Lock()
						if i >= b.N {
							next.Unlock()
							return
						}
						i++
						id := fmt.Sprint("call-", i)
						next.Unlock()
						start := time.Now()
						for _, r := range []*auditv1.AppendRequest{
							{Record: callRecord(id, auditv1.Phase_PHASE_DECISION, 0)},
							{Record: callRecord(id, auditv1.Phase_PHASE_OUTCOME, auditv1.Outcome_OUTCOME_ALLOWED), Deferred: true},
						} {
							if _, err := s.Append(context.Background(), connect.NewRequest(r)); err != nil {
								b.Error(err)
								return
							}
							if !r.Deferred {
								took := time.Since(start)
								next.Lock()
								decisions = append(decisions, took)
								next.Unlock()
							}
						}
						// Spin rather than sleep: a short sleep while every goroutine waits
						// can last a millisecond, and the host's next call arrives through
						// the network poller, not a timer.
						for t := time.Now(); time.Since(t) < bc.hostGap; {
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if err := l.close(context.Background()); err != nil {
				b.Fatal(err)
			}
			if len(lags) != b.N {
				b.Fatalf("%d deferred records observed, want %d", len(lags), b.N)
			}
			slices.Sort(lags)
			slices.Sort(decisions)
			b.ReportMetric(float64(decisions[len(decisions)/2].Microseconds()), "decision-p50-µs")
			p50, p99 := lags[len(lags)/2], lags[len(lags)*99/100]
			b.ReportMetric(float64(p50.Microseconds()), "lag-p50-µs")
			b.ReportMetric(float64(p99.Microseconds()), "lag-p99-µs")
			b.ReportMetric(float64(l.commits.Load())/float64(b.N), "fsyncs/call")
			b.Logf("deferred commit lag over %d calls at %d callers, delay %v: p50 %v, p99 %v; decision p50 %v; %.2f fsyncs per call",
				b.N, callers, bc.delay, p50, p99, decisions[len(decisions)/2], float64(l.commits.Load())/float64(b.N))
		})
	}
}

var discard = slog.New(slog.DiscardHandler)

// hostGap stands for the time between a call's answer and the host's next call.
const hostGap = 100 * time.Microsecond
