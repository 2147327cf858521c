package authsvc_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/authsvc"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/internal/upstreamtoken"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// upstreamClaims are what an upstream reads from a gateway-jwt token.
type upstreamClaims struct {
	jwt.Claims
	Tenant string   `json:"tenant"`
	Groups []string `json:"groups"`
}

func (f *fixture) mint(t *testing.T, req *authv1.MintUpstreamTokenRequest) *authv1.MintUpstreamTokenResponse {
	t.Helper()
	resp, err := f.svc.MintUpstreamToken(testContext(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("MintUpstreamToken: %v", err)
	}
	return resp.Msg
}

func jwks(t *testing.T, svc *authsvc.Service) jose.JSONWebKeySet {
	t.Helper()
	resp, err := svc.JWKS(testContext(t), connect.NewRequest(&authv1.JWKSRequest{}))
	if err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(resp.Msg.GetJwks()), &set); err != nil {
		t.Fatalf("JWKS %q: %v", resp.Msg.GetJwks(), err)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() || k.Algorithm != "ES256" || k.Use != "sig" || k.KeyID == "" {
			t.Fatalf("JWKS key %+v: want a public ES256 signing key with a kid", k)
		}
	}
	return set
}

func kids(set jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

// verify checks a token as an upstream would: its kid in the JWKS, ES256 only, the signature,
// then the claims at the given time.
func verify(t *testing.T, token string, set jose.JSONWebKeySet, now time.Time, audience string) (upstreamClaims, string) {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parse %q: %v", token, err)
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "JWT" {
		t.Fatalf("typ %q, want JWT", typ)
	}
	keys := set.Key(h.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q is not in the JWKS %v", h.KeyID, kids(set))
	}
	var c upstreamClaims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{audience}, Time: now}, 0); err != nil {
		t.Fatalf("claims %+v: %v", c, err)
	}
	return c, h.KeyID
}

func TestMintUpstreamToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	if set := jwks(t, f.svc); len(set.Keys) != 0 {
		t.Fatalf("JWKS before the first token: %v, want no key", kids(set))
	}
	req := &authv1.MintUpstreamTokenRequest{PrincipalId: "alice@example.com", Tenant: "acme", Groups: []string{"ops", "dev"}, Audience: "https://search.internal/mcp"}
	resp := f.mint(t, req)
	now := f.clock.Now()
	if !resp.GetIssueTime().AsTime().Equal(now) || !resp.GetExpireTime().AsTime().Equal(now.Add(authsvc.DefaultUpstreamTokenTTL)) {
		t.Fatalf("issued %v, expires %v; want now and %v later", resp.GetIssueTime().AsTime(), resp.GetExpireTime().AsTime(), authsvc.DefaultUpstreamTokenTTL)
	}
	set := jwks(t, f.svc)
	c, kid := verify(t, resp.GetToken(), set, now, req.Audience)
	if kid != resp.GetKeyId() || len(set.Keys) != 1 {
		t.Fatalf("signed by %q, response says %q, JWKS %v", kid, resp.GetKeyId(), kids(set))
	}
	if c.Issuer != authsvc.DefaultUpstreamTokenIssuer || c.Subject != "alice@example.com" || c.Tenant != "acme" ||
		!slices.Equal(c.Groups, []string{"ops", "dev"}) || c.ID == "" || len(c.Audience) != 1 ||
		!c.IssuedAt.Time().Equal(now) || !c.Expiry.Time().Equal(now.Add(authsvc.DefaultUpstreamTokenTTL)) {
		t.Fatalf("claims %+v", c)
	}
	// Past its expiry an upstream refuses it.
	tok, _ := jwt.ParseSigned(resp.GetToken(), []jose.SignatureAlgorithm{jose.ES256})
	var std jwt.Claims
	_ = tok.Claims(set.Keys[0].Key, &std)
	if err := std.ValidateWithLeeway(jwt.Expected{Time: now.Add(authsvc.DefaultUpstreamTokenTTL + time.Second)}, 0); err == nil {
		t.Fatal("the token is valid past its expiry")
	}

	// Each token is its own (jti); the lifetime is the caller's within bounds.
	again := f.mint(t, &authv1.MintUpstreamTokenRequest{PrincipalId: "bob", Tenant: "acme", Audience: "urn:x", TtlSeconds: 60})
	c2, kid2 := verify(t, again.GetToken(), set, now, "urn:x")
	if c2.ID == c.ID || kid2 != kid || !c2.Expiry.Time().Equal(now.Add(time.Minute)) || c2.Groups != nil {
		t.Fatalf("second token %+v (kid %s)", c2, kid2)
	}
}

func TestMintUpstreamTokenIssuer(t *testing.T) {
	t.Parallel()
	identity := filepath.Join(t.TempDir(), "identity.yaml")
	if err := os.WriteFile(identity, []byte("resource: https://gateway.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cfg  authsvc.Config
		want string
	}{
		{"the identity file's resource", authsvc.Config{IdentityConfig: identity}, "https://gateway.example"},
		{"configured", authsvc.Config{IdentityConfig: identity, UpstreamTokenIssuer: "https://gatehouse.example/upstream"}, "https://gatehouse.example/upstream"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.cfg)
			resp := f.mint(t, &authv1.MintUpstreamTokenRequest{PrincipalId: "p", Tenant: "t", Audience: "urn:a"})
			if c, _ := verify(t, resp.GetToken(), jwks(t, f.svc), f.clock.Now(), "urn:a"); c.Issuer != tt.want {
				t.Fatalf("iss %q, want %q", c.Issuer, tt.want)
			}
		})
	}
	if _, err := authsvc.New(authsvc.Config{UpstreamTokenIssuer: "not an issuer"}, shared.Client, nil); err == nil {
		t.Fatal("an issuer with a space was accepted")
	}
}

func TestMintUpstreamTokenRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	ok := func(edit func(*authv1.MintUpstreamTokenRequest)) *authv1.MintUpstreamTokenRequest {
		r := &authv1.MintUpstreamTokenRequest{PrincipalId: "p", Tenant: "t", Audience: "urn:a"}
		edit(r)
		return r
	}
	many := make([]string, 65)
	for i := range many {
		many[i] = "g"
	}
	for _, tt := range []struct {
		name string
		req  *authv1.MintUpstreamTokenRequest
		msg  string
	}{
		{"no principal", ok(func(r *authv1.MintUpstreamTokenRequest) { r.PrincipalId = "" }), "principal_id"},
		{"principal with a space", ok(func(r *authv1.MintUpstreamTokenRequest) { r.PrincipalId = "a b" }), "principal_id"},
		{"no tenant", ok(func(r *authv1.MintUpstreamTokenRequest) { r.Tenant = "" }), "tenant"},
		{"no audience", ok(func(r *authv1.MintUpstreamTokenRequest) { r.Audience = "" }), "audience"},
		{"audience with a newline", ok(func(r *authv1.MintUpstreamTokenRequest) { r.Audience = "a\nb" }), "audience"},
		{"audience too long", ok(func(r *authv1.MintUpstreamTokenRequest) { r.Audience = strings.Repeat("a", 2049) }), "audience"},
		{"ttl too short", ok(func(r *authv1.MintUpstreamTokenRequest) { r.TtlSeconds = 29 }), "ttl_seconds"},
		{"ttl too long", ok(func(r *authv1.MintUpstreamTokenRequest) { r.TtlSeconds = 901 }), "ttl_seconds"},
		{"ttl negative", ok(func(r *authv1.MintUpstreamTokenRequest) { r.TtlSeconds = -1 }), "ttl_seconds"},
		{"too many groups", ok(func(r *authv1.MintUpstreamTokenRequest) { r.Groups = many }), "groups"},
		{"bad group", ok(func(r *authv1.MintUpstreamTokenRequest) { r.Groups = []string{"ok", "not ok"} }), "groups[1]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := f.svc.MintUpstreamToken(testContext(t), connect.NewRequest(tt.req))
			wantCode(t, err, connect.CodeInvalidArgument, tt.msg)
		})
	}
	// Nothing was minted, so no key was made.
	if set := jwks(t, f.svc); len(set.Keys) != 0 {
		t.Fatalf("JWKS %v after refused mints, want none", kids(set))
	}
}

func TestRotateSigningKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	old := f.mint(t, &authv1.MintUpstreamTokenRequest{PrincipalId: "p", Tenant: "t", Audience: "urn:a", TtlSeconds: 900})
	rot, err := f.svc.RotateSigningKey(testContext(t), connect.NewRequest(&authv1.RotateSigningKeyRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if rot.Msg.GetKeyId() == old.GetKeyId() || !slices.Equal(rot.Msg.GetPublishedKeyIds(), []string{old.GetKeyId()}) {
		t.Fatalf("rotation %v; the old key was %s", rot.Msg, old.GetKeyId())
	}
	set := jwks(t, f.svc)
	if got := kids(set); !slices.Equal(got, []string{old.GetKeyId(), rot.Msg.GetKeyId()}) {
		t.Fatalf("JWKS %v, want the old and the new key", got)
	}
	fresh := f.mint(t, &authv1.MintUpstreamTokenRequest{PrincipalId: "p", Tenant: "t", Audience: "urn:a"})
	if _, kid := verify(t, fresh.GetToken(), set, f.clock.Now(), "urn:a"); kid != rot.Msg.GetKeyId() {
		t.Fatalf("minted with %s after the rotation, want %s", kid, rot.Msg.GetKeyId())
	}
	// A token of the old key still verifies until it expires.
	f.clock.Advance(14 * time.Minute)
	verify(t, old.GetToken(), jwks(t, f.svc), f.clock.Now(), "urn:a")
	// Once no token of the old key can be valid, it is no longer published, and the next
	// rotation drops it.
	f.clock.Advance(3 * time.Minute)
	if got := kids(jwks(t, f.svc)); !slices.Equal(got, []string{rot.Msg.GetKeyId()}) {
		t.Fatalf("JWKS %v 17 minutes after the rotation, want only the new key", got)
	}
	rot2, err := f.svc.RotateSigningKey(testContext(t), connect.NewRequest(&authv1.RotateSigningKeyRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rot2.Msg.GetPublishedKeyIds(), []string{rot.Msg.GetKeyId()}) {
		t.Fatalf("second rotation publishes %v, want only %s", rot2.Msg.GetPublishedKeyIds(), rot.Msg.GetKeyId())
	}
}

// TestRotateSigningKeyBounded: rotations faster than tokens expire would publish ever more
// keys; past the bound they are refused until the oldest key's tokens have expired.
func TestRotateSigningKeyBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	rotate := func() error {
		_, err := f.svc.RotateSigningKey(testContext(t), connect.NewRequest(&authv1.RotateSigningKeyRequest{}))
		return err
	}
	for i := range 16 {
		if err := rotate(); err != nil {
			t.Fatalf("rotation %d: %v", i+1, err)
		}
	}
	wantCode(t, rotate(), connect.CodeFailedPrecondition, "too many signing keys")
	if n := len(jwks(t, f.svc).Keys); n != 16 {
		t.Fatalf("%d keys published, want 16", n)
	}
	f.clock.Advance(17 * time.Minute)
	if err := rotate(); err != nil {
		t.Fatalf("a rotation once the old keys' tokens expired: %v", err)
	}
	if n := len(jwks(t, f.svc).Keys); n != 2 {
		t.Fatalf("%d keys published, want the last two", n)
	}
}

// TestSigningKeysShared: replicas on one etcd agree on the first key when they create it at
// once, and each picks up another's rotation through its watch, with no restart.
func TestSigningKeysShared(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	other, err := authsvc.New(authsvc.Config{KeyPrefix: f.prefix, Clock: f.clock.Now}, shared.Client, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	replicas := []*authsvc.Service{f.svc, other}

	var wg sync.WaitGroup
	kidsSeen := make([]string, 40)
	for i := range kidsSeen {
		wg.Go(func() {
			resp, err := replicas[i%2].MintUpstreamToken(testContext(t), connect.NewRequest(&authv1.MintUpstreamTokenRequest{PrincipalId: "p", Tenant: "t", Audience: "urn:a"}))
			if err != nil {
				t.Errorf("mint %d: %v", i, err)
				return
			}
			kidsSeen[i] = resp.Msg.GetKeyId()
		})
	}
	wg.Wait()
	if distinct := slices.Compact(slices.Sorted(slices.Values(kidsSeen))); len(distinct) != 1 {
		t.Fatalf("concurrent first mints on two replicas signed with %v, want one key", distinct)
	}

	rot, err := f.svc.RotateSigningKey(testContext(t), connect.NewRequest(&authv1.RotateSigningKeyRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 10*time.Second, "the other replica to publish the rotated key", func() bool {
		return slices.Contains(kids(jwks(t, other)), rot.Msg.GetKeyId())
	})
	resp, err := other.MintUpstreamToken(testContext(t), connect.NewRequest(&authv1.MintUpstreamTokenRequest{PrincipalId: "p", Tenant: "t", Audience: "urn:a"}))
	if err != nil || resp.Msg.GetKeyId() != rot.Msg.GetKeyId() {
		t.Fatalf("the other replica minted with %v (%v), want the rotated key %s", resp, err, rot.Msg.GetKeyId())
	}
	if !slices.Equal(kids(jwks(t, other)), kids(jwks(t, f.svc))) {
		t.Fatalf("replicas publish %v and %v", kids(jwks(t, f.svc)), kids(jwks(t, other)))
	}

	// Rotations on both replicas at once: each one lands (a lost race is retried), none is lost.
	before := len(jwks(t, f.svc).Keys)
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = replicas[i%2].RotateSigningKey(testContext(t), connect.NewRequest(&authv1.RotateSigningKeyRequest{}))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent rotation %d: %v", i, err)
		}
	}
	for i, svc := range replicas {
		testsync.WaitFor(t, 10*time.Second, "every rotation to be published", func() bool {
			return len(jwks(t, svc).Keys) == before+len(errs)
		})
		if n := len(jwks(t, svc).Keys); n != before+len(errs) {
			t.Fatalf("replica %d: %d keys after %d concurrent rotations of %d, want %d", i, n, len(errs), before, before+len(errs))
		}
	}
}

// countingMinter counts the mints that reach authsvc.
type countingMinter struct {
	svc   *authsvc.Service
	calls atomic.Int64
}

func (m *countingMinter) MintUpstreamToken(ctx context.Context, req *connect.Request[authv1.MintUpstreamTokenRequest]) (*connect.Response[authv1.MintUpstreamTokenResponse], error) {
	m.calls.Add(1)
	return m.svc.MintUpstreamToken(ctx, req)
}

// TestUpstreamTokenCache: the bridge's cache in front of the real service reuses a token for
// half its life, shares one mint among concurrent misses, and keys by every field.
func TestUpstreamTokenCache(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	m := &countingMinter{svc: f.svc}
	cache := upstreamtoken.New(m, f.clock.Now)
	req := &authv1.MintUpstreamTokenRequest{PrincipalId: "p", Tenant: "t", Groups: []string{"g"}, Audience: "urn:a", TtlSeconds: 120}

	tokens := make([]string, 50)
	var wg sync.WaitGroup
	for i := range tokens {
		wg.Go(func() {
			tok, err := cache.Token(testContext(t), req)
			if err != nil {
				t.Errorf("Token: %v", err)
			}
			tokens[i] = tok
		})
	}
	wg.Wait()
	if n := m.calls.Load(); n != 1 {
		t.Fatalf("50 concurrent calls minted %d times, want 1", n)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(tokens)))) != 1 || tokens[0] == "" {
		t.Fatal("concurrent calls got different tokens")
	}

	// Until half its life the token is reused, from then on a new one is minted.
	f.clock.Advance(59 * time.Second)
	if tok, _ := cache.Token(testContext(t), req); tok != tokens[0] || m.calls.Load() != 1 {
		t.Fatalf("before half-life: a new token (%d mints)", m.calls.Load())
	}
	f.clock.Advance(time.Second)
	renewed, err := cache.Token(testContext(t), req)
	if err != nil || renewed == tokens[0] || m.calls.Load() != 2 {
		t.Fatalf("at half-life: %v, %d mints; want a new token", err, m.calls.Load())
	}

	// Every field is part of the key.
	for i, edit := range []func(*authv1.MintUpstreamTokenRequest){
		func(r *authv1.MintUpstreamTokenRequest) { r.PrincipalId = "q" },
		func(r *authv1.MintUpstreamTokenRequest) { r.Tenant = "u" },
		func(r *authv1.MintUpstreamTokenRequest) { r.Groups = []string{"g", "h"} },
		func(r *authv1.MintUpstreamTokenRequest) { r.Groups = nil },
		func(r *authv1.MintUpstreamTokenRequest) { r.Audience = "urn:b" },
		func(r *authv1.MintUpstreamTokenRequest) { r.TtlSeconds = 0 },
	} {
		r := &authv1.MintUpstreamTokenRequest{PrincipalId: req.PrincipalId, Tenant: req.Tenant, Groups: req.Groups, Audience: req.Audience, TtlSeconds: req.TtlSeconds}
		edit(r)
		tok, err := cache.Token(testContext(t), r)
		if err != nil {
			t.Fatal(err)
		}
		if tok == renewed || m.calls.Load() != int64(3+i) {
			t.Fatalf("variant %d shared the cached token (%d mints)", i, m.calls.Load())
		}
		if c, _ := verify(t, tok, jwks(t, f.svc), f.clock.Now(), r.Audience); c.Subject != r.PrincipalId || c.Tenant != r.Tenant {
			t.Fatalf("variant %d: claims %+v", i, c)
		}
	}

	// A refusal is not cached, and reaches the caller with its code.
	bad := &authv1.MintUpstreamTokenRequest{PrincipalId: "p", Tenant: "t", Audience: ""}
	for range 2 {
		_, err := cache.Token(testContext(t), bad)
		wantCode(t, err, connect.CodeInvalidArgument, "audience")
	}
}

// TestSigningKeysWatchBroken: a replica whose watch breaks (a network failure, an etcd
// restart) still learns of a rotation made meanwhile, once it can watch again.
func TestSigningKeysWatchBroken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	kv := etcdtest.NewWatchBreaker(shared.Client)
	other, err := authsvc.New(authsvc.Config{KeyPrefix: f.prefix, Clock: f.clock.Now}, kv, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	first, err := other.MintUpstreamToken(testContext(t), connect.NewRequest(&authv1.MintUpstreamTokenRequest{PrincipalId: "p", Tenant: "t", Audience: "urn:a"}))
	if err != nil {
		t.Fatal(err)
	}
	release := kv.BreakAndHold()
	rot, err := f.svc.RotateSigningKey(testContext(t), connect.NewRequest(&authv1.RotateSigningKeyRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if rot.Msg.GetPublishedKeyIds()[0] != first.Msg.GetKeyId() {
		t.Fatalf("rotation %v: the replicas disagreed on the first key %s", rot.Msg, first.Msg.GetKeyId())
	}
	release()
	testsync.WaitFor(t, 10*time.Second, "the replica to learn of the rotation after its watch broke", func() bool {
		resp, err := other.MintUpstreamToken(testContext(t), connect.NewRequest(&authv1.MintUpstreamTokenRequest{PrincipalId: "p", Tenant: "t", Audience: "urn:a"}))
		return err == nil && resp.Msg.GetKeyId() == rot.Msg.GetKeyId()
	})
}

// TestSigningKeysFirstKeyWatched: a replica that has read the keys before any existed (a JWKS
// request) learns of the first key another replica creates, with no request to etcd of its
// own.
func TestSigningKeysFirstKeyWatched(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	other, err := authsvc.New(authsvc.Config{KeyPrefix: f.prefix, Clock: f.clock.Now}, shared.Client, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	if set := jwks(t, other); len(set.Keys) != 0 {
		t.Fatalf("JWKS %v before any key", kids(set))
	}
	resp := f.mint(t, &authv1.MintUpstreamTokenRequest{PrincipalId: "p", Tenant: "t", Audience: "urn:a"})
	testsync.WaitFor(t, 10*time.Second, "the other replica to publish the first key", func() bool {
		return slices.Equal(kids(jwks(t, other)), []string{resp.GetKeyId()})
	})
}
