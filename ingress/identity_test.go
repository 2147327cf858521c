package ingress_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
)

// TestSubjectTokenOnlyForExchange: the host's own token reaches the bridge only with the
// messages for a server that exchanges it, and only when it is an OpenID Connect token; every
// other message carries none.
func TestSubjectTokenOnlyForExchange(t *testing.T) {
	g := newGateway(t, nil)
	sid := g.initialize(serverExchange, tokenOIDC, rev)
	h := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": rev, "Authorization": "Bearer " + tokenOIDC}
	if r := g.do(http.MethodPost, serverExchange, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, h); r.status != http.StatusAccepted {
		t.Fatalf("notification: %d %s", r.status, r.body)
	}
	if r := g.do(http.MethodPost, serverExchange, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{}}}`, h); r.status != http.StatusOK || r.code != 0 {
		t.Fatalf("tools/call: %d %s", r.status, r.body)
	}
	openStream(t, g, serverExchange, sid, tokenOIDC)
	other := g.initialize("echo", tokenOIDC, rev)
	if r := g.do(http.MethodPost, "echo", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{}}}`,
		map[string]string{"Mcp-Session-Id": other, "Authorization": "Bearer " + tokenOIDC}); r.code != 0 {
		t.Fatalf("tools/call on echo: %s", r.body)
	}

	exchanged := 0
	for _, req := range g.bridge.calls() {
		switch req.GetServer() {
		case serverExchange:
			exchanged++
			if req.GetSubjectToken() != tokenOIDC {
				t.Errorf("a message for %s carried subject token %q, want the host's", serverExchange, req.GetSubjectToken())
			}
		default:
			if req.GetSubjectToken() != "" {
				t.Errorf("a message for %s carried the host's token", req.GetServer())
			}
		}
		if req.GetPrincipal() != "erin" || !slices.Equal(req.GetGroups(), []string{"ops"}) {
			t.Errorf("request for %s: principal %q groups %v, want erin [ops]", req.GetServer(), req.GetPrincipal(), req.GetGroups())
		}
	}
	if exchanged != 3 {
		t.Fatalf("%d messages for %s reached the bridge, want initialize, the notification and the call", exchanged, serverExchange)
	}
	g.bridge.mu.Lock()
	listens := slices.Clone(g.bridge.listens)
	g.bridge.mu.Unlock()
	if len(listens) != 1 || listens[0].GetSubjectToken() != tokenOIDC {
		t.Fatalf("Listen requests %v, want one carrying the host's token", listens)
	}
}

// TestExchangeNeedsOIDC: a host that authenticated with anything but an OpenID Connect token
// cannot use a token-exchange server, and the bridge never hears of it.
func TestExchangeNeedsOIDC(t *testing.T) {
	g := newGateway(t, nil)
	r := g.do(http.MethodPost, serverExchange, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`, nil)
	if r.status != http.StatusForbidden || !strings.Contains(r.msg, "OpenID Connect token") {
		t.Fatalf("initialize with an API token: %d %s", r.status, r.body)
	}
	if n := len(g.bridge.calls()); n != 0 {
		t.Fatalf("the bridge got %d messages", n)
	}
}

// jwksAuth is the fake authsvc with a key set, or down.
type jwksAuth struct {
	fakeAuth
	mu   sync.Mutex
	doc  string
	down bool
}

func (a *jwksAuth) JWKS(context.Context, *connect.Request[authv1.JWKSRequest]) (*connect.Response[authv1.JWKSResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("etcd at 10.0.0.7 down"))
	}
	return connect.NewResponse(&authv1.JWKSResponse{Jwks: a.doc}), nil
}

// TestJWKS: the key set authsvc gives is published as is, public and cacheable; without it the
// answer is 503 with Retry-After, never an empty set a verifier would cache.
func TestJWKS(t *testing.T) {
	auth := &jwksAuth{doc: `{"keys":[{"kty":"EC","kid":"k1"}]}`}
	srv := jwksGateway(t, auth)
	resp, err := http.Get(srv + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || body != auth.doc || resp.Header.Get("Content-Type") != "application/jwk-set+json" ||
		resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.HasPrefix(resp.Header.Get("Cache-Control"), "public, max-age=") {
		t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
	}

	resp, err = http.Get(jwksGateway(t, &jwksAuth{down: true}) + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	body = readAll(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || strings.Contains(body, "10.0.0.7") {
		t.Fatalf("authsvc down: %d %v %q", resp.StatusCode, resp.Header, body)
	}
}

// jwksGateway serves an ingress whose authsvc is auth and returns its base URL.
func jwksGateway(t *testing.T, auth *jwksAuth) string {
	t.Helper()
	svc, err := ingress.New(ingress.Config{AllowedHosts: "127.0.0.1", MaxBodyBytes: 1 << 10}, ingress.Deps{Auth: auth, Policy: fakePolicy{}, Bridge: newFakeBridge(), Audit: newFakeAudit(),
		Catalog: fakeCatalog{}, Sessions: &fakeSessions{records: map[string]sessionstore.Record{}}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetReady(true)
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
