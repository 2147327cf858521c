package policysvc

import (
	"math"
	"sync"
	"time"
)

// maxBuckets bounds the memory the quota holds. Past it, buckets that have refilled
// completely are dropped: a full bucket and a missing one are the same thing.
const maxBuckets = 1 << 16

// quota is one token bucket per tenant: rate tokens a second, up to burst.
type quota struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// newQuota returns nil (unlimited) when rate is not positive. A burst below one becomes
// max(1, ceil(rate)), so that a positive rate always admits something.
func newQuota(rate float64, burst int, now func() time.Time) *quota {
	if rate <= 0 {
		return nil
	}
	b := float64(burst)
	if burst < 1 {
		b = max(1, math.Ceil(rate))
	}
	return &quota{rate: rate, burst: b, now: now, buckets: make(map[string]*bucket)}
}

// take consumes one token of tenant's bucket. When it is empty it returns false and how
// long until a token is available.
func (q *quota) take(tenant string) (bool, time.Duration) {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	b, ok := q.buckets[tenant]
	if !ok {
		if len(q.buckets) >= maxBuckets {
			q.sweep(now)
		}
		b = &bucket{tokens: q.burst, last: now}
		q.buckets[tenant] = b
	}
	q.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / q.rate * float64(time.Second))
	return false, wait
}

func (q *quota) refill(b *bucket, now time.Time) {
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(q.burst, b.tokens+elapsed.Seconds()*q.rate)
		b.last = now
	}
}

// sweep drops the buckets that are full by now. Called with mu held.
func (q *quota) sweep(now time.Time) {
	for k, b := range q.buckets {
		q.refill(b, now)
		if b.tokens >= q.burst {
			delete(q.buckets, k)
		}
	}
}
