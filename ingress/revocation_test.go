package ingress_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

// follow runs the service's revocation follower for the test and returns its subscription,
// established (its first message taken).
func (g *gateway) follow(t *testing.T) *fakeSub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.svc.FollowRevocations(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	sub := g.auth.nextSub(t, 10*time.Second)
	sub.send(t, &authv1.WatchRevocationsResponse{Revision: 10})
	return sub
}

// revoke makes authsvc refuse the credential and tells the ingress its token id was revoked.
func (g *gateway) revoke(t *testing.T, sub *fakeSub, credential, id, principal string, rev int64) {
	t.Helper()
	g.auth.revoked.Store(credential, true)
	sub.send(t, &authv1.WatchRevocationsResponse{Revision: rev, Revoked: []*authv1.RevokedToken{{TokenId: id, PrincipalId: principal, Tenant: "t1"}}})
}

// ping posts a ping on the session with the token and returns the answer's status.
func (g *gateway) ping(sid, token string) int {
	g.t.Helper()
	return g.do(http.MethodPost, "echo", `{"jsonrpc":"2.0","id":3,"method":"ping"}`,
		map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": rev, "Authorization": "Bearer " + token}).status
}

// TestRevocationEvictsCache: a revoked token is refused at once although its principal is
// cached for a minute; other tokens stay cached.
func TestRevocationEvictsCache(t *testing.T) {
	g := newGateway(t, nil) // the cache ttl is a minute
	sub := g.follow(t)
	sid := g.initialize("echo", tokenDave, rev)
	other := g.initialize("echo", tokenAlice, rev)
	if s := g.ping(sid, tokenDave); s != http.StatusOK {
		t.Fatalf("ping: %d", s)
	}
	calls := g.auth.calls.Load()
	if s := g.ping(sid, tokenDave); s != http.StatusOK || g.auth.calls.Load() != calls {
		t.Fatalf("a cached token: %d, %d authsvc calls, want 200 and none", s, g.auth.calls.Load()-calls)
	}
	g.revoke(t, sub, tokenDave, idDave, "dave", 11)
	r := g.do(http.MethodPost, "echo", `{"jsonrpc":"2.0","id":3,"method":"ping"}`, map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": rev, "Authorization": "Bearer " + tokenDave})
	if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("a revoked token: %d %q, want 401 invalid_token", r.status, r.header.Get("WWW-Authenticate"))
	}
	// Alice's token was not revoked: still served from the cache.
	calls = g.auth.calls.Load()
	if s := g.ping(other, tokenAlice); s != http.StatusOK || g.auth.calls.Load() != calls {
		t.Fatalf("another token after a revocation: %d, %d authsvc calls; want 200 from the cache", s, g.auth.calls.Load()-calls)
	}
	if !strings.Contains(g.logs.String(), "token revoked") || !strings.Contains(g.logs.String(), "cache_entries=1") {
		t.Fatalf("no log of the revocation with its evicted entry:\n%s", g.logs.String())
	}
}

// TestRevocationEndsSessionAndStream: a revocation ends the sessions its token created (in
// the store, at the bridge) and their open GET streams; a session of another token of the
// same principal stays. A new token of the same principal never gets the old session.
func TestRevocationEndsSessionAndStream(t *testing.T) {
	g := newGateway(t, nil)
	sub := g.follow(t)
	sid := g.initialize("echo", tokenDave, rev)
	kept := g.initialize("echo", tokenDave2, rev)
	_, body := openStream(t, g, "echo", sid, tokenDave)
	_, keptBody := openStream(t, g, "echo", kept, tokenDave2)
	// The session answers only to the token that created it.
	if s := g.ping(sid, tokenDave2); s != http.StatusNotFound {
		t.Fatalf("another token of the same principal on the session: %d, want 404", s)
	}

	g.revoke(t, sub, tokenDave, idDave, "dave", 11)
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, body); ended <- err }()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked token's GET stream still open")
	}
	testsync.WaitFor(t, 10*time.Second, "the revoked token's session to end", func() bool { return !g.sessions.has(sid) })
	testsync.WaitFor(t, 10*time.Second, "the bridge to be told", func() bool {
		g.bridge.mu.Lock()
		defer g.bridge.mu.Unlock()
		for _, id := range g.bridge.ended {
			if id == sid {
				return true
			}
		}
		return false
	})
	if s := g.ping(sid, tokenDave2); s != http.StatusNotFound {
		t.Fatalf("the revoked token's session with another token: %d, want 404", s)
	}
	// Dave's other token and its session and stream are untouched.
	if !g.sessions.has(kept) || g.ping(kept, tokenDave2) != http.StatusOK {
		t.Fatal("the session of dave's other token was ended")
	}
	if n := g.svc.StreamStats().Open; n != 1 {
		t.Fatalf("%d streams open, want dave's other one", n)
	}
	g.bridge.push <- []byte(`{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"still here"}}`)
	buf := make([]byte, 512)
	n, err := keptBody.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "still here") {
		t.Fatalf("the other token's stream: %q, %v", buf[:n], err)
	}
}

// TestRevocationRaces: a token revoked while a request with it is under way: authsvc said
// yes before the revocation, or the session was being stored when the revocation looked
// for the token's sessions. Either way the request is refused, nothing is cached and no
// session is left behind.
func TestRevocationRaces(t *testing.T) {
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"` + rev + `","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	t.Run("during the authentication", func(t *testing.T) {
		g := newGateway(t, nil)
		g.auth.hold = make(chan struct{})
		sub := g.follow(t)
		answer := make(chan response, 1)
		go func() {
			// A ping without a session: 400 once authenticated, 401 if not.
			answer <- g.do(http.MethodPost, "echo", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, map[string]string{"Authorization": "Bearer " + tokenCarol})
		}()
		testsync.WaitFor(t, 10*time.Second, "carol's authentication to reach authsvc", func() bool { return g.auth.calls.Load() == 1 })
		sub.send(t, &authv1.WatchRevocationsResponse{Revision: 11, Revoked: []*authv1.RevokedToken{{TokenId: idCarol, PrincipalId: "carol", Tenant: "t1"}}})
		close(g.auth.hold) // authsvc answers with the principal, as it did before the revocation
		if r := <-answer; r.status != http.StatusUnauthorized {
			t.Fatalf("a token revoked mid-authentication: %d, want 401", r.status)
		}
		// Not cached: the next request asks authsvc again.
		g.do(http.MethodPost, "echo", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, map[string]string{"Authorization": "Bearer " + tokenCarol})
		if n := g.auth.calls.Load(); n != 2 {
			t.Fatalf("%d authsvc calls, want 2: a token revoked mid-authentication must not be cached", n)
		}
	})
	t.Run("while the session is stored", func(t *testing.T) {
		g := newGateway(t, nil)
		sub := g.follow(t)
		g.sessions.creating, g.sessions.hold = make(chan struct{}, 1), make(chan struct{})
		answer := make(chan response, 1)
		go func() {
			answer <- g.do(http.MethodPost, "echo", initialize, map[string]string{"Authorization": "Bearer " + tokenDave})
		}()
		select {
		case <-g.sessions.creating:
		case <-time.After(10 * time.Second):
			t.Fatal("the session was never created")
		}
		g.revoke(t, sub, tokenDave, idDave, "dave", 11)
		// The revocation's search for dave's sessions ran before the session was stored.
		testsync.WaitFor(t, 10*time.Second, "the revocation's session search", func() bool { return g.sessions.lists.Load() == 1 })
		close(g.sessions.hold)
		if r := <-answer; r.status != http.StatusUnauthorized || r.header.Get("Mcp-Session-Id") != "" {
			t.Fatalf("initialize with a token revoked meanwhile: %d, session %q; want 401 and none", r.status, r.header.Get("Mcp-Session-Id"))
		}
		if n := g.sessions.count(); n != 0 {
			t.Fatalf("%d sessions left behind", n)
		}
	})
}

// TestRevocationWatchDown: when the stream breaks the cache is dropped and the ingress
// resubscribes, resuming after the last revision it received; while it cannot, answers are
// cached for the ttl at most, and once it has been down longer than the ttl every request
// goes to authsvc; when it is back, caching resumes. Each transition is logged.
func TestRevocationWatchDown(t *testing.T) {
	const ttl = 3 * time.Second
	g := newGateway(t, func(c *ingress.Config) { c.AuthCacheTTL = ttl })
	sub := g.follow(t)
	sid := g.initialize("echo", tokenAlice, rev)
	sub.send(t, &authv1.WatchRevocationsResponse{Revision: 42})
	g.ping(sid, tokenAlice)
	calls := g.auth.calls.Load()
	if g.ping(sid, tokenAlice); g.auth.calls.Load() != calls {
		t.Fatal("not cached while the stream is live")
	}

	g.auth.refuseSubs.Store(true)
	sub.end <- context.DeadlineExceeded // the stream breaks
	testsync.WaitFor(t, 10*time.Second, "the broken stream to be logged", func() bool {
		return strings.Contains(g.logs.String(), "revocation watch broken")
	})
	calls = g.auth.calls.Load()
	if g.ping(sid, tokenAlice); g.auth.calls.Load() != calls+1 {
		t.Fatal("the cache was not dropped when the stream broke")
	}
	// Down for longer than the ttl: every request is authenticated.
	testsync.WaitFor(t, 20*time.Second, "the uncached mode to be logged", func() bool {
		return strings.Contains(g.logs.String(), "authenticating every request")
	})
	calls = g.auth.calls.Load()
	for range 3 {
		if s := g.ping(sid, tokenAlice); s != http.StatusOK {
			t.Fatalf("ping: %d", s)
		}
	}
	if n := g.auth.calls.Load() - calls; n != 3 {
		t.Fatalf("%d authsvc calls for 3 requests while the stream is long down, want 3", n)
	}

	// Back: the new subscription resumes after revision 42, and caching resumes.
	g.auth.refuseSubs.Store(false)
	again := g.auth.nextSub(t, 20*time.Second)
	if again.req.GetAfterRevision() != 42 {
		t.Fatalf("resubscribed after revision %d, want 42", again.req.GetAfterRevision())
	}
	again.send(t, &authv1.WatchRevocationsResponse{Revision: 42})
	if !strings.Contains(g.logs.String(), "revocation watch restored") {
		t.Fatalf("the restored stream is not logged:\n%s", g.logs.String())
	}
	g.ping(sid, tokenAlice)
	calls = g.auth.calls.Load()
	if g.ping(sid, tokenAlice); g.auth.calls.Load() != calls {
		t.Fatal("not cached again once the stream is back")
	}
}

// TestRevocationWatchSilent: a stream that stops sending (not even heartbeats) is taken for
// broken after three heartbeats: the cache is dropped and the ingress subscribes again.
func TestRevocationWatchSilent(t *testing.T) {
	g := newGateway(t, func(c *ingress.Config) { c.RevocationHeartbeat = time.Second })
	sub := g.follow(t)
	if sub.req.GetHeartbeatSeconds() != 1 {
		t.Fatalf("heartbeat_seconds %d, want 1", sub.req.GetHeartbeatSeconds())
	}
	sid := g.initialize("echo", tokenAlice, rev)
	g.ping(sid, tokenAlice)
	again := g.auth.nextSub(t, 20*time.Second) // nothing sent on sub since
	if again.req.GetAfterRevision() != 10 {
		t.Fatalf("resubscribed after revision %d, want 10", again.req.GetAfterRevision())
	}
	if !strings.Contains(g.logs.String(), "no message for three heartbeats") {
		t.Fatalf("the silent stream is not logged:\n%s", g.logs.String())
	}
	calls := g.auth.calls.Load()
	if g.ping(sid, tokenAlice); g.auth.calls.Load() != calls+1 {
		t.Fatal("the cache was not dropped when the stream went silent")
	}
}

// TestRevocationHistoryLost: when authsvc cannot replay what was missed, the cache is dropped
// and every GET stream of an API token's session ends; other streams stay.
func TestRevocationHistoryLost(t *testing.T) {
	g := newGateway(t, nil)
	sub := g.follow(t)
	sid := g.initialize("echo", tokenDave, rev)
	_, body := openStream(t, g, "echo", sid, tokenDave)
	// alice's principal carries no token id (as for OpenID Connect): her stream stays.
	openStream(t, g, "echo", g.initialize("echo", tokenAlice, rev), tokenAlice)
	calls := g.auth.calls.Load()
	sub.send(t, &authv1.WatchRevocationsResponse{Revision: 50, HistoryLost: true})
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, body); ended <- err }()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("an API token's stream outlived a lost history")
	}
	testsync.WaitFor(t, 10*time.Second, "one stream left", func() bool { return g.svc.StreamStats().Open == 1 })
	if g.ping(sid, tokenDave); g.auth.calls.Load() == calls {
		t.Fatal("the cache was not dropped")
	}
}

func TestRevocationHeartbeatConfig(t *testing.T) {
	for _, h := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 61 * time.Second} {
		_, err := ingress.New(ingress.Config{AllowedHosts: "localhost", MaxBodyBytes: 1, RevocationHeartbeat: h},
			ingress.Deps{Auth: newFakeAuth(), Policy: fakePolicy{}, Bridge: newFakeBridge(), Audit: newFakeAudit(), Catalog: fakeCatalog{}, Sessions: &fakeSessions{}}, nil)
		if err == nil || !strings.Contains(err.Error(), "revocation heartbeat") {
			t.Errorf("heartbeat %s: %v, want an error", h, err)
		}
	}
}
