package tests

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/nodepeer"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/oidcpeer"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/procnet"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// OpenID Connect through the gateway, against a real OpenID provider (oidc-provider, on
// loopback): its tokens work with the official Go and TypeScript SDK clients, the TypeScript
// client finds the provider itself from the gateway's RFC 9728 metadata, a rotated signing
// key is picked up without a restart, and every kind of bad token is a 401 with an
// invalid_token challenge.

const (
	oidcClient = "agent"
	oidcSecret = "agent-secret-0123456789abcdef"
)

// oidcGateway is a gateway trusting one provider, with the echo server over Streamable HTTP.
type oidcGateway struct {
	g        *gatehousetest.Gateway
	idp      *oidcpeer.Provider
	resource string // the gateway's resource identifier: its base URL
}

func (o *oidcGateway) endpoint() string { return o.g.Endpoint("echo") }

// startOIDCGateway starts the provider, then the gateway on a port chosen first, since the
// gateway's resource identifier (its URL) is the audience the provider puts in tokens.
func startOIDCGateway(t *testing.T, key oidcpeer.Key) *oidcGateway {
	t.Helper()
	return startOIDCGatewayWith(t, key, oidcSetup{})
}

// oidcSetup adds to what startOIDCGateway starts: resources (audiences) and clients at the
// provider, servers in the gateway's config (servers gets the provider, once it runs), and
// the gateway's environment.
type oidcSetup struct {
	Resources []string
	Clients   []oidcpeer.Client
	Servers   func(idp *oidcpeer.Provider) string
	Env       []string
}

func startOIDCGatewayWith(t *testing.T, key oidcpeer.Key, setup oidcSetup) *oidcGateway {
	t.Helper()
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	echoAddr := gatehousetest.StartServer(t, func(addr string) []string { return []string{echo, "-http", addr} })
	var errs []string
	for range 3 {
		port, err := procnet.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		idp := oidcpeer.Start(t, oidcpeer.Options{
			Keys:      []oidcpeer.Key{key},
			Clients:   append([]oidcpeer.Client{{ID: oidcClient, Secret: oidcSecret, Claims: map[string]any{"tenant": "default", "groups": []string{"readers"}}}}, setup.Clients...),
			Resources: append([]string{base, base + "/servers/echo/mcp"}, setup.Resources...),
		})
		config := "servers:\n" + httpEntry("echo", "http://"+echoAddr+"/mcp")
		if setup.Servers != nil {
			config += setup.Servers(idp)
		}
		identity := filepath.Join(t.TempDir(), "identity.yaml")
		doc := fmt.Sprintf("resource: %s\noidc:\n  - issuer: %s\n    tenant_claim: tenant\n    groups_claim: groups\n    principal_prefix: idp.\n    required_scopes: [%s]\n",
			base, idp.Issuer(), oidcpeer.ScopeTools)
		if err := os.WriteFile(identity, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		g, err := gatehousetest.TryStart(t, gatehousetest.Options{Config: config, Env: setup.Env, Args: []string{"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--identity-config", identity}})
		if err == nil {
			return &oidcGateway{g: g, idp: idp, resource: base}
		}
		errs = append(errs, err.Error())
	}
	t.Fatalf("gatehouse did not start on a chosen port in 3 tries:\n%s", strings.Join(errs, "\n"))
	return nil
}

// token gets a token from the provider for the gateway, as an agent configured with the
// client credentials would.
func (o *oidcGateway) token(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := o.idp.Token(ctx, oidcClient, oidcSecret, o.resource, oidcpeer.ScopeTools)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// goSDKEcho connects the official Go SDK client with the token and calls echo.
func goSDKEcho(t *testing.T, endpoint, token, text string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.ResponseHeaderTimeout = gatehousetest.ClientTimeout
	client := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: &http.Client{Transport: gatehousetest.BearerTransport{Token: token, Base: base}}}, nil)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}})
	if err != nil {
		return fmt.Errorf("tools/call: %w", err)
	}
	if tc, ok := res.Content[0].(*mcp.TextContent); res.IsError || len(res.Content) != 1 || !ok || tc.Text != text {
		return fmt.Errorf("tools/call result %#v, want %q", res.Content, text)
	}
	return nil
}

func TestOIDC(t *testing.T) {
	key := oidcpeer.NewRSAKey(t, "k1")
	o := startOIDCGateway(t, key)

	t.Run("go sdk", func(t *testing.T) {
		if err := goSDKEcho(t, o.endpoint(), o.token(t), "hello oidc"); err != nil {
			t.Fatalf("%v\n%s", err, o.g.Logs())
		}
		// The call is the provider's principal, in the tenant its claim names.
		rec := waitAudit(t, o.g.DataDir, "the OIDC principal's call", func(r auditRecord) bool {
			return r.Method == "tools/call" && r.Principal == "idp."+oidcClient
		})
		if rec.Tenant != "default" {
			t.Fatalf("audit record %+v, want tenant default", rec)
		}
	})

	t.Run("typescript sdk discovers the provider", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		res, err := nodepeer.RunClient(t, ctx, "--url", o.endpoint(), "--client-id", oidcClient, "--client-secret", oidcSecret,
			"--issuer", o.idp.Issuer(), "--scope", oidcpeer.ScopeTools, "--call", "echo", "--args", `{"text":"hello from ts"}`)
		if err != nil {
			t.Fatalf("%v\n%s", err, o.g.Logs())
		}
		tr, err := res.ToolResult()
		if err != nil || tr.Text() != "hello from ts" {
			t.Fatalf("tools/call: %v %q", err, tr.Text())
		}
		if len(res.AuthServers) != 1 || strings.TrimSuffix(res.AuthServers[0], "/") != o.idp.Issuer() {
			t.Fatalf("the SDK found authorization servers %v, want [%s]", res.AuthServers, o.idp.Issuer())
		}
	})

	t.Run("rotated key", func(t *testing.T) {
		o.idp.Restart(t, []oidcpeer.Key{oidcpeer.NewECKey(t, "k2")})
		tok := o.token(t)
		if kid := headerKID(t, tok); kid != "k2" {
			t.Fatalf("the provider signed with %q, want the rotated key k2", kid)
		}
		if err := goSDKEcho(t, o.endpoint(), tok, "after rotation"); err != nil {
			t.Fatalf("token of the rotated key: %v\n%s", err, o.g.Logs())
		}
	})

	t.Run("refused", func(t *testing.T) {
		now := time.Now()
		claims := func(edit func(map[string]any)) map[string]any {
			c := map[string]any{"iss": o.idp.Issuer(), "sub": oidcClient, "aud": o.resource, "iat": now.Unix(),
				"exp": now.Add(5 * time.Minute).Unix(), "tenant": "default", "scope": oidcpeer.ScopeTools}
			if edit != nil {
				edit(c)
			}
			return c
		}
		// The provider's current key (k2, after the rotation above) signs what the provider
		// never would; the gateway must refuse it on its claims.
		signer := o.idp.Keys()[0]
		stranger := oidcpeer.NewECKey(t, "k2") // the kid and algorithm of the provider's key, another key
		for _, tt := range []struct {
			name, token, reason string
		}{
			{"expired", sign(t, signer, claims(func(c map[string]any) { c["exp"] = now.Add(-5 * time.Minute).Unix() })), "token expired"},
			{"not yet valid", sign(t, signer, claims(func(c map[string]any) { c["nbf"] = now.Add(5 * time.Minute).Unix() })), "not valid yet"},
			{"wrong audience", sign(t, signer, claims(func(c map[string]any) { c["aud"] = "https://elsewhere.example" })), "audience"},
			{"wrong issuer", sign(t, signer, claims(func(c map[string]any) { c["iss"] = "https://idp.elsewhere.example" })), "issuer is not trusted"},
			{"alg none", unsigned(t, claims(nil)), "allowed algorithm"},
			{"HS256 with the RSA public key", hsWithPublicKey(t, key, claims(nil)), "allowed algorithm"},
			{"unknown key", sign(t, oidcpeer.NewRSAKey(t, "k9"), claims(nil)), "signing key is unknown"},
			{"known kid, another key", sign(t, stranger, claims(nil)), "signature does not verify"},
			{"malformed", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "claims"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				status, challenge := initializeWith(t, o.endpoint(), tt.token)
				if status != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) ||
					!strings.Contains(challenge, tt.reason) || !strings.Contains(challenge, "resource_metadata=") {
					t.Fatalf("status %d, challenge %q; want 401, invalid_token, %q and the metadata URL", status, challenge, tt.reason)
				}
			})
		}
		t.Run("scope missing", func(t *testing.T) {
			status, challenge := initializeWith(t, o.endpoint(), sign(t, signer, claims(func(c map[string]any) { delete(c, "scope") })))
			if status != http.StatusForbidden || !strings.Contains(challenge, `error="insufficient_scope"`) || !strings.Contains(challenge, `scope="`+oidcpeer.ScopeTools+`"`) {
				t.Fatalf("status %d, challenge %q; want 403 insufficient_scope naming %s", status, challenge, oidcpeer.ScopeTools)
			}
		})
	})
}

// initializeWith posts an initialize with the token and returns the status and challenge.
func initializeWith(t *testing.T, endpoint, token string) (int, string) {
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
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

// sign signs claims with a key, its kid in the header, as the provider would.
func sign(t *testing.T, k oidcpeer.Key, claims map[string]any) string {
	t.Helper()
	priv := k.Private()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Algorithm()), Key: priv.Key}, (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", k.KID()))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// unsigned is an "alg":"none" token (go-jose will not make one, rightly).
func unsigned(t *testing.T, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(string(payload)) + "."
}

// hsWithPublicKey is the HS/RS confusion: HS256 keyed with the issuer's RSA public key (PEM),
// which a verifier that takes the key for a secret would accept.
func hsWithPublicKey(t *testing.T, k oidcpeer.Key, claims map[string]any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public().Key)
	if err != nil {
		t.Fatal(err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, (&jose.SignerOptions{}).WithHeader("kid", k.KID()))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func headerKID(t *testing.T, tok string) string {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return parsed.Headers[0].KeyID
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
