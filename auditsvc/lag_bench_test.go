package auditsvc

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
)

// BenchmarkDeferredLag measures the commit lag of deferred appends: the time from a deferred
// outcome record being queued to its fsync returning, on the hot path's pattern (each call
// appends its decision durably, then its outcome deferred), at 1 and 32 concurrent callers.
// It reports the lag's p50 and p99; ns/op is the time per call.
func BenchmarkDeferredLag(b *testing.B) {
	for _, callers := range []int{1, 32} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			l, err := openLog(filepath.Join(b.TempDir(), FileName), limits{
				maxBatch: 256, maxQueue: 1024, maxQueueBytes: defaultMaxQueueBytes, maxOpenCalls: maxOpenCalls, now: time.Now,
			}, discard)
			if err != nil {
				b.Fatal(err)
			}
			var lags []time.Duration // written by the writer only, read after close
			l.observe = func(p *pending) {
				if p.deferred {
					lags = append(lags, time.Since(p.queued))
				}
			}
			l.start()
			s := &Service{log: l, logger: discard, now: time.Now}
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
						for _, r := range []*auditv1.AppendRequest{
							{Record: callRecord(id, auditv1.Phase_PHASE_DECISION, 0)},
							{Record: callRecord(id, auditv1.Phase_PHASE_OUTCOME, auditv1.Outcome_OUTCOME_ALLOWED), Deferred: true},
						} {
							if _, err := s.Append(context.Background(), connect.NewRequest(r)); err != nil {
								b.Error(err)
								return
							}
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
			p50, p99 := lags[len(lags)/2], lags[len(lags)*99/100]
			b.ReportMetric(float64(p50.Microseconds()), "lag-p50-µs")
			b.ReportMetric(float64(p99.Microseconds()), "lag-p99-µs")
			b.Logf("deferred commit lag over %d calls at %d callers: p50 %v, p99 %v", b.N, callers, p50, p99)
		})
	}
}

var discard = slog.New(slog.DiscardHandler)
