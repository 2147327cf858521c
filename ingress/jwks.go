package ingress

import (
	"context"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
)

// The public keys of the tokens the gateway mints for upstreams (gateway-jwt), published for
// those upstreams to verify them: GET /.well-known/jwks.json, the document authsvc's JWKS
// returns (from its memory: the keys are watched in etcd). Each request asks authsvc, so an
// upstream that meets a new key id and fetches the set again finds a key rotated a moment
// before; concurrent requests share one ask, so a flood of them is at most one RPC in
// flight per ingress replica.

const (
	wellKnownJWKS = "/.well-known/jwks.json"
	// jwksStale is how long the last answer is still served while authsvc cannot be asked.
	jwksStale = 10 * time.Minute
	jwksAsk   = 5 * time.Second
	// jwksMaxAge is what verifiers are told to cache the set for; one that meets an unknown
	// key id should fetch it again regardless (docs/identity.md).
	jwksMaxAge = "300"
)

type jwksCache struct {
	client Auth
	now    func() time.Time
	onFail func(error)

	mu     sync.Mutex
	doc    []byte    // last answer; nil before the first
	at     time.Time // when doc was had
	flight chan struct{}
}

// get returns the set, from an ask of authsvc under way or a new one, or the last answer
// when authsvc cannot answer (up to jwksStale); nil when none can be had.
func (c *jwksCache) get(ctx context.Context) []byte {
	c.mu.Lock()
	if c.flight == nil {
		c.flight = make(chan struct{})
		go c.ask(c.flight)
	}
	f := c.flight
	c.mu.Unlock()
	select {
	case <-f:
	case <-ctx.Done():
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.doc == nil || c.now().Sub(c.at) > jwksStale {
		return nil
	}
	return c.doc
}

// ask runs detached from the requests waiting for it, so that one leaving fails no other.
func (c *jwksCache) ask(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), jwksAsk)
	resp, err := c.client.JWKS(ctx, connect.NewRequest(&authv1.JWKSRequest{}))
	cancel()
	c.mu.Lock()
	if err == nil {
		c.doc, c.at = []byte(resp.Msg.GetJwks()), c.now()
	}
	c.flight = nil
	c.mu.Unlock()
	close(done)
	if err != nil && c.onFail != nil {
		c.onFail(err)
	}
}

// serveJWKS answers GET /.well-known/jwks.json.
func (s *Service) serveJWKS(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*") // public keys
	doc := s.jwks.get(r.Context())
	if doc == nil {
		h.Set("Retry-After", "5")
		http.Error(w, "Service Unavailable: the key set cannot be read", http.StatusServiceUnavailable)
		return
	}
	h.Set("Content-Type", "application/jwk-set+json")
	h.Set("Cache-Control", "public, max-age="+jwksMaxAge)
	_, _ = w.Write(doc)
}
