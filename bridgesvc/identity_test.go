package bridgesvc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc"
)

// whoamiUpstream is an in-process Go SDK server over Streamable HTTP that records the
// identity headers of every request it gets (POST, GET and DELETE), before the SDK sees it.
type whoamiUpstream struct {
	url string
	mu  sync.Mutex
	got []seen
}

type seen struct {
	method, auth, apiKey string
}

func startWhoamiUpstream(t *testing.T) *whoamiUpstream {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "whoami", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in struct {
		Text string `json:"text"`
	}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	u := &whoamiUpstream{}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{JSONResponse: true})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.got = append(u.got, seen{method: r.Method, auth: r.Header.Get("Authorization"), apiKey: r.Header.Get("X-Api-Key")})
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u.url = srv.URL + "/mcp"
	return u
}

func (u *whoamiUpstream) seen() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.got)
}

func httpServer(name, url string, id *registryv1.UpstreamIdentity) *registryv1.Server {
	return &registryv1.Server{Name: name, Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: url, Identity: id}
}

// caller is what the ingress says of who calls.
type caller struct {
	principal, tenant string
	groups            []string
	subject           string
}

// session runs initialize, the initialized notification and one call on a new session as
// the caller, then ends it; it returns the first error.
func session(ctx context.Context, b *bridge, id, server string, who caller) error {
	for _, msg := range []string{initializeReq, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, toolCall(2, "echo", `{"text":"hi"}`)} {
		err := b.svc.Deliver(ctx, &bridgev1.SendRequest{SessionId: id, Server: server, Message: []byte(msg),
			Principal: who.principal, Tenant: who.tenant, Groups: who.groups, SubjectToken: who.subject}, func(*bridgev1.SendResponse) error { return nil })
		if err != nil {
			return err
		}
	}
	b.svc.EndSession(id)
	return nil
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestIdentityStatic: a static secret from the bridge's environment or from a file reaches
// the upstream on every request, in the configured header and scheme; one that cannot be read
// fails the call before the upstream sees anything. (Not parallel: it sets the environment.)
func TestIdentityStatic(t *testing.T) {
	t.Setenv("BRIDGE_TEST_UPSTREAM_TOKEN", "env-secret-1")
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("file-secret-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "readable")
	if err := os.WriteFile(open, []byte("leaked"), 0o644); err != nil {
		t.Fatal(err)
	}
	up := startWhoamiUpstream(t)
	staticMode := func(ref *registryv1.SecretRef) *registryv1.UpstreamIdentity_Static {
		return &registryv1.UpstreamIdentity_Static{Static: &registryv1.StaticCredential{Secret: ref}}
	}
	b := newBridge(t, bridgesvc.Config{}, static(
		httpServer("env", up.url, &registryv1.UpstreamIdentity{Mode: staticMode(&registryv1.SecretRef{Env: "BRIDGE_TEST_UPSTREAM_TOKEN"})}),
		httpServer("file", up.url, &registryv1.UpstreamIdentity{Header: "X-Api-Key", Scheme: proto.String(""), Mode: staticMode(&registryv1.SecretRef{File: file})}),
		httpServer("unset", up.url, &registryv1.UpstreamIdentity{Mode: staticMode(&registryv1.SecretRef{Env: "BRIDGE_TEST_UNSET"})}),
		httpServer("open", up.url, &registryv1.UpstreamIdentity{Mode: staticMode(&registryv1.SecretRef{File: open})}),
		httpServer("none", up.url, nil),
	))
	ctx := testCtx(t)
	for _, tt := range []struct {
		server       string
		auth, apiKey string
	}{
		{"env", "Bearer env-secret-1", ""},
		{"file", "", "file-secret-2"},
		{"none", "", ""},
	} {
		before := len(up.seen())
		if err := session(ctx, b, "s-"+tt.server, tt.server, caller{principal: "p", tenant: "t"}); err != nil {
			t.Fatalf("%s: %v", tt.server, err)
		}
		got := up.seen()[before:]
		if len(got) < 3 {
			t.Fatalf("%s: the upstream saw %d requests", tt.server, len(got))
		}
		for _, s := range got {
			if s.auth != tt.auth || s.apiKey != tt.apiKey {
				t.Fatalf("%s: a %s carried Authorization %q, X-Api-Key %q; want %q, %q", tt.server, s.method, s.auth, s.apiKey, tt.auth, tt.apiKey)
			}
		}
		if !slices.ContainsFunc(got, func(s seen) bool { return s.method == http.MethodDelete }) {
			t.Fatalf("%s: no DELETE at the session's end", tt.server)
		}
	}
	for _, server := range []string{"unset", "open"} {
		before := len(up.seen())
		err := session(ctx, b, "s-"+server, server, caller{principal: "p", tenant: "t"})
		wantCode(t, err, connect.CodeFailedPrecondition, "the gateway cannot identify the caller to the upstream")
		if strings.Contains(err.Error(), "BRIDGE_TEST_UNSET") || strings.Contains(err.Error(), dir) {
			t.Fatalf("%s: the caller is told %q", server, err)
		}
		if n := len(up.seen()) - before; n != 0 {
			t.Fatalf("%s: the upstream saw %d requests without the credential", server, n)
		}
	}
}

// TestIdentityStaticStdio: a stdio child gets the secret in the variable its config names.
func TestIdentityStaticStdio(t *testing.T) {
	t.Setenv("BRIDGE_TEST_CHILD_SECRET", "child-secret-3")
	srv := helperServer(t, "child", "server")
	srv.Identity = &registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_Static{Static: &registryv1.StaticCredential{
		Secret: &registryv1.SecretRef{Env: "BRIDGE_TEST_CHILD_SECRET"}, ChildEnv: "API_TOKEN"}}}
	b := newBridge(t, bridgesvc.Config{}, static(srv))
	ctx := testCtx(t)
	if _, err := b.exchange(ctx, "s", "child", initializeReq, nil); err != nil {
		t.Fatal(err)
	}
	out, err := b.exchange(ctx, "s", "child", toolCall(2, "env", ""), nil)
	if err != nil || len(out) != 1 {
		t.Fatalf("env: %v %v", out, err)
	}
	if env := string(out[0].GetMessage()); !strings.Contains(env, `API_TOKEN=child-secret-3`) || strings.Contains(env, "BRIDGE_TEST_CHILD_SECRET") {
		t.Fatalf("the child's environment: %s", env)
	}
}

// fakeMinter stands in for authsvc (the bridge cannot import it; the real one is tested in
// authsvc and end to end): it records each request and answers with a token naming its
// number, or with err.
type fakeMinter struct {
	mu   sync.Mutex
	reqs []*authv1.MintUpstreamTokenRequest
	err  error
}

func (m *fakeMinter) MintUpstreamToken(_ context.Context, req *connect.Request[authv1.MintUpstreamTokenRequest]) (*connect.Response[authv1.MintUpstreamTokenResponse], error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	m.reqs = append(m.reqs, req.Msg)
	now := time.Now()
	return connect.NewResponse(&authv1.MintUpstreamTokenResponse{
		Token: fmt.Sprintf("minted-%d", len(m.reqs)), IssueTime: timestamppb.New(now), ExpireTime: timestamppb.New(now.Add(5 * time.Minute)),
	}), nil
}

// TestIdentityGatewayJWT: every request of the upstream session carries the token minted for
// the session's caller and the upstream (its URL unless configured), minted once and reused;
// without authsvc, or with authsvc down, the call fails before the upstream sees it.
func TestIdentityGatewayJWT(t *testing.T) {
	t.Parallel()
	up := startWhoamiUpstream(t)
	jwtServer := func(name string, g *registryv1.GatewayToken) *registryv1.Server {
		return httpServer(name, up.url, &registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_GatewayJwt{GatewayJwt: g}})
	}
	cat := static(jwtServer("jwt", &registryv1.GatewayToken{}), jwtServer("aud", &registryv1.GatewayToken{Audience: "urn:search", Ttl: durationpb.New(2 * time.Minute)}))
	m := &fakeMinter{}
	svc, err := bridgesvc.New(bridgesvc.Config{StdioGrace: 200 * time.Millisecond}, cat, quietLogger(), bridgesvc.WithUpstreamTokens(m))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	b := &bridge{svc: svc}
	ctx := testCtx(t)
	who := caller{principal: "alice", tenant: "acme", groups: []string{"ops"}}
	if err := session(ctx, b, "s1", "jwt", who); err != nil {
		t.Fatal(err)
	}
	for _, s := range up.seen() {
		if s.auth != "Bearer minted-1" {
			t.Fatalf("a %s carried %q, want the minted token", s.method, s.auth)
		}
	}
	if err := session(ctx, b, "s2", "aud", who); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	reqs := slices.Clone(m.reqs)
	m.mu.Unlock()
	want := []*authv1.MintUpstreamTokenRequest{
		{PrincipalId: "alice", Tenant: "acme", Groups: []string{"ops"}, Audience: up.url},
		{PrincipalId: "alice", Tenant: "acme", Groups: []string{"ops"}, Audience: "urn:search", TtlSeconds: 120},
	}
	if len(reqs) != len(want) {
		t.Fatalf("%d mints for two sessions of many requests, want one per audience: %v", len(reqs), reqs)
	}
	for i := range want {
		if !proto.Equal(reqs[i], want[i]) {
			t.Fatalf("mint %d: %v, want %v", i, reqs[i], want[i])
		}
	}

	// authsvc refusing to answer: Unavailable, and nothing reached the upstream.
	m.mu.Lock()
	m.err = connect.NewError(connect.CodeUnavailable, errors.New("etcd down"))
	m.mu.Unlock()
	before := len(up.seen())
	err = session(ctx, b, "s3", "jwt", caller{principal: "bob", tenant: "acme"})
	wantCode(t, err, connect.CodeUnavailable, "the gateway cannot identify the caller to the upstream now")
	if len(up.seen()) != before {
		t.Fatal("the upstream saw a request without its token")
	}

	// A bridge without authsvc cannot call a gateway-jwt server.
	plain := newBridge(t, bridgesvc.Config{}, cat)
	wantCode(t, session(ctx, plain, "s4", "jwt", who), connect.CodeFailedPrecondition, "the gateway cannot identify the caller to the upstream")
}

// authServer is a token endpoint that speaks RFC 8693 the way the test says: it records each
// request and answers with answer(n), n counting from 1.
type authServer struct {
	url    string
	mu     sync.Mutex
	forms  []url.Values
	answer func(n int, w http.ResponseWriter)
}

func startAuthServer(t *testing.T, answer func(n int, w http.ResponseWriter)) *authServer {
	t.Helper()
	a := &authServer{answer: answer}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if err := r.ParseForm(); err != nil || !ok || id != "gatehouse" || secret != "client-secret" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		a.mu.Lock()
		a.forms = append(a.forms, r.PostForm)
		n := len(a.forms)
		a.mu.Unlock()
		a.answer(n, w)
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL + "/token"
	return a
}

func (a *authServer) requests() []url.Values {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.forms)
}

func tokenResponse(token string, expiresIn int) func(int, http.ResponseWriter) {
	return func(n int, w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("%s-%d", token, n), "token_type": "Bearer",
			"issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "expires_in": expiresIn})
	}
}

// TestIdentityTokenExchange: the host's token is exchanged (RFC 8693, client_secret_basic)
// for the upstream's, which every request of the session carries, its DELETE included;
// exchanged tokens are cached per subject token; a message without a subject token, a refused
// exchange and a broken authorization server each fail the call before the upstream sees it.
func TestIdentityTokenExchange(t *testing.T) {
	t.Setenv("BRIDGE_TEST_CLIENT_SECRET", "client-secret")
	up := startWhoamiUpstream(t)
	good := startAuthServer(t, tokenResponse("exchanged", 300))
	refusing := startAuthServer(t, func(_ int, w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"subject token expired"}`))
	})
	broken := startAuthServer(t, func(_ int, w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"a\r\nX-Injected: 1","token_type":"Bearer","expires_in":300}`))
	})
	exchange := func(name, endpoint string) *registryv1.Server {
		return httpServer(name, up.url, &registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_TokenExchange{TokenExchange: &registryv1.TokenExchange{
			TokenEndpoint: endpoint, ClientId: "gatehouse", ClientSecret: &registryv1.SecretRef{Env: "BRIDGE_TEST_CLIENT_SECRET"}, Scope: "read"}}})
	}
	b := newBridge(t, bridgesvc.Config{}, static(exchange("up", good.url), exchange("refusing", refusing.url), exchange("broken", broken.url)))
	ctx := testCtx(t)
	alice := caller{principal: "alice", tenant: "acme", subject: "host-token-alice"}
	if err := session(ctx, b, "s1", "up", alice); err != nil {
		t.Fatal(err)
	}
	got := up.seen()
	if len(got) < 4 || !slices.ContainsFunc(got, func(s seen) bool { return s.method == http.MethodDelete }) {
		t.Fatalf("the upstream saw %v, want initialize, the notification, the call and the DELETE", got)
	}
	for _, s := range got {
		if s.auth != "Bearer exchanged-1" {
			t.Fatalf("a %s carried %q, want the exchanged token", s.method, s.auth)
		}
	}
	forms := good.requests()
	if len(forms) != 1 {
		t.Fatalf("%d exchanges for one subject token, want 1", len(forms))
	}
	f := forms[0]
	for k, v := range map[string]string{
		"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": "host-token-alice",
		"subject_token_type": "urn:ietf:params:oauth:token-type:access_token", "audience": up.url, "scope": "read",
	} {
		if f.Get(k) != v {
			t.Fatalf("exchange request %s = %q, want %q (%v)", k, f.Get(k), v, f)
		}
	}
	// Another subject token is another exchange; the same one is served from the cache.
	if err := session(ctx, b, "s2", "up", caller{principal: "bob", tenant: "acme", subject: "host-token-bob"}); err != nil {
		t.Fatal(err)
	}
	if err := session(ctx, b, "s3", "up", alice); err != nil {
		t.Fatal(err)
	}
	if n := len(good.requests()); n != 2 {
		t.Fatalf("%d exchanges for two subject tokens, want 2", n)
	}

	for _, tt := range []struct {
		name, server string
		who          caller
		code         connect.Code
		msg          string
	}{
		{"no subject token", "up", caller{principal: "carol", tenant: "acme"}, connect.CodeFailedPrecondition, "carries no OpenID Connect token"},
		{"refused", "refusing", alice, connect.CodePermissionDenied, "refused to exchange the caller's token"},
		{"a token a header cannot carry", "broken", alice, connect.CodeUnavailable, "cannot identify the caller to the upstream now"},
	} {
		before := len(up.seen())
		err := session(ctx, b, "x-"+tt.name, tt.server, tt.who)
		wantCode(t, err, tt.code, tt.msg)
		if strings.Contains(err.Error(), "host-token") {
			t.Fatalf("%s: the error holds the subject token: %v", tt.name, err)
		}
		if n := len(up.seen()) - before; n != 0 {
			t.Fatalf("%s: the upstream saw %d requests", tt.name, n)
		}
	}
	if bytes.Contains([]byte(fmt.Sprint(up.seen())), []byte("host-token")) {
		t.Fatal("the host's token reached the upstream")
	}
}
