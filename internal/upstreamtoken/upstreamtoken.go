// Package upstreamtoken caches the tokens authsvc mints for upstreams (identity mode
// gateway-jwt), so that the hot path pays an RPC rarely: a token is reused for half its life,
// per principal, tenant, groups, audience and lifetime. Concurrent calls that miss share one
// mint. The bridge uses it with authsvc's Connect client (split mode) or with authsvc itself
// (single-process mode).
package upstreamtoken

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
)

// Minter mints upstream tokens: authv1connect.AuthServiceClient, or authsvc's handler.
type Minter interface {
	MintUpstreamToken(context.Context, *connect.Request[authv1.MintUpstreamTokenRequest]) (*connect.Response[authv1.MintUpstreamTokenResponse], error)
}

// MaxEntries bounds the cache; past it the cache starts over.
const MaxEntries = 10000

// mintTimeout bounds one shared mint: it runs detached from the call that started it, so
// that this call's host leaving does not fail the others waiting.
const mintTimeout = 10 * time.Second

// Cache reuses minted tokens until half their life has passed.
type Cache struct {
	minter Minter
	now    func() time.Time

	mu      sync.Mutex
	entries map[[sha256.Size]byte]entry
	flights map[[sha256.Size]byte]*flight
}

type entry struct {
	token string
	renew time.Time // half-life: from here on the token is minted again
}

type flight struct {
	done  chan struct{}
	token string
	err   error
}

// New returns a cache in front of m; now is the clock (nil: time.Now).
func New(m Minter, now func() time.Time) *Cache {
	if now == nil {
		now = time.Now
	}
	return &Cache{minter: m, now: now, entries: map[[sha256.Size]byte]entry{}, flights: map[[sha256.Size]byte]*flight{}}
}

// Token returns a token for the request: a cached one before its half-life, else a new one.
// Errors are the minter's (*connect.Error), or ctx's.
func (c *Cache) Token(ctx context.Context, r *authv1.MintUpstreamTokenRequest) (string, error) {
	key := cacheKey(r)
	c.mu.Lock()
	if e, ok := c.entries[key]; ok && c.now().Before(e.renew) {
		c.mu.Unlock()
		return e.token, nil
	}
	f, lead := c.flights[key], false
	if f == nil {
		f, lead = &flight{done: make(chan struct{})}, true
		c.flights[key] = f
	}
	c.mu.Unlock()
	if lead {
		go c.mint(key, f, r)
	}
	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (c *Cache) mint(key [sha256.Size]byte, f *flight, r *authv1.MintUpstreamTokenRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), mintTimeout)
	resp, err := c.minter.MintUpstreamToken(ctx, connect.NewRequest(r))
	cancel()
	c.mu.Lock()
	delete(c.flights, key)
	switch {
	case err != nil:
		f.err = err
	case resp.Msg.GetToken() == "" || resp.Msg.GetIssueTime() == nil || resp.Msg.GetExpireTime() == nil:
		f.err = errors.New("upstreamtoken: authsvc minted no token")
	default:
		iat, exp := resp.Msg.GetIssueTime().AsTime(), resp.Msg.GetExpireTime().AsTime()
		f.token = resp.Msg.GetToken()
		if len(c.entries) >= MaxEntries {
			clear(c.entries)
		}
		c.entries[key] = entry{token: f.token, renew: iat.Add(exp.Sub(iat) / 2)}
	}
	c.mu.Unlock()
	close(f.done)
}

// cacheKey digests every field of the request, each length-prefixed, so that no two
// requests share a key.
func cacheKey(r *authv1.MintUpstreamTokenRequest) [sha256.Size]byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(r.GetTtlSeconds()))
	field := func(s string) {
		b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
		b = append(b, s...)
	}
	field(r.GetPrincipalId())
	field(r.GetTenant())
	field(r.GetAudience())
	for _, g := range r.GetGroups() {
		field(g)
	}
	return sha256.Sum256(b)
}
