package authsvc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/authsvc"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func TestParseIdentity(t *testing.T) {
	t.Parallel()
	id, err := authsvc.ParseIdentity([]byte("resource: https://gw.example/\noidc:\n  - issuer: https://idp.example\n    tenant: acme\n    clock_skew: 30s\n    required_scopes: [mcp]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if id.Resource != "https://gw.example" || len(id.Issuers) != 1 || id.Issuers[0].ClockSkew != 30*time.Second || id.Issuers[0].PrincipalClaim != "sub" {
		t.Fatalf("parsed %+v", id)
	}
	for _, tt := range []struct{ name, doc, want string }{
		{"unknown key", "resource: https://gw.example\nodic: []\n", "odic"},
		{"no resource", "oidc:\n  - issuer: https://idp.example\n    tenant: acme\n", "resource"},
		{"http resource elsewhere", "resource: http://gw.example\noidc:\n  - issuer: https://idp.example\n    tenant: acme\n", "loopback"},
		{"HMAC", "resource: https://gw.example\noidc:\n  - issuer: https://idp.example\n    tenant: acme\n    algorithms: [HS256]\n", "not allowed"},
		{"twice", "resource: https://gw.example\noidc:\n  - issuer: https://idp.example\n    tenant: acme\n  - issuer: https://idp.example\n    tenant: acme\n", "twice"},
		{"bad skew", "resource: https://gw.example\noidc:\n  - issuer: https://idp.example\n    tenant: acme\n    clock_skew: soon\n", "clock_skew"},
		{"two documents", "resource: https://gw.example\n---\nresource: https://gw.example\n", "more than one"},
		{"empty", "", "empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := authsvc.ParseIdentity([]byte(tt.doc)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseIdentity = %v, want %q", err, tt.want)
			}
		})
	}
}

// A JWT goes to the issuer's verifier, an API token to the token store; the audience may be
// the gateway or the endpoint it was presented to; ResourceMetadata names the issuer.
func TestAuthenticateOIDC(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var issuer string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": issuer, "jwks_uri": issuer + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	issuer = srv.URL
	path := filepath.Join(t.TempDir(), "identity.yaml")
	doc := "resource: https://gw.example\noidc:\n  - issuer: " + issuer + "\n    tenant_claim: org\n    required_scopes: [mcp]\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, authsvc.Config{IdentityConfig: path})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	token := func(aud, scope string) string {
		now := f.clock.Now()
		raw, err := jwt.Signed(signer).Claims(map[string]any{"iss": issuer, "sub": "alice", "aud": aud, "org": "acme", "scope": scope,
			"iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	for _, aud := range []string{"https://gw.example", "https://gw.example/servers/echo/mcp"} {
		p, err := f.authenticate(t, token(aud, "mcp"), "echo")
		if err != nil || p.GetId() != "alice" || p.GetTenant() != "acme" || p.GetAttributes()["issuer"] != issuer {
			t.Fatalf("aud %s: %v %v", aud, p, err)
		}
	}
	_, err = f.authenticate(t, token("https://gw.example/servers/other/mcp", "mcp"), "echo")
	wantCode(t, err, connect.CodeUnauthenticated, "audience")
	_, err = f.authenticate(t, token("https://gw.example", "read"), "echo")
	wantCode(t, err, connect.CodePermissionDenied, "lacks the scope mcp")
	// The service's clock decides expiry (one minute of life, one of skew).
	old := token("https://gw.example", "mcp")
	f.clock.Advance(2*time.Minute + time.Second)
	_, err = f.authenticate(t, old, "echo")
	wantCode(t, err, connect.CodeUnauthenticated, "token expired")
	// API tokens still work beside the issuer.
	created := f.create(t, &authv1.CreateTokenRequest{PrincipalId: "bob", Tenant: "acme"})
	if p, err := f.authenticate(t, created.GetToken(), "echo"); err != nil || p.GetId() != "bob" {
		t.Fatalf("API token: %v %v", p, err)
	}
	resp, err := f.svc.ResourceMetadata(context.Background(), connect.NewRequest(&authv1.ResourceMetadataRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if m := resp.Msg; m.GetResource() != "https://gw.example" || len(m.GetAuthorizationServers()) != 1 || m.GetAuthorizationServers()[0] != issuer ||
		strings.Join(m.GetScopesSupported(), " ") != "mcp" {
		t.Fatalf("ResourceMetadata = %v", m)
	}
}

// writeFile writes a file into the test's temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
