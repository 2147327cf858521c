package ingress

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
)

// maxCredential bounds the bearer token read from a host.
const maxCredential = 4096

// maxCachedPrincipals bounds the cache; past it the cache starts over.
const maxCachedPrincipals = 10000

type cachedPrincipal struct {
	p       *authv1.Principal
	expires time.Time
}

// authCache remembers authenticated credentials by digest until min(expiry, ttl): the hot
// path calls authsvc once per credential per ttl, not once per request.
type authCache struct {
	client authv1connect.AuthServiceClient
	ttl    time.Duration
	now    func() time.Time

	mu      sync.Mutex
	entries map[[sha256.Size]byte]cachedPrincipal
	// flights are the authentications under way: concurrent requests with one credential
	// share one authsvc call (and one throttle token) instead of each asking.
	flights map[[sha256.Size]byte]*authFlight
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

func newAuthCache(client authv1connect.AuthServiceClient, ttl time.Duration, now func() time.Time) *authCache {
	return &authCache{client: client, ttl: ttl, now: now, entries: map[[sha256.Size]byte]cachedPrincipal{}, flights: map[[sha256.Size]byte]*authFlight{}}
}

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

func cacheKey(credential, server string) [sha256.Size]byte {
	h := sha256.New()
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
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && c.now().Before(e.expires) {
		return e.p, true
	}
	return nil, false
}

// authenticate asks authsvc and caches the principal under key (cacheKey of the request's
// credential, or client certificate, and server).
func (c *authCache) authenticate(ctx context.Context, key [sha256.Size]byte, req *authv1.AuthenticateRequest) (*authv1.Principal, error) {
	now := c.now()
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
	if c.ttl > 0 {
		c.mu.Lock()
		if len(c.entries) >= maxCachedPrincipals {
			clear(c.entries)
		}
		c.entries[key] = cachedPrincipal{p: p, expires: expires}
		c.mu.Unlock()
	}
	return p, nil
}
