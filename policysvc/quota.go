package policysvc

import (
	"crypto/rand"
	"encoding/hex"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Bounds on the memory the quotas hold. Past maxBuckets in one scope, buckets that have
// refilled completely are dropped (a full bucket and a missing one are the same thing); if
// none is full, a key that has no bucket yet is refused rather than grow the map. Past
// maxPermits, expired permits are dropped; if none is, a call that needs a permit is refused.
const (
	maxBuckets = 1 << 16
	maxPermits = 1 << 16
)

// scope is a family of token buckets.
type scope uint8

const (
	scopeTenant scope = iota
	scopePrincipal
	scopeServer
	scopeTool
	scopeAnonymous // instead of tenant and principal, for anonymous hosts: per source address
	nScopes
)

var scopeNames = [nScopes]string{"tenant", "principal", "server", "tool", "anonymous"}

func (sc scope) String() string { return scopeNames[sc] }

// scopeConcurrency names the concurrency limit in a quotaError.
const scopeConcurrency = "concurrency"

// limit is one token bucket's size: rate tokens a second, up to burst. A zero rate is no
// limit.
type limit struct {
	rate  float64
	burst float64
}

// quotas are the token buckets of every scope and the concurrency permits, checked and
// consumed together under one lock: a call passes every bucket that applies to it and takes
// a permit, or it takes nothing at all.
type quotas struct {
	defaults  [nScopes]limit
	overrides [nScopes]map[string]limit
	conc      int            // in-flight calls per (tenant, server); 0 none
	concOver  map[string]int // by "tenant/server"
	permitTTL time.Duration
	now       func() time.Time

	mu      sync.Mutex
	buckets [nScopes]map[string]*bucket
	swept   [nScopes]time.Time // the last sweep of a full scope: at most one a second
	slots   map[string]*slot   // by concurrency key
	permits map[string]*permit
}

// addressKey is the quota key of a host's address: an IPv4 address as it is, an IPv6 one by
// its /64 (one host is handed a whole /64 and could otherwise take a bucket per address).
func addressKey(source string) string {
	ip, err := netip.ParseAddr(source)
	if err != nil || ip.Is4() || ip.Is4In6() {
		return source
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return source
	}
	return p.String()
}

type bucket struct {
	limit  limit
	tokens float64
	last   time.Time
}

// slot holds the permits of one (tenant, server).
type slot struct {
	max  int
	held map[string]time.Time // permit id -> expiry
}

type permit struct {
	slot    string
	tenant  string
	expires time.Time
}

// newQuotas returns nil (nothing limited) when no scope has a rate and there is no
// concurrency limit.
func newQuotas(c *resolvedQuotas, now func() time.Time) *quotas {
	if c == nil || !c.limits() {
		return nil
	}
	q := &quotas{
		defaults: c.defaults, overrides: c.overrides, conc: c.conc, concOver: c.concOver,
		permitTTL: c.permitTTL, now: now,
		slots: make(map[string]*slot), permits: make(map[string]*permit),
	}
	for i := range q.buckets {
		q.buckets[i] = make(map[string]*bucket)
	}
	return q
}

// admission is what one tools/call asks of the quotas.
type admission struct {
	tenant, principal, server, tool string
	anonymous                       bool
	source                          string
}

// want is one bucket a call needs.
type want struct {
	scope scope
	key   string
	limit limit
}

// wants lists the buckets that apply to a: the tenant's and the principal's for a named
// principal, the source address's for an anonymous one (never a tenant's or a named
// principal's), and the server's and the tool's for everyone.
func (q *quotas) wants(a admission) []want {
	keys := make([]want, 0, 4)
	add := func(sc scope, key, override string) {
		l := q.defaults[sc]
		if o, ok := q.overrides[sc][override]; ok {
			l = o
		}
		if l.rate > 0 {
			keys = append(keys, want{sc, key, l})
		}
	}
	if a.anonymous {
		add(scopeAnonymous, a.source, a.source)
	} else {
		add(scopeTenant, a.tenant, a.tenant)
		add(scopePrincipal, a.tenant+"\x00"+a.principal, a.principal)
	}
	add(scopeServer, a.server, a.server)
	if a.tool != "" {
		add(scopeTool, a.server+"/"+a.tool, a.server+"/"+a.tool)
	}
	return keys
}

// concurrency is a's concurrency key and limit (0: none). An anonymous host has a slot of
// its own per source address, with the limit of its tenant and server.
func (q *quotas) concurrency(a admission) (string, int) {
	max := q.conc
	if o, ok := q.concOver[a.tenant+"/"+a.server]; ok {
		max = o
	}
	if max <= 0 {
		return "", 0
	}
	key := a.tenant + "\x00" + a.server
	if a.anonymous {
		key = "\x00anonymous\x00" + a.source + "\x00" + a.server
	}
	return key, max
}

// admit checks every limit that applies to a and, when all pass, consumes one token of each
// bucket and takes a concurrency permit (its id, "" when no concurrency limit applies). When
// any refuses, nothing is consumed, and the error names the limit that refused: among
// several, the one that frees last.
func (q *quotas) admit(a admission) (string, error) {
	ws := q.wants(a)
	ckey, cmax := q.concurrency(a)
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	var refusal *quotaError
	bs := make([]*bucket, len(ws))
	for i, w := range ws {
		b := q.bucket(w, now)
		if b == nil {
			// No room for another key: refused, as if that bucket were empty.
			refusal = worse(refusal, newQuotaError(w, time.Second))
			continue
		}
		bs[i] = b
		if b.tokens < 1 {
			wait := time.Duration((1 - b.tokens) / b.limit.rate * float64(time.Second))
			refusal = worse(refusal, newQuotaError(w, wait))
		}
	}
	if refusal != nil {
		return "", refusal
	}
	var id string
	if cmax > 0 {
		s := q.slots[ckey]
		if s == nil {
			s = &slot{max: cmax, held: make(map[string]time.Time)}
		}
		if len(s.held) >= cmax {
			q.expire(s, now)
		}
		if len(q.permits) >= maxPermits {
			q.expireAll(now)
		}
		if len(s.held) >= cmax || len(q.permits) >= maxPermits {
			// A permit frees when a call concludes: when is unknown, so a second.
			return "", &quotaError{scope: scopeConcurrency, key: a.tenant + "/" + a.server, max: cmax, retryAfter: time.Second}
		}
		id = newPermitID()
		s.held[id] = now.Add(q.permitTTL)
		q.slots[ckey] = s
		q.permits[id] = &permit{slot: ckey, tenant: a.tenant, expires: now.Add(q.permitTTL)}
	}
	for _, b := range bs {
		b.tokens--
	}
	return id, nil
}

// bucket returns w's bucket, refilled to now, making it if need be; nil when its scope holds
// maxBuckets buckets and none of them is full. Called with mu held.
func (q *quotas) bucket(w want, now time.Time) *bucket {
	m := q.buckets[w.scope]
	if b, ok := m[w.key]; ok {
		b.refill(now)
		return b
	}
	if len(m) >= maxBuckets {
		// A full scope is swept at most once a second: keys a host invents (tool names)
		// cannot make every request scan the whole map under the lock.
		if now.Sub(q.swept[w.scope]) < time.Second {
			return nil
		}
		q.swept[w.scope] = now
		for k, b := range m {
			if b.refill(now); b.tokens >= b.limit.burst {
				delete(m, k)
			}
		}
		if len(m) >= maxBuckets {
			return nil
		}
	}
	b := &bucket{limit: w.limit, tokens: w.limit.burst, last: now}
	m[w.key] = b
	return b
}

func (b *bucket) refill(now time.Time) {
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(b.limit.burst, b.tokens+elapsed.Seconds()*b.limit.rate)
		b.last = now
	}
}

// release frees a permit; false when it is unknown (released already, or expired).
// authorize, when not nil, may refuse by the permit's tenant (asked without the lock held);
// the permit is then kept.
func (q *quotas) release(id string, authorize func(tenant string) error) (bool, error) {
	if authorize != nil {
		q.mu.Lock()
		p, ok := q.permits[id]
		q.mu.Unlock()
		if !ok {
			return false, nil
		}
		if err := authorize(p.tenant); err != nil {
			return false, err
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	p, ok := q.permits[id]
	if !ok {
		return false, nil
	}
	q.drop(id, p)
	return true, nil
}

// drop removes a permit. Called with mu held.
func (q *quotas) drop(id string, p *permit) {
	delete(q.permits, id)
	if s := q.slots[p.slot]; s != nil {
		delete(s.held, id)
		if len(s.held) == 0 {
			delete(q.slots, p.slot)
		}
	}
}

// expire drops the expired permits of one slot: a permit whose release was lost (a crashed
// ingress) holds its slot until then, not forever. Called with mu held.
func (q *quotas) expire(s *slot, now time.Time) {
	for id, exp := range s.held {
		if !now.Before(exp) {
			q.drop(id, q.permits[id])
		}
	}
}

// expireAll drops every expired permit. Called with mu held.
func (q *quotas) expireAll(now time.Time) {
	for id, p := range q.permits {
		if !now.Before(p.expires) {
			q.drop(id, p)
		}
	}
}

// inFlight is the number of permits held, for tests.
func (q *quotas) inFlight() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.permits)
}

func newPermitID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newQuotaError(w want, wait time.Duration) *quotaError {
	return &quotaError{scope: w.scope.String(), key: strings.ReplaceAll(w.key, "\x00", "/"), rate: w.limit.rate, burst: int(w.limit.burst), retryAfter: wait}
}

// worse is the refusal that frees last.
func worse(a, b *quotaError) *quotaError {
	if a == nil || b.retryAfter > a.retryAfter {
		return b
	}
	return a
}

// burstOf is a limit's burst: below one it is max(1, ceil(rate)), so that a positive rate
// always admits something.
func burstOf(rate float64, burst int) float64 {
	if burst < 1 {
		return max(1, math.Ceil(rate))
	}
	return float64(burst)
}
