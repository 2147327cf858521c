package ingress

import (
	"math"
	"strconv"
	"sync"
	"time"
)

// maxThrottled bounds the addresses the auth throttle remembers; past it, addresses whose
// bucket has refilled are forgotten first, then any.
const maxThrottled = 10000

// authLogEvery is how often one address's failed authentications are logged at most.
const authLogEvery = time.Minute

// authLimiter throttles failed authentications per source address: a token bucket per
// address that only failures spend (a malformed header spends one too). An empty bucket refuses the address's requests (429)
// before authsvc is asked, so guessing tokens costs the guesser time, not the gateway work.
type authLimiter struct {
	rate  float64 // tokens per second; 0: no throttle
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*authBucket
}

type authBucket struct {
	tokens     float64
	at         time.Time // when tokens was computed
	loggedAt   time.Time
	suppressed int
}

func newAuthLimiter(rate float64, burst int, now func() time.Time) *authLimiter {
	return &authLimiter{rate: rate, burst: float64(burst), now: now, buckets: map[string]*authBucket{}}
}

// refill brings b's tokens up to now; the caller holds mu.
func (l *authLimiter) refill(b *authBucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = math.Min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.at = now
	}
}

// allow reserves one of addr's tokens for an authentication about to be tried, so that
// concurrent failures cannot overdraw the bucket; a success gives it back (refund). When addr
// may not try now, wait is the Retry-After value in whole seconds.
func (l *authLimiter) allow(addr string) (wait string, ok bool) {
	if l.rate <= 0 {
		return "", true
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(addr, now)
	l.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return "", true
	}
	secs := math.Ceil((1 - b.tokens) / l.rate)
	return strconv.Itoa(max(1, int(secs))), false
}

// refund returns the token allow reserved: only failures spend the bucket.
func (l *authLimiter) refund(addr string) {
	if l.rate <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.buckets[addr]; b != nil {
		b.tokens = math.Min(l.burst, b.tokens+1)
	}
}

// fail records a failed authentication of addr (its token stays spent); logNow says whether
// to log it, suppressed how many failures since the last line were not logged.
func (l *authLimiter) fail(addr string) (logNow bool, suppressed int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(addr, now)
	if b.loggedAt.IsZero() || now.Sub(b.loggedAt) >= authLogEvery {
		suppressed, b.suppressed, b.loggedAt = b.suppressed, 0, now
		return true, suppressed
	}
	b.suppressed++
	return false, 0
}

// bucket returns addr's bucket, made full when new; the caller holds mu.
func (l *authLimiter) bucket(addr string, now time.Time) *authBucket {
	b := l.buckets[addr]
	if b == nil {
		l.evict(now)
		b = &authBucket{tokens: l.burst, at: now}
		l.buckets[addr] = b
	}
	return b
}

// evict makes room for one more address; the caller holds mu.
func (l *authLimiter) evict(now time.Time) {
	if len(l.buckets) < maxThrottled {
		return
	}
	for addr, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst && now.Sub(b.loggedAt) >= authLogEvery {
			delete(l.buckets, addr)
		}
	}
	// Still full: forget a sixteenth at random, so that the sweep above runs once per many
	// new addresses, not once per address.
	for addr := range l.buckets {
		if len(l.buckets) < maxThrottled-maxThrottled/16 {
			break
		}
		delete(l.buckets, addr)
	}
}
