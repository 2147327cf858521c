package ingress

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
)

// maxCredential bounds the bearer token read from a host.
const maxCredential = 4096

// maxCachedPrincipals bounds the cache; past it the cache starts over.
const maxCachedPrincipals = 10000

type cachedPrincipal struct {
	p       *authv1.Principal
	expires time.Time
}

// Bounds of the memory of revoked tokens.
const (
	// revokedMemory is how long a revoked token id is remembered: longer than any
	// authentication or session creation that could have begun before the revocation.
	revokedMemory = 10 * time.Minute
	// maxRevokedIDs bounds that memory; past it the oldest ids are forgotten first.
	maxRevokedIDs = 100000
)

// authCache remembers authenticated credentials by digest until min(expiry, ttl): the hot
// path calls authsvc once per credential per ttl, not once per request. It never serves a
// revoked API token: the revocation stream (revocation.go) evicts a revoked token's entries
// at once, and while that stream is broken the cache is dropped and only fresh answers are
// cached; once it has been broken for longer than ttl, nothing is cached at all until it is
// back.
type authCache struct {
	client Auth
	ttl    time.Duration
	now    func() time.Time

	mu      sync.Mutex
	entries map[[sha256.Size]byte]cachedPrincipal
	// flights are the authentications under way: concurrent requests with one credential
	// share one authsvc call (and one throttle token) instead of each asking.
	flights map[[sha256.Size]byte]*authFlight
	// gen counts evictions (revocations, drops): an authentication that began before one is
	// answered but not cached, since authsvc may have answered before the revocation.
	gen uint64
	// watching says the revocation stream is live; when it is not, downSince says since
	// when (the start, before the first subscription).
	watching  bool
	downSince time.Time
	// revoked remembers recently revoked token ids (and when), so that an authentication or
	// a session creation that raced the revocation is refused after it.
	revoked map[string]time.Time
}

// authFlight is one authsvc call that several requests wait for; done is closed once p or
// err is set.
type authFlight struct {
	done chan struct{}
	p    *authv1.Principal
	err  error
}

// authFlightTimeout bounds a shared authentication: it runs detached from the request that
// leads it, so that the leader's host leaving does not fail the others.
const authFlightTimeout = 10 * time.Second

func newAuthCache(client Auth, ttl time.Duration, now func() time.Time) *authCache {
	return &authCache{client: client, ttl: ttl, now: now, entries: map[[sha256.Size]byte]cachedPrincipal{}, flights: map[[sha256.Size]byte]*authFlight{},
		downSince: now(), revoked: map[string]time.Time{}}
}

// tokenID is the API token a principal was authenticated by, "" for other credentials.
func tokenID(p *authv1.Principal) string { return p.GetAttributes()["token_id"] }

// errRevokedNow refuses a token revoked while its authentication was under way, as authsvc
// refuses a revoked token.
var errRevokedNow = connect.NewError(connect.CodeUnauthenticated, errors.New("unknown or revoked token"))

// join returns the authentication under way for the credential's key (cacheKey), or starts
// one that the caller leads (lead true): the leader must call land exactly once.
func (c *authCache) join(key [sha256.Size]byte) (f *authFlight, lead bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.flights[key]; f != nil {
		return f, false
	}
	f = &authFlight{done: make(chan struct{})}
	c.flights[key] = f
	return f, true
}

// land ends a flight with its result, for every request waiting on it.
func (c *authCache) land(key [sha256.Size]byte, f *authFlight, p *authv1.Principal, err error) {
	f.p, f.err = p, err
	c.mu.Lock()
	delete(c.flights, key)
	c.mu.Unlock()
	close(f.done)
}

// wait waits for a flight another request leads.
func (f *authFlight) wait(ctx context.Context) (*authv1.Principal, error) {
	select {
	case <-f.done:
		return f.p, f.err
	case <-ctx.Done():
		return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
	}
}

// The kinds of credential a cache key is made of. The kind is part of the key, so no bearer
// token, whatever its text, has the key of a client certificate.
const (
	credBearer      byte = 'b'
	credCertificate byte = 'c'
)

// cacheKey is the cache's key for a credential of a kind (credBearer: the token;
// credCertificate: the leaf's DER) presented to a server.
func cacheKey(kind byte, credential, server string) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte{kind})
	h.Write([]byte(credential))
	h.Write([]byte{0})
	h.Write([]byte(server))
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}

// cached returns the principal of a credential (by its cacheKey) authenticated within the
// cache's ttl.
func (c *authCache) cached(key [sha256.Size]byte) (*authv1.Principal, bool) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[key]
	caching := c.cachingLocked(now)
	c.mu.Unlock()
	if ok && caching && now.Before(e.expires) {
		return e.p, true
	}
	return nil, false
}

// cachingLocked says whether principals may be cached and served from the cache: while the
// revocation stream is live, and for ttl after it broke (what was cached before it broke
// was dropped then). The caller holds c.mu.
func (c *authCache) cachingLocked(now time.Time) bool {
	return c.ttl > 0 && (c.watching || now.Sub(c.downSince) < c.ttl)
}

// authenticate asks authsvc and caches the principal under key (cacheKey of the request's
// credential, or client certificate, and server).
func (c *authCache) authenticate(ctx context.Context, key [sha256.Size]byte, req *authv1.AuthenticateRequest) (*authv1.Principal, error) {
	now := c.now()
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	resp, err := c.client.Authenticate(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	p := resp.Msg.GetPrincipal()
	expires := now.Add(c.ttl)
	if p.GetExpireTime() != nil {
		if t := p.GetExpireTime().AsTime(); t.Before(expires) {
			expires = t
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if id := tokenID(p); id != "" {
		if _, revoked := c.revoked[id]; revoked {
			return nil, errRevokedNow
		}
	}
	if c.gen == gen && c.cachingLocked(c.now()) {
		if len(c.entries) >= maxCachedPrincipals {
			clear(c.entries)
		}
		c.entries[key] = cachedPrincipal{p: p, expires: expires}
	}
	return p, nil
}

// revoke forgets a revoked API token: its cache entries go, and the id is remembered for
// revokedMemory. It returns how many entries were evicted.
func (c *authCache) revoke(id string) int {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if len(c.revoked) >= maxRevokedIDs {
		c.forgetRevokedLocked(now)
	}
	c.revoked[id] = now
	n := 0
	for key, e := range c.entries {
		if tokenID(e.p) == id {
			delete(c.entries, key)
			n++
		}
	}
	return n
}

// forgetRevokedLocked forgets the ids remembered longer than revokedMemory, and when that is
// not enough, those older than the mean age. The caller holds c.mu.
func (c *authCache) forgetRevokedLocked(now time.Time) {
	for id, at := range c.revoked {
		if now.Sub(at) > revokedMemory {
			delete(c.revoked, id)
		}
	}
	if len(c.revoked) < maxRevokedIDs {
		return
	}
	var mean time.Duration
	for _, at := range c.revoked {
		mean += now.Sub(at) / time.Duration(len(c.revoked))
	}
	for id, at := range c.revoked {
		if now.Sub(at) >= mean {
			delete(c.revoked, id)
		}
	}
}

// isRevoked says whether the token was revoked within revokedMemory.
func (c *authCache) isRevoked(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.revoked[id]
	return ok
}

// drop forgets every cached principal.
func (c *authCache) drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
}

// watchUp records that the revocation stream is live (again).
func (c *authCache) watchUp() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watching = true
}

// watchDown records that the revocation stream broke: what the cache holds may include a
// token revoked since, so it is dropped. It reports whether the stream was live until now.
func (c *authCache) watchDown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.watching {
		return false
	}
	c.watching = false
	c.downSince = c.now()
	c.gen++
	clear(c.entries)
	return true
}

// uncached says whether the cache is off: the revocation stream has been down for longer
// than the ttl.
func (c *authCache) uncached() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ttl > 0 && !c.cachingLocked(c.now())
}
