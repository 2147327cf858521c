package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// These tests run the verifier against an issuer served by httptest: a discovery document
// and a JWKS the test controls, and tokens signed with go-jose. The end-to-end suite runs it
// against a real OpenID provider.

const audience = "https://gateway.test"

// testIssuer serves discovery and a JWKS, counting the fetches of each.
type testIssuer struct {
	srv       *httptest.Server
	mu        sync.Mutex
	keys      []jose.JSONWebKey // public keys served
	docIssuer string            // the issuer the discovery document names; "" means the real one
	down      bool              // every request is answered 503
	discovery atomic.Int32
	jwks      atomic.Int32
}

func newTestIssuer(t *testing.T) *testIssuer {
	t.Helper()
	ti := &testIssuer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		ti.discovery.Add(1)
		ti.mu.Lock()
		down := ti.down
		ti.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		iss := ti.srv.URL
		ti.mu.Lock()
		if ti.docIssuer != "" {
			iss = ti.docIssuer
		}
		ti.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": ti.srv.URL + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.jwks.Add(1)
		ti.mu.Lock()
		set := jose.JSONWebKeySet{Keys: ti.keys}
		ti.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	ti.srv = httptest.NewServer(mux)
	t.Cleanup(ti.srv.Close)
	return ti
}

func (ti *testIssuer) publish(keys ...*signingKey) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.keys = nil
	for _, k := range keys {
		ti.keys = append(ti.keys, k.public)
	}
}

type signingKey struct {
	private any
	public  jose.JSONWebKey
	alg     jose.SignatureAlgorithm
}

func rsaKey(t *testing.T, kid string) *signingKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &signingKey{private: k, public: jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"}, alg: jose.RS256}
}

func ecKey(t *testing.T, kid string) *signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &signingKey{private: k, public: jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"}, alg: jose.ES256}
}

// sign makes a token with the key, its kid in the header.
func sign(t *testing.T, k *signingKey, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.private}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.public.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// claimsFor are valid claims of the issuer for alice in tenant acme.
func (ti *testIssuer) claimsFor(now time.Time) map[string]any {
	return map[string]any{
		"iss":    ti.srv.URL,
		"sub":    "alice",
		"aud":    audience,
		"exp":    now.Add(5 * time.Minute).Unix(),
		"iat":    now.Unix(),
		"nbf":    now.Unix(),
		"tenant": "acme",
		"groups": []string{"readers", "devs", "readers"},
		"scope":  "openid mcp",
	}
}

func newVerifier(t *testing.T, ti *testIssuer, now time.Time, edit func(*IssuerConfig)) *Verifier {
	t.Helper()
	cfg := IssuerConfig{Issuer: ti.srv.URL, Audiences: []string{audience}, TenantClaim: "tenant", GroupsClaim: "groups", Algorithms: []string{"RS256", "ES256"}}
	if edit != nil {
		edit(&cfg)
	}
	v, err := New([]IssuerConfig{cfg}, NewHTTPClient(), func() time.Time { return now }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyValid(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	rk, ek := rsaKey(t, "r1"), ecKey(t, "e1")
	ti.publish(rk, ek)
	now := time.Now()
	v := newVerifier(t, ti, now, func(c *IssuerConfig) { c.PrincipalPrefix = "idp." })
	for _, k := range []*signingKey{rk, ek} {
		p, err := v.Verify(context.Background(), sign(t, k, ti.claimsFor(now)), nil)
		if err != nil {
			t.Fatalf("%s: %v", k.alg, err)
		}
		if p.GetId() != "idp.alice" || p.GetTenant() != "acme" || strings.Join(p.GetGroups(), ",") != "devs,readers" ||
			p.GetKind() != authv1.PrincipalKind_PRINCIPAL_KIND_USER || p.GetAttributes()["issuer"] != ti.srv.URL {
			t.Fatalf("%s: principal %v", k.alg, p)
		}
		if got, want := p.GetExpireTime().AsTime().Unix(), now.Add(5*time.Minute).Unix(); got != want {
			t.Fatalf("expire time %d, want %d", got, want)
		}
	}
	if d, j := ti.discovery.Load(), ti.jwks.Load(); d != 1 || j != 1 {
		t.Fatalf("fetches: discovery %d, jwks %d; want 1 and 1 (keys are cached)", d, j)
	}
}

func TestVerifyRefusals(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	k := rsaKey(t, "k1")
	ti.publish(k)
	now := time.Now()
	v := newVerifier(t, ti, now, func(c *IssuerConfig) { c.RequiredScopes = []string{"mcp"} })
	with := func(edit func(map[string]any)) string {
		c := ti.claimsFor(now)
		edit(c)
		return sign(t, k, c)
	}
	pemKey := func() []byte {
		der, err := x509.MarshalPKIXPublicKey(k.public.Key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}()
	hsConfused := func() string {
		// The classic confusion: HS256 with the issuer's RSA public key as the secret.
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pemKey}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := jwt.Signed(s).Claims(ti.claimsFor(now)).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}()
	payload := strings.Split(with(func(map[string]any) {}), ".")[1]
	for _, tt := range []struct {
		name, token, reason string
		want                error
	}{
		{"expired", with(func(c map[string]any) { c["exp"] = now.Add(-2 * time.Minute).Unix() }), "token expired", ErrInvalidToken},
		{"not yet valid", with(func(c map[string]any) { c["nbf"] = now.Add(2 * time.Minute).Unix() }), "not valid yet", ErrInvalidToken},
		{"issued in the future", with(func(c map[string]any) { c["iat"] = now.Add(2 * time.Minute).Unix() }), "issued in the future", ErrInvalidToken},
		{"wrong audience", with(func(c map[string]any) { c["aud"] = "https://other.test" }), "audience", ErrInvalidToken},
		{"untrusted issuer", with(func(c map[string]any) { c["iss"] = "https://evil.test" }), "issuer is not trusted", ErrInvalidToken},
		{"no exp", with(func(c map[string]any) { delete(c, "exp") }), "no exp", ErrInvalidToken},
		{"no subject", with(func(c map[string]any) { delete(c, "sub") }), "no sub claim", ErrInvalidToken},
		{"subject not an id", with(func(c map[string]any) { c["sub"] = "alice smith" }), "not a principal id", ErrInvalidToken},
		{"no tenant", with(func(c map[string]any) { delete(c, "tenant") }), "tenant claim", ErrInvalidToken},
		{"groups not names", with(func(c map[string]any) { c["groups"] = []any{"a", 7} }), "groups claim", ErrInvalidToken},
		{"missing scope", with(func(c map[string]any) { c["scope"] = "openid" }), "lacks the scope mcp", ErrInsufficientScope},
		{"alg none", "eyJhbGciOiJub25lIn0." + payload + ".", "allowed algorithm", ErrInvalidToken},
		{"HS256 with the RSA public key", hsConfused, "allowed algorithm", ErrInvalidToken},
		{"unknown key", sign(t, rsaKey(t, "k2"), ti.claimsFor(now)), "signing key is unknown", ErrInvalidToken},
		{"right kid, wrong key", sign(t, rsaKey(t, "k1"), ti.claimsFor(now)), "signature does not verify", ErrInvalidToken},
		{"malformed", "not.a.jwt", "allowed algorithm", ErrInvalidToken},
		{"tampered payload", func() string {
			parts := strings.Split(with(func(map[string]any) {}), ".")
			parts[1] = strings.Split(with(func(c map[string]any) { c["sub"] = "root" }), ".")[1]
			return strings.Join(parts, ".")
		}(), "signature does not verify", ErrInvalidToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := v.Verify(context.Background(), tt.token, nil)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("Verify = %v, %v; want %v with %q", p, err, tt.want, tt.reason)
			}
		})
	}
}

// An endpoint's own resource identifier is an accepted audience, besides the configured ones.
func TestVerifyResourceAudience(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	k := rsaKey(t, "k1")
	ti.publish(k)
	now := time.Now()
	v := newVerifier(t, ti, now, func(c *IssuerConfig) { c.Audiences = nil })
	c := ti.claimsFor(now)
	c["aud"] = []string{"https://gw.test/servers/echo/mcp"}
	tok := sign(t, k, c)
	if _, err := v.Verify(context.Background(), tok, []string{"https://gw.test/servers/echo/mcp"}); err != nil {
		t.Fatalf("for its endpoint: %v", err)
	}
	if _, err := v.Verify(context.Background(), tok, []string{"https://gw.test/servers/other/mcp"}); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("for another endpoint: %v, want invalid", err)
	}
	if _, err := v.Verify(context.Background(), tok, nil); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("with no audience at all: %v, want invalid", err)
	}
}

// A rotated key is fetched when a token names it; invented key ids cost a bounded number of
// fetches however many tokens carry them, concurrently.
func TestKeyRotationAndBoundedRefetch(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	old, rotated := rsaKey(t, "old"), rsaKey(t, "new")
	ti.publish(old)
	now := time.Now()
	v := newVerifier(t, ti, now, nil)
	if _, err := v.Verify(context.Background(), sign(t, old, ti.claimsFor(now)), nil); err != nil {
		t.Fatal(err)
	}
	ti.publish(rotated, old)
	if _, err := v.Verify(context.Background(), sign(t, rotated, ti.claimsFor(now)), nil); err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
	if got := ti.jwks.Load(); got != 2 {
		t.Fatalf("jwks fetched %d times, want 2 (first use, then the unknown kid)", got)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := sign(t, inventedKey(t, i), ti.claimsFor(now))
			if _, err := v.Verify(context.Background(), tok, nil); !errors.Is(err, ErrInvalidToken) {
				t.Errorf("invented kid: %v, want invalid", err)
			}
		}()
	}
	wg.Wait()
	// The budget held refetchBurst-1 = 1 refetch after the rotation's (the clock does not
	// move): one fetch for the 50 invented ids, then none.
	if got := ti.jwks.Load(); got != 3 {
		t.Fatalf("jwks fetched %d times after 50 invented key ids, want 3", got)
	}
}

// inventedKey is a key the issuer never published, with an id of its own.
func inventedKey(t *testing.T, i int) *signingKey {
	return ecKey(t, fmt.Sprintf("invented-%d", i))
}

// Concurrent first uses share one discovery and one JWKS fetch.
func TestColdStartSharesOneFetch(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	k := ecKey(t, "e1")
	ti.publish(k)
	now := time.Now()
	v := newVerifier(t, ti, now, nil)
	tok := sign(t, k, ti.claimsFor(now))
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.Verify(context.Background(), tok, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if d, j := ti.discovery.Load(), ti.jwks.Load(); d != 1 || j != 1 {
		t.Fatalf("fetches: discovery %d, jwks %d; want 1 and 1", d, j)
	}
}

// A discovery document that names another issuer is not trusted: nobody gets in, and the
// failure says the keys are unavailable, not that the token is bad.
func TestDiscoveryIssuerMismatch(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	k := rsaKey(t, "k1")
	ti.publish(k)
	ti.docIssuer = "https://evil.test"
	now := time.Now()
	v := newVerifier(t, ti, now, nil)
	_, err := v.Verify(context.Background(), sign(t, k, ti.claimsFor(now)), nil)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "names issuer") {
		t.Fatalf("Verify = %v, want unavailable naming the mismatch", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	base := func() IssuerConfig {
		return IssuerConfig{Issuer: "https://idp.test", Audiences: []string{audience}, Tenant: "acme"}
	}
	for _, tt := range []struct {
		name string
		edit func(*IssuerConfig)
		want string
	}{
		{"HMAC", func(c *IssuerConfig) { c.Algorithms = []string{"HS256"} }, "not allowed"},
		{"none", func(c *IssuerConfig) { c.Algorithms = []string{"none"} }, "not allowed"},
		{"http elsewhere", func(c *IssuerConfig) { c.Issuer = "http://idp.test" }, "loopback"},
		{"no tenant", func(c *IssuerConfig) { c.Tenant = "" }, "tenant"},
		{"both tenants", func(c *IssuerConfig) { c.TenantClaim = "t" }, "exclude"},
		{"skew", func(c *IssuerConfig) { c.ClockSkew = time.Hour }, "clock_skew"},
		{"kind", func(c *IssuerConfig) { c.Kind = "robot" }, "kind"},
		{"query", func(c *IssuerConfig) { c.Issuer = "https://idp.test/?a=b" }, "query"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.edit(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
	c := base()
	if err := c.Validate(); err != nil || c.PrincipalClaim != "sub" || c.ClockSkew != DefaultClockSkew || len(c.Algorithms) != 2 || c.Kind != KindUser {
		t.Fatalf("defaults: %v %+v", err, c)
	}
	c = base()
	c.Issuer = "http://127.0.0.1:4444"
	if err := c.Validate(); err != nil {
		t.Fatalf("loopback http: %v", err)
	}
}

func TestLooksLikeJWT(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"eyJh.eyJz.c2ln": true,
		"gh_abcdef":      false,
		"a.b.":           true, // unsecured: Verify refuses it
		".b.c":           false,
		"a.b.c.d":        false,
		"a+b.c.d":        false,
	} {
		if got := LooksLikeJWT(s); got != want {
			t.Errorf("LooksLikeJWT(%q) = %v", s, got)
		}
	}
}

// While an issuer is down, tokens naming it do not drive fetches back to back: after a failed
// fetch, none is tried for fetchBackoff, and tokens are refused as unavailable at once.
func TestIssuerDownBacksOff(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	k := rsaKey(t, "k1")
	ti.publish(k)
	ti.mu.Lock()
	ti.down = true
	ti.mu.Unlock()
	now := time.Now()
	v := newVerifier(t, ti, now, nil)
	tok := sign(t, k, ti.claimsFor(now))
	for range 20 {
		if _, err := v.Verify(context.Background(), tok, nil); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Verify = %v, want unavailable", err)
		}
	}
	// Discovery tries both metadata locations once: one fetch for the 20 tokens.
	if got := ti.discovery.Load(); got != 1 {
		t.Fatalf("discovery asked %d times for 20 tokens within the backoff, want 1", got)
	}
}

// An issuer's allow-lists: a tenant outside is refused, groups outside are dropped.
func TestAllowedTenantsAndGroups(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	k := rsaKey(t, "k1")
	ti.publish(k)
	now := time.Now()
	v := newVerifier(t, ti, now, func(c *IssuerConfig) {
		c.AllowedTenants = []string{"acme"}
		c.AllowedGroups = []string{"readers"}
	})
	p, err := v.Verify(context.Background(), sign(t, k, ti.claimsFor(now)), nil)
	if err != nil || strings.Join(p.GetGroups(), ",") != "readers" {
		t.Fatalf("Verify = %v, %v; want groups [readers] (devs dropped)", p, err)
	}
	c := ti.claimsFor(now)
	c["tenant"] = "globex"
	if _, err := v.Verify(context.Background(), sign(t, k, c), nil); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "may not") {
		t.Fatalf("a tenant outside the list: %v, want invalid", err)
	}
	c["groups"] = []string{"gatehouse-admins"}
	c["tenant"] = "acme"
	p, err = v.Verify(context.Background(), sign(t, k, c), nil)
	if err != nil || len(p.GetGroups()) != 0 {
		t.Fatalf("an admin group the issuer may not grant: %v %v, want no groups", p, err)
	}
}
