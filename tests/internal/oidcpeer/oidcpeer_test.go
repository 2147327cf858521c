package oidcpeer_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/oidcpeer"
)

// The resources (audiences) the providers issue tokens for: the gateway's MCP endpoints.
const (
	resourceA = "http://127.0.0.1:18080/servers/a/mcp"
	resourceB = "http://127.0.0.1:18080/servers/b/mcp"
)

// TestProvider: discovery, JWKS and client_credentials tokens of a provider with two keys,
// two resources and three clients.
func TestProvider(t *testing.T) {
	signer, other := oidcpeer.NewRSAKey(t, "rsa-1"), oidcpeer.NewECKey(t, "ec-1")
	p := oidcpeer.Start(t, oidcpeer.Options{
		Keys: []oidcpeer.Key{signer, other},
		Clients: []oidcpeer.Client{
			{ID: "svc", Secret: "svc-secret", Claims: map[string]any{"tenant": "acme", "groups": []string{"readers"}}},
			{ID: "plain", Secret: "plain-secret"},
			{ID: "app", RedirectURIs: []string{"http://127.0.0.1:18081/callback"}},
		},
		Resources: []string{resourceA, resourceB},
		Scopes:    []string{"mcp:admin"},
		TokenTTL:  2 * time.Minute,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if !strings.HasPrefix(p.Issuer(), "http://127.0.0.1:") || strings.HasSuffix(p.Issuer(), "/") {
		t.Fatalf("issuer %q, want http://127.0.0.1:PORT", p.Issuer())
	}
	md, err := p.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("discovery", func(t *testing.T) {
		if md.Issuer != p.Issuer() {
			t.Errorf("issuer %q, want %q", md.Issuer, p.Issuer())
		}
		for name, u := range map[string]string{"jwks_uri": md.JWKSURI, "token_endpoint": md.TokenEndpoint} {
			if !strings.HasPrefix(u, p.Issuer()+"/") {
				t.Errorf("%s %q is not under the issuer", name, u)
			}
		}
		if !slices.Contains(md.GrantTypesSupported, "client_credentials") {
			t.Errorf("grant_types_supported %v, want client_credentials", md.GrantTypesSupported)
		}
		for _, s := range []string{"openid", oidcpeer.ScopeTools, "mcp:admin"} {
			if !slices.Contains(md.ScopesSupported, s) {
				t.Errorf("scopes_supported %v, want %s", md.ScopesSupported, s)
			}
		}
	})

	jwks := fetchJWKS(t, ctx, md.JWKSURI)

	t.Run("jwks publishes every key, public parts only", func(t *testing.T) {
		if len(jwks.Keys) != 2 {
			t.Fatalf("%d keys, want 2", len(jwks.Keys))
		}
		for _, k := range []oidcpeer.Key{signer, other} {
			got := jwks.Key(k.KID())
			if len(got) != 1 || !got[0].IsPublic() || got[0].Algorithm != k.Algorithm() {
				t.Errorf("kid %s: %+v", k.KID(), got)
			}
		}
	})

	t.Run("token for a resource", func(t *testing.T) {
		for _, resource := range []string{resourceA, resourceB} {
			tok, err := p.Token(ctx, "svc", "svc-secret", resource, oidcpeer.ScopeTools)
			if err != nil {
				t.Fatal(err)
			}
			claims := verify(t, tok, jwks, signer)
			want := map[string]any{
				"iss":       p.Issuer(),
				"aud":       resource,
				"sub":       "svc",
				"client_id": "svc",
				"scope":     oidcpeer.ScopeTools,
				"tenant":    "acme",
				"groups":    []any{"readers"},
			}
			for name, v := range want {
				if got, err := json.Marshal(claims[name]); err != nil || !jsonEqual(got, v) {
					t.Errorf("%s = %s, want %v", name, got, v)
				}
			}
			if jti, _ := claims["jti"].(string); jti == "" {
				t.Errorf("no jti: %v", claims)
			}
			iat, _ := claims["iat"].(float64)
			exp, _ := claims["exp"].(float64)
			if exp-iat != 120 || time.Since(time.Unix(int64(iat), 0)).Abs() > time.Minute {
				t.Errorf("iat %v, exp %v: want a two-minute token issued now", iat, exp)
			}
		}
	})

	t.Run("scopes are those requested that the resource accepts", func(t *testing.T) {
		tok, err := p.Token(ctx, "plain", "plain-secret", resourceA, "openid mcp:admin mcp:tools unknown")
		if err != nil {
			t.Fatal(err)
		}
		claims := verify(t, tok, jwks, signer)
		if claims["scope"] != "mcp:admin mcp:tools" {
			t.Errorf("scope %q", claims["scope"])
		}
		if _, ok := claims["tenant"]; ok {
			t.Errorf("another client's claims: %v", claims)
		}
	})

	refusals := []struct {
		name, client, secret, resource string
		status                         int
		code                           string
	}{
		{"wrong secret", "svc", "not-the-secret", resourceA, http.StatusUnauthorized, "invalid_client"},
		{"unknown client", "nobody", "svc-secret", resourceA, http.StatusUnauthorized, "invalid_client"},
		{"public client", "app", "any", resourceA, http.StatusUnauthorized, "invalid_client"},
		{"unknown resource", "svc", "svc-secret", "http://127.0.0.1:18080/servers/c/mcp", http.StatusBadRequest, "invalid_target"},
	}
	for _, r := range refusals {
		t.Run("refused: "+r.name, func(t *testing.T) {
			tok, err := p.Token(ctx, r.client, r.secret, r.resource, oidcpeer.ScopeTools)
			var te *oidcpeer.TokenError
			if !errors.As(err, &te) || te.Code != r.code || te.Status != r.status {
				t.Fatalf("token %.20q, err %v: want HTTP %d %s", tok, err, r.status, r.code)
			}
		})
	}

	t.Run("public client may start an authorization code flow with PKCE", func(t *testing.T) {
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		auth := func(challenge string) *url.URL {
			q := url.Values{
				"client_id":     {"app"},
				"response_type": {"code"},
				"redirect_uri":  {"http://127.0.0.1:18081/callback"},
				"scope":         {"openid " + oidcpeer.ScopeTools},
				"resource":      {resourceA},
				"state":         {"st"},
			}
			if challenge != "" {
				q.Set("code_challenge", challenge)
				q.Set("code_challenge_method", "S256")
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, md.AuthorizationEndpoint+"?"+q.Encode(), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := noFollow.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, err := resp.Location()
			if err != nil {
				t.Fatalf("HTTP %d without a redirect: %v", resp.StatusCode, err)
			}
			return loc
		}
		// The provider sends the user to its login page: the request was accepted.
		if loc := auth("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"); !strings.HasPrefix(loc.String(), p.Issuer()+"/interaction/") {
			t.Errorf("with PKCE: redirected to %s, want the interaction page", loc)
		}
		// Without PKCE the error goes back to the client.
		if loc := auth(""); !strings.HasPrefix(loc.String(), "http://127.0.0.1:18081/callback?") || loc.Query().Get("error") != "invalid_request" {
			t.Errorf("without PKCE: redirected to %s, want invalid_request at the callback", loc)
		}
	})
}

// TestRestartRotatesKeys: after a restart with a new key first, the issuer is unchanged, new
// tokens carry the new kid and verify against the new JWKS, which still publishes the old key.
func TestRestartRotatesKeys(t *testing.T) {
	oldKey, newKey := oidcpeer.NewRSAKey(t, "old"), oidcpeer.NewECKey(t, "new")
	p := oidcpeer.Start(t, oidcpeer.Options{
		Keys:      []oidcpeer.Key{oldKey},
		Clients:   []oidcpeer.Client{{ID: "svc", Secret: "svc-secret"}},
		Resources: []string{resourceA},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	issuer := p.Issuer()

	// No resource named: the only configured one is the default.
	before, err := p.Token(ctx, "svc", "svc-secret", "", "")
	if err != nil {
		t.Fatal(err)
	}
	md, err := p.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if claims := verify(t, before, fetchJWKS(t, ctx, md.JWKSURI), oldKey); claims["aud"] != resourceA {
		t.Errorf("aud %v, want the default resource %s", claims["aud"], resourceA)
	}

	p.Restart(t, []oidcpeer.Key{newKey, oldKey})
	if p.Issuer() != issuer {
		t.Fatalf("issuer %q after restart, want %q", p.Issuer(), issuer)
	}
	if got := p.Keys(); len(got) != 2 || got[0].KID() != "new" {
		t.Errorf("Keys() = %v", got)
	}
	after, err := p.Token(ctx, "svc", "svc-secret", resourceA, oidcpeer.ScopeTools)
	if err != nil {
		t.Fatal(err)
	}
	md, err = p.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	jwks := fetchJWKS(t, ctx, md.JWKSURI)
	if claims := verify(t, after, jwks, newKey); claims["iss"] != issuer {
		t.Errorf("iss %v, want %s", claims["iss"], issuer)
	}
	verify(t, before, jwks, oldKey)

	// A restart with the new key only drops the old one from the JWKS.
	p.Restart(t, []oidcpeer.Key{newKey})
	md, err = p.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if jwks := fetchJWKS(t, ctx, md.JWKSURI); len(jwks.Keys) != 1 || len(jwks.Key("old")) != 0 {
		t.Errorf("JWKS after dropping the old key: %+v", jwks)
	}
}

// verify checks that tok is an RFC 9068 access token (a JWS with typ at+jwt) signed by key,
// verifies it with the key jwks publishes under its kid and returns its claims.
func verify(t *testing.T, tok string, jwks jose.JSONWebKeySet, key oidcpeer.Key) map[string]any {
	t.Helper()
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	if len(jws.Signatures) != 1 {
		t.Fatalf("%d signatures", len(jws.Signatures))
	}
	h := jws.Signatures[0].Protected
	if h.KeyID != key.KID() || h.Algorithm != key.Algorithm() || h.ExtraHeaders["typ"] != "at+jwt" {
		t.Fatalf("header kid %q alg %q typ %v, want kid %q alg %q typ at+jwt", h.KeyID, h.Algorithm, h.ExtraHeaders["typ"], key.KID(), key.Algorithm())
	}
	published := jwks.Key(h.KeyID)
	if len(published) != 1 {
		t.Fatalf("JWKS has %d keys with kid %q", len(published), h.KeyID)
	}
	payload, err := jws.Verify(published[0])
	if err != nil {
		t.Fatalf("verify with the published key: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func fetchJWKS(t *testing.T, ctx context.Context, uri string) jose.JSONWebKeySet {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	// No keep-alive: the provider behind uri may be restarted between fetches.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("JWKS: HTTP %d, %v: %.200s", resp.StatusCode, err, body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	return set
}

// jsonEqual reports whether the JSON text got encodes the same value as want.
func jsonEqual(got []byte, want any) bool {
	w, err := json.Marshal(want)
	return err == nil && string(got) == string(w)
}

// TestTokenExchange: the provider's token exchange grant (oidc.mjs) trades one of its access
// tokens for one with the same sub and the requested audience, naming the client that asked
// (act), and refuses everything else.
func TestTokenExchange(t *testing.T) {
	signer := oidcpeer.NewECKey(t, "ec-x")
	p := oidcpeer.Start(t, oidcpeer.Options{
		Keys: []oidcpeer.Key{signer},
		Clients: []oidcpeer.Client{
			{ID: "agent", Secret: "agent-secret"},
			{ID: "gateway", Secret: "gateway-secret", TokenExchange: true},
		},
		Resources: []string{resourceA, resourceB},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	md, err := p.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	jwks := fetchJWKS(t, ctx, md.JWKSURI)
	subject, err := p.Token(ctx, "agent", "agent-secret", resourceA, oidcpeer.ScopeTools)
	if err != nil {
		t.Fatal(err)
	}
	exchanged, err := p.Exchange(ctx, "gateway", "gateway-secret", subject, resourceB)
	if err != nil {
		t.Fatal(err)
	}
	claims := verify(t, exchanged, jwks, signer)
	if claims["sub"] != "agent" || claims["aud"] != resourceB || claims["iss"] != p.Issuer() || claims["client_id"] != "gateway" {
		t.Fatalf("exchanged token claims %v", claims)
	}
	if act, _ := claims["act"].(map[string]any); act["sub"] != "gateway" {
		t.Fatalf("act %v, want the gateway", claims["act"])
	}

	forged := oidcpeer.NewECKey(t, "ec-x") // the provider's kid, another key
	for _, tt := range []struct {
		name, client, secret, subject, audience, code string
	}{
		{"a client without the grant", "agent", "agent-secret", subject, resourceB, "invalid_request"},
		{"an unknown audience", "gateway", "gateway-secret", subject, "https://elsewhere.example", "invalid_target"},
		{"a token of another key", "gateway", "gateway-secret", signWith(t, forged, map[string]any{"iss": p.Issuer(), "sub": "x", "exp": time.Now().Add(time.Minute).Unix()}), resourceB, "invalid_grant"},
		{"an expired token", "gateway", "gateway-secret", signWith(t, signer, map[string]any{"iss": p.Issuer(), "sub": "x", "exp": time.Now().Add(-time.Minute).Unix()}), resourceB, "invalid_grant"},
		{"not a JWT", "gateway", "gateway-secret", "opaque-token", resourceB, "invalid_grant"},
	} {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			_, err := p.Exchange(ctx, tt.client, tt.secret, tt.subject, tt.audience)
			var te *oidcpeer.TokenError
			if !errors.As(err, &te) || te.Code != tt.code {
				t.Fatalf("err = %v, want %s", err, tt.code)
			}
		})
	}
}

// signWith signs claims with k (kid in the header) as the provider would.
func signWith(t *testing.T, k oidcpeer.Key, claims map[string]any) string {
	t.Helper()
	priv := k.Private()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Algorithm()), Key: priv.Key}, (&jose.SignerOptions{}).WithHeader("kid", k.KID()))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
