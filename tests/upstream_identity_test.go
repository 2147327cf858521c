package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/oidcpeer"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Upstream identity end to end: the example echo server's whoami tool (Streamable HTTP, or a
// stdio child) reports the credential each call reached it with, for every mode a server's
// config chooses. The host's own token never arrives.

// whoamiServer starts the example echo server over Streamable HTTP with its whoami tool and
// returns its MCP URL.
func whoamiServer(t *testing.T) string {
	t.Helper()
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	return "http://" + gatehousetest.StartServer(t, func(addr string) []string { return []string{echo, "-http", addr, "-whoami"} }) + "/mcp"
}

// whoamiResult is the echo server's whoami output.
type whoamiResult struct {
	Authorization string            `json:"authorization"`
	Env           map[string]string `json:"env"`
}

// whoami calls whoami on an endpoint of the gateway with the host's token, through the
// official Go SDK client; logs are the gateway's, shown when it fails.
func whoami(t *testing.T, logs func() string, endpoint, token string) whoamiResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.ResponseHeaderTimeout = gatehousetest.ClientTimeout
	client := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: gatehousetest.BearerTransport{Token: token, Base: base}}}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v\n%s", endpoint, err, logs())
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
	if err != nil || res.IsError {
		t.Fatalf("whoami on %s: %v %v\n%s", endpoint, res, err, logs())
	}
	var out whoamiResult
	raw, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("whoami output %s: %v", raw, err)
	}
	if strings.Contains(string(raw), token) {
		t.Fatalf("the host's token reached the upstream: %s", raw)
	}
	return out
}

// TestUpstreamIdentityStatic: a credential of the upstream's own, from the gateway's
// environment or from a file, arrives in the configured header value; a stdio child gets it
// in its environment; a server without an identity gets nothing.
func TestUpstreamIdentityStatic(t *testing.T) {
	up := whoamiServer(t)
	secretFile := filepath.Join(t.TempDir(), "upstream-secret")
	if err := os.WriteFile(secretFile, []byte("file-secret-4e1b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	config := "servers:\n" +
		httpEntry("from-env", up) + "    identity:\n      mode: static\n      secret_env: E2E_UPSTREAM_SECRET\n" +
		httpEntry("from-file", up) + fmt.Sprintf("    identity:\n      mode: static\n      secret_file: %s\n      scheme: Token\n", secretFile) +
		httpEntry("none", up) +
		stdioEntry("child", echo, "-whoami", "-whoami-env", "API_TOKEN,E2E_UPSTREAM_SECRET") + "    identity:\n      mode: static\n      secret_env: E2E_UPSTREAM_SECRET\n      child_env: API_TOKEN\n"
	g := gatehousetest.Start(t, gatehousetest.Options{Config: config, Env: []string{"E2E_UPSTREAM_SECRET=env-secret-9c2d"}})

	if got := whoami(t, g.Logs, g.Endpoint("from-env"), g.Token); got.Authorization != "Bearer env-secret-9c2d" {
		t.Fatalf("from-env: the upstream got Authorization %q, want the secret from the environment", got.Authorization)
	}
	if got := whoami(t, g.Logs, g.Endpoint("from-file"), g.Token); got.Authorization != "Token file-secret-4e1b" {
		t.Fatalf("from-file: the upstream got Authorization %q, want the file's secret with scheme Token", got.Authorization)
	}
	if got := whoami(t, g.Logs, g.Endpoint("none"), g.Token); got.Authorization != "" {
		t.Fatalf("none: the upstream got Authorization %q", got.Authorization)
	}
	// The child gets the secret in the variable its config names, and nothing else of the
	// gateway's environment.
	got := whoami(t, g.Logs, g.Endpoint("child"), g.Token)
	if got.Env["API_TOKEN"] != "env-secret-9c2d" || got.Authorization != "" {
		t.Fatalf("child: %+v, want API_TOKEN set to the secret", got)
	}
	if _, leaked := got.Env["E2E_UPSTREAM_SECRET"]; leaked {
		t.Fatal("the child inherited the gateway's environment variable")
	}
}

// upstreamClaims are what an upstream reads from a gateway-jwt token.
type upstreamClaims struct {
	jwt.Claims
	Tenant string   `json:"tenant"`
	Groups []string `json:"groups"`
}

// gatewayJWKS fetches the key set the gateway at base publishes, as an upstream would.
func gatewayJWKS(t *testing.T, base string) jose.JSONWebKeySet {
	t.Helper()
	resp, err := (&http.Client{Timeout: gatehousetest.ClientTimeout}).Get(base + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("GET /.well-known/jwks.json: %d %v %s", resp.StatusCode, err, body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("the JWKS %s: %v", body, err)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Fatalf("the JWKS publishes a private key: %s", body)
		}
	}
	return set
}

// verifyUpstreamToken verifies a bearer token as an upstream would: ES256 only, its kid in
// the gateway's JWKS, the signature, issuer, audience and time.
func verifyUpstreamToken(t *testing.T, authorization string, set jose.JSONWebKeySet, audience string) (upstreamClaims, string) {
	t.Helper()
	raw, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok {
		t.Fatalf("Authorization %q is not a bearer token", authorization)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("the upstream's token: %v", err)
	}
	kid := tok.Headers[0].KeyID
	keys := set.Key(kid)
	if len(keys) != 1 {
		t.Fatalf("kid %q is not in the gateway's JWKS", kid)
	}
	var c upstreamClaims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		t.Fatalf("the token does not verify against the gateway's JWKS: %v", err)
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Issuer: "gatehouse", AnyAudience: jwt.Audience{audience}, Time: time.Now()}, time.Minute); err != nil {
		t.Fatalf("claims %+v: %v", c, err)
	}
	return c, kid
}

// TestUpstreamIdentityGatewayJWT: an upstream gets a short-lived JWT the gateway minted for
// the caller, which verifies against the JWKS the gateway publishes; after a key rotation a
// new token carries the new key id, and the old key is still published for the tokens it
// signed.
func TestUpstreamIdentityGatewayJWT(t *testing.T) {
	up := whoamiServer(t)
	config := "servers:\n" +
		httpEntry("jwt", up) + "    identity:\n      mode: gateway-jwt\n" +
		httpEntry("jwt-aud", up) + "    identity:\n      mode: gateway-jwt\n      audience: urn:e2e:echo\n      ttl: 2m\n"
	g := gatehousetest.Start(t, gatehousetest.Options{Config: config})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	auth := authv1connect.NewAuthServiceClient(g.AdminClient(), g.Base)
	created, err := auth.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "alice", Tenant: "default", Groups: []string{"ops", "readers"}}))
	if err != nil {
		t.Fatal(err)
	}

	got := whoami(t, g.Logs, g.Endpoint("jwt"), g.Token)
	set := gatewayJWKS(t, g.Base)
	c, oldKID := verifyUpstreamToken(t, got.Authorization, set, up)
	if c.Subject != "dev" || c.Tenant != "default" || strings.Join(c.Groups, ",") != "gatehouse-admins" || c.ID == "" || c.Expiry.Time().Sub(c.IssuedAt.Time()) != 5*time.Minute {
		t.Fatalf("the token's claims %+v: want sub dev, tenant default, the group gatehouse-admins, a jti, five minutes of life", c)
	}
	got = whoami(t, g.Logs, g.Endpoint("jwt-aud"), created.Msg.GetToken())
	c, _ = verifyUpstreamToken(t, got.Authorization, set, "urn:e2e:echo")
	if c.Subject != "alice" || !slices.Equal(c.Groups, []string{"ops", "readers"}) || c.Expiry.Time().Sub(c.IssuedAt.Time()) != 2*time.Minute {
		t.Fatalf("the token's claims %+v: want sub alice, her groups, two minutes of life", c)
	}
	oldToken := got.Authorization

	rot, err := auth.RotateSigningKey(ctx, connect.NewRequest(&authv1.RotateSigningKeyRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if rot.Msg.GetKeyId() == oldKID || !slices.Contains(rot.Msg.GetPublishedKeyIds(), oldKID) {
		t.Fatalf("rotation %v; the key was %s", rot.Msg, oldKID)
	}
	// A caller with no cached token gets one of the new key (cached tokens of the old key
	// stay valid: rotation is not revocation).
	carol := g.NewToken(t, "carol", "default")
	got = whoami(t, g.Logs, g.Endpoint("jwt"), carol)
	set = gatewayJWKS(t, g.Base)
	c, newKID := verifyUpstreamToken(t, got.Authorization, set, up)
	if newKID != rot.Msg.GetKeyId() || c.Subject != "carol" {
		t.Fatalf("after the rotation: kid %s, sub %s; want the new key %s and carol", newKID, c.Subject, rot.Msg.GetKeyId())
	}
	if len(set.Key(oldKID)) != 1 {
		t.Fatalf("the old key %s is no longer published", oldKID)
	}
	verifyUpstreamToken(t, oldToken, set, "urn:e2e:echo")
}

// TestUpstreamIdentityTokenExchange: a host that authenticated with a token of the gateway's
// OpenID provider reaches an upstream with a token the provider exchanged for it (RFC 8693):
// the host's sub, the upstream's audience, never the host's token itself. A host with a
// gateway API token cannot use that server at all.
func TestUpstreamIdentityTokenExchange(t *testing.T) {
	up := whoamiServer(t)
	o := startOIDCGatewayWith(t, oidcpeer.NewECKey(t, "ex1"), oidcSetup{
		Resources: []string{up},
		Clients:   []oidcpeer.Client{{ID: "gatehouse", Secret: "gatehouse-exchange-secret", TokenExchange: true}},
		Env:       []string{"E2E_EXCHANGE_SECRET=gatehouse-exchange-secret"},
		Servers: func(idp *oidcpeer.Provider) string {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			md, err := idp.Discover(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return httpEntry("exchange", up) + fmt.Sprintf("    identity:\n      mode: token-exchange\n      token_endpoint: %s\n      client_id: gatehouse\n      client_secret_env: E2E_EXCHANGE_SECRET\n", md.TokenEndpoint)
		},
	})
	host := o.token(t)
	got := whoami(t, o.g.Logs, o.g.Endpoint("exchange"), host)
	raw, ok := strings.CutPrefix(got.Authorization, "Bearer ")
	if !ok || raw == host {
		t.Fatalf("the upstream got Authorization %q, want an exchanged bearer token", got.Authorization)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		jwt.Claims
		Act struct {
			Sub string `json:"sub"`
		} `json:"act"`
	}
	key := o.idp.Keys()[0].Public()
	if err := tok.Claims(key.Key, &c); err != nil {
		t.Fatalf("the exchanged token does not verify against the provider's key: %v", err)
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Issuer: o.idp.Issuer(), Subject: oidcClient, AnyAudience: jwt.Audience{up}, Time: time.Now()}, time.Minute); err != nil {
		t.Fatalf("exchanged token claims %+v: %v", c.Claims, err)
	}
	if c.Act.Sub != "gatehouse" {
		t.Fatalf("act %+v, want the gateway's client", c.Act)
	}

	// A gateway API token is no OpenID Connect token: the server is refused, clearly.
	if status, body := initializeAnswer(t, o.g.Endpoint("exchange"), o.g.Token); status != http.StatusForbidden || !strings.Contains(body, "OpenID Connect token") {
		t.Fatalf("initialize with an API token: %d %s; want 403 saying an OpenID Connect token is needed", status, body)
	}
}

// initializeAnswer posts an initialize with the token and returns the answer's status and
// body.
func initializeAnswer(t *testing.T, endpoint, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: gatehousetest.ClientTimeout}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b)
}
