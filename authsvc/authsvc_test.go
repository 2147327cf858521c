package authsvc_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/authsvc"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// shared is the package's embedded etcd; tests keep apart by key prefix.
var shared *etcdtest.Etcd

func TestMain(m *testing.M) { os.Exit(etcdtest.Main(m, &shared)) }

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type fixture struct {
	svc    *authsvc.Service
	clock  *clock
	prefix string
	logs   *testsync.Buffer
}

// newFixture returns a service on the test's own prefix of the shared etcd, with a settable
// clock and its logs captured.
func newFixture(t *testing.T, cfg authsvc.Config) *fixture {
	t.Helper()
	f := &fixture{clock: newClock(), prefix: etcdtest.Prefix(t), logs: &testsync.Buffer{}}
	cfg.KeyPrefix = f.prefix
	cfg.Clock = f.clock.Now
	svc, err := authsvc.New(cfg, shared.Client, slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	f.svc = svc
	return f
}

func (f *fixture) create(t *testing.T, req *authv1.CreateTokenRequest) *authv1.CreateTokenResponse {
	t.Helper()
	resp, err := f.svc.CreateToken(testContext(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return resp.Msg
}

func (f *fixture) authenticate(t *testing.T, credential, server string) (*authv1.Principal, error) {
	t.Helper()
	resp, err := f.svc.Authenticate(testContext(t), connect.NewRequest(&authv1.AuthenticateRequest{Credential: credential, Server: server}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetPrincipal(), nil
}

// wantCode fails unless err has the code and, when given, a message containing msg.
func wantCode(t *testing.T, err error, code connect.Code, msg string) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("err = %v, want %v", err, code)
	}
	if msg != "" && !strings.Contains(err.Error(), msg) {
		t.Fatalf("err = %v, want a message containing %q", err, msg)
	}
}

func TestTokenLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	created := f.create(t, &authv1.CreateTokenRequest{
		PrincipalId: "alice@example.com", Tenant: "acme", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE,
		Groups: []string{"ops", "dev", "ops"},
	})
	if !strings.HasPrefix(created.GetToken(), authsvc.TokenPrefix) || len(created.GetToken()) != len(authsvc.TokenPrefix)+43 {
		t.Fatalf("generated token %q: want %s and 43 base64url characters", created.GetToken(), authsvc.TokenPrefix)
	}
	if created.GetTokenId() == "" {
		t.Fatal("no token id")
	}
	other := f.create(t, &authv1.CreateTokenRequest{PrincipalId: "bob", Tenant: "acme"})
	if other.GetToken() == created.GetToken() || other.GetTokenId() == created.GetTokenId() {
		t.Fatal("two tokens alike")
	}

	p, err := f.authenticate(t, created.GetToken(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	if p.GetId() != "alice@example.com" || p.GetTenant() != "acme" || p.GetKind() != authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE ||
		!slices.Equal(p.GetGroups(), []string{"dev", "ops"}) || p.GetExpireTime() != nil || p.GetAttributes()["token_id"] != created.GetTokenId() {
		t.Fatalf("principal %v", p)
	}
	if p, err := f.authenticate(t, other.GetToken(), ""); err != nil || p.GetKind() != authv1.PrincipalKind_PRINCIPAL_KIND_USER {
		t.Fatalf("a token without a kind: %v, %v; want a user", p, err)
	}

	if _, err := f.svc.RevokeToken(testContext(t), connect.NewRequest(&authv1.RevokeTokenRequest{TokenId: created.GetTokenId()})); err != nil {
		t.Fatal(err)
	}
	_, err = f.authenticate(t, created.GetToken(), "echo")
	wantCode(t, err, connect.CodeUnauthenticated, "unknown or revoked token")
	_, err = f.svc.RevokeToken(testContext(t), connect.NewRequest(&authv1.RevokeTokenRequest{TokenId: created.GetTokenId()}))
	wantCode(t, err, connect.CodeNotFound, "")
	// The other token is untouched.
	if _, err := f.authenticate(t, other.GetToken(), "echo"); err != nil {
		t.Fatalf("another token after a revocation: %v", err)
	}
	for _, id := range []string{"", "a/b", strings.Repeat("x", 129)} {
		_, err = f.svc.RevokeToken(testContext(t), connect.NewRequest(&authv1.RevokeTokenRequest{TokenId: id}))
		wantCode(t, err, connect.CodeInvalidArgument, "token_id")
	}
}

func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	start := f.clock.Now()
	created := f.create(t, &authv1.CreateTokenRequest{PrincipalId: "alice", Tenant: "acme", TtlSeconds: 60})

	f.clock.Advance(59 * time.Second)
	p, err := f.authenticate(t, created.GetToken(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.GetExpireTime().AsTime(); !got.Equal(start.Add(60 * time.Second)) {
		t.Fatalf("expire_time %v, want %v", got, start.Add(60*time.Second))
	}
	f.clock.Advance(time.Second)
	_, err = f.authenticate(t, created.GetToken(), "echo")
	wantCode(t, err, connect.CodeUnauthenticated, "token expired")

	// etcd removes the keys by itself some time after expiry: they carry a lease.
	resp, err := shared.Client.Get(testContext(t), f.prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 2 {
		t.Fatalf("%d keys, want 2", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		if kv.Lease == 0 {
			t.Errorf("key %s of an expiring token has no lease", kv.Key)
		}
	}
}

func TestBadCredentials(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{AnonymousServers: "echo"})
	tests := []struct {
		name, credential, server string
		code                     connect.Code
		msg                      string
	}{
		{"none", "", "other", connect.CodeUnauthenticated, "no credential"},
		{"unknown", "gh_not-a-real-token-at-all", "echo", connect.CodeUnauthenticated, "unknown or revoked token"},
		{"unknown at the size limit", strings.Repeat("x", authsvc.MaxTokenBytes), "echo", connect.CodeUnauthenticated, "unknown"},
		{"oversized", strings.Repeat("x", authsvc.MaxTokenBytes+1), "echo", connect.CodeUnauthenticated, "longer than 4096 bytes"},
		{"huge", strings.Repeat("x", 1<<20), "echo", connect.CodeUnauthenticated, "longer than"},
		{"oversized server", "", strings.Repeat("s", 257), connect.CodeInvalidArgument, "server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := f.authenticate(t, tt.credential, tt.server)
			wantCode(t, err, tt.code, tt.msg)
		})
	}
}

func TestAnonymous(t *testing.T) {
	t.Parallel()
	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, authsvc.Config{})
		for _, server := range []string{"echo", "", "anonymous"} {
			_, err := f.authenticate(t, "", server)
			wantCode(t, err, connect.CodeUnauthenticated, "no credential")
		}
	})
	t.Run("listed servers only", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, authsvc.Config{AnonymousServers: " echo, docs ,,"})
		for _, server := range []string{"echo", "docs"} {
			p, err := f.authenticate(t, "", server)
			if err != nil {
				t.Fatalf("%s: %v", server, err)
			}
			if p.GetId() != "anonymous" || p.GetTenant() != "default" || p.GetKind() != authv1.PrincipalKind_PRINCIPAL_KIND_ANONYMOUS {
				t.Fatalf("anonymous principal %v", p)
			}
		}
		for _, server := range []string{"other", "", "ECHO"} {
			_, err := f.authenticate(t, "", server)
			wantCode(t, err, connect.CodeUnauthenticated, "no credential")
		}
		// A credential that fails is refused, not downgraded to anonymous.
		_, err := f.authenticate(t, "gh_wrong-token-value-here", "echo")
		wantCode(t, err, connect.CodeUnauthenticated, "unknown")
	})
	t.Run("custom principal", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, authsvc.Config{AnonymousServers: "echo", AnonymousPrincipal: "guest", AnonymousTenant: "public"})
		p, err := f.authenticate(t, "", "echo")
		if err != nil || p.GetId() != "guest" || p.GetTenant() != "public" {
			t.Fatalf("%v, %v", p, err)
		}
	})
}

func TestExplicitToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	const dev = "dev-token-0123456789"
	created := f.create(t, &authv1.CreateTokenRequest{PrincipalId: "dev", Tenant: "default", Token: dev})
	if created.GetToken() != dev {
		t.Fatalf("token %q, want the explicit one", created.GetToken())
	}
	if p, err := f.authenticate(t, dev, "echo"); err != nil || p.GetId() != "dev" {
		t.Fatalf("%v, %v", p, err)
	}
	// The same value again, for anyone, is refused: it would take over the first principal.
	_, err := f.svc.CreateToken(testContext(t), connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "mallory", Tenant: "other", Token: dev}))
	wantCode(t, err, connect.CodeAlreadyExists, "")
	if p, err := f.authenticate(t, dev, "echo"); err != nil || p.GetId() != "dev" {
		t.Fatalf("after a refused duplicate: %v, %v", p, err)
	}
	// A refused duplicate with a lifetime leaves no lease or key behind.
	_, err = f.svc.CreateToken(testContext(t), connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "dev", Tenant: "default", Token: dev, TtlSeconds: 60}))
	wantCode(t, err, connect.CodeAlreadyExists, "")
	resp, err := shared.Client.Get(testContext(t), f.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 2 {
		t.Fatalf("%d keys (%v), want 2", resp.Count, err)
	}
}

func TestCreateTokenValidation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	valid := func(mod func(*authv1.CreateTokenRequest)) *authv1.CreateTokenRequest {
		r := &authv1.CreateTokenRequest{PrincipalId: "alice", Tenant: "acme"}
		mod(r)
		return r
	}
	groups := make([]string, 65)
	for i := range groups {
		groups[i] = "g"
	}
	tests := []struct {
		name string
		req  *authv1.CreateTokenRequest
		msg  string
	}{
		{"no principal", valid(func(r *authv1.CreateTokenRequest) { r.PrincipalId = "" }), "principal_id is required"},
		{"principal with a slash", valid(func(r *authv1.CreateTokenRequest) { r.PrincipalId = "a/b" }), "principal_id"},
		{"principal with a space", valid(func(r *authv1.CreateTokenRequest) { r.PrincipalId = "a b" }), "principal_id"},
		{"principal too long", valid(func(r *authv1.CreateTokenRequest) { r.PrincipalId = strings.Repeat("a", 129) }), "principal_id"},
		{"no tenant", valid(func(r *authv1.CreateTokenRequest) { r.Tenant = "" }), "tenant is required"},
		{"tenant with a colon", valid(func(r *authv1.CreateTokenRequest) { r.Tenant = "a:b" }), "tenant"},
		{"empty group", valid(func(r *authv1.CreateTokenRequest) { r.Groups = []string{"ok", ""} }), "groups[1]"},
		{"too many groups", valid(func(r *authv1.CreateTokenRequest) { r.Groups = groups }), "groups"},
		{"anonymous kind", valid(func(r *authv1.CreateTokenRequest) { r.Kind = authv1.PrincipalKind_PRINCIPAL_KIND_ANONYMOUS }), "kind"},
		{"unknown kind", valid(func(r *authv1.CreateTokenRequest) { r.Kind = 42 }), "kind"},
		{"negative ttl", valid(func(r *authv1.CreateTokenRequest) { r.TtlSeconds = -1 }), "ttl_seconds"},
		{"ttl too long", valid(func(r *authv1.CreateTokenRequest) { r.TtlSeconds = int64(authsvc.MaxTTL/time.Second) + 1 }), "ttl_seconds"},
		{"short token", valid(func(r *authv1.CreateTokenRequest) { r.Token = "short-token-1234"[:15] }), "token"},
		{"token shaped like a JWT", valid(func(r *authv1.CreateTokenRequest) { r.Token = "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl" }), "shape of a JWT"},
		{"token with a space", valid(func(r *authv1.CreateTokenRequest) { r.Token = "a token with spaces" }), "visible ASCII"},
		{"token with non-ASCII", valid(func(r *authv1.CreateTokenRequest) { r.Token = "tökentökentökentöken" }), "visible ASCII"},
		{"token too long", valid(func(r *authv1.CreateTokenRequest) { r.Token = strings.Repeat("t", authsvc.MaxTokenBytes+1) }), "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := f.svc.CreateToken(testContext(t), connect.NewRequest(tt.req))
			wantCode(t, err, connect.CodeInvalidArgument, tt.msg)
		})
	}
	resp, err := shared.Client.Get(testContext(t), f.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("refused requests wrote %d keys (%v)", resp.Count, err)
	}
}

// TestStoredForm: etcd holds the digest and the record, never the token, and the logs never
// show it either.
func TestStoredForm(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	created := f.create(t, &authv1.CreateTokenRequest{PrincipalId: "alice", Tenant: "acme", Groups: []string{"ops"}, TtlSeconds: 3600})
	token := created.GetToken()
	if _, err := f.authenticate(t, token, "echo"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.authenticate(t, token+"x", "echo"); err == nil {
		t.Fatal("a wrong token authenticated")
	}

	sum := sha256.Sum256([]byte(token))
	digest := hex.EncodeToString(sum[:])
	resp, err := shared.Client.Get(testContext(t), f.prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
		if strings.Contains(string(kv.Key), token) || strings.Contains(string(kv.Value), token) {
			t.Fatalf("etcd holds the token in %s", kv.Key)
		}
	}
	if len(got) != 2 || got[f.prefix+"ids/"+created.GetTokenId()] != digest {
		t.Fatalf("stored keys %v, want tokens/%s and ids/%s", got, digest, created.GetTokenId())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(got[f.prefix+"tokens/"+digest]), &rec); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"token_id", "principal_id", "tenant", "kind", "groups", "expire_time"} {
		if _, ok := rec[field]; !ok {
			t.Errorf("record %v has no %s", rec, field)
		}
	}
	if rec["token_id"] != created.GetTokenId() || rec["principal_id"] != "alice" || rec["tenant"] != "acme" {
		t.Errorf("record %v", rec)
	}

	if _, err := f.svc.RevokeToken(testContext(t), connect.NewRequest(&authv1.RevokeTokenRequest{TokenId: created.GetTokenId()})); err != nil {
		t.Fatal(err)
	}
	if resp, err := shared.Client.Get(testContext(t), f.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("after revocation %d keys remain (%v)", resp.Count, err)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, created.GetTokenId()) {
		t.Fatalf("logs do not mention the token id:\n%s", logs)
	}
	if strings.Contains(logs, token) || strings.Contains(logs, token[len(authsvc.TokenPrefix):]) {
		t.Fatalf("logs contain the token:\n%s", logs)
	}
}

// failingEtcd answers every read with an error, like an etcd without a leader.
type failingEtcd struct{ authsvc.Etcd }

func (failingEtcd) Get(context.Context, string, ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	return nil, errors.New("etcdserver: no leader")
}

// TestStoreDown: when etcd cannot answer, a credential is neither accepted nor called wrong:
// Unavailable, so the ingress fails closed and may retry.
func TestStoreDown(t *testing.T) {
	t.Parallel()
	svc, err := authsvc.New(authsvc.Config{KeyPrefix: etcdtest.Prefix(t)}, failingEtcd{shared.Client}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.Authenticate(testContext(t), connect.NewRequest(&authv1.AuthenticateRequest{Credential: "gh_some-token-value-x", Server: "echo"}))
	wantCode(t, err, connect.CodeUnavailable, "token store unavailable")
	_, err = svc.RevokeToken(testContext(t), connect.NewRequest(&authv1.RevokeTokenRequest{TokenId: "abc"}))
	wantCode(t, err, connect.CodeUnavailable, "")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = svc.Authenticate(ctx, connect.NewRequest(&authv1.AuthenticateRequest{Credential: "gh_some-token-value-x"}))
	wantCode(t, err, connect.CodeCanceled, "")
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  authsvc.Config
		kv   authsvc.Etcd
		msg  string
	}{
		{"no etcd", authsvc.Config{}, nil, "etcd client is required"},
		{"bad anonymous server", authsvc.Config{AnonymousServers: "echo,Bad Name"}, shared.Client, `"Bad Name"`},
		{"bad anonymous principal", authsvc.Config{AnonymousPrincipal: "a b"}, shared.Client, "anonymous principal"},
		{"bad anonymous tenant", authsvc.Config{AnonymousTenant: "a/b"}, shared.Client, "anonymous tenant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := authsvc.New(tt.cfg, tt.kv, nil)
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.msg)
			}
		})
	}
}

// TestOverConnect drives the service through its mounted handler over h2c, as the ingress
// and `gatehouse up` do, so the codes and messages are the ones on the wire.
func TestOverConnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{AnonymousServers: "echo"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rpcserver.NewServer(rpcserver.NewMux(f.svc.Handlers()...))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	client := authv1connect.NewAuthServiceClient(rpcserver.NewClient(), rpcserver.BaseURL(ln.Addr().String()))
	ctx := testContext(t)

	created, err := client.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "alice", Tenant: "acme", TtlSeconds: 10}))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Authenticate(ctx, connect.NewRequest(&authv1.AuthenticateRequest{Credential: created.Msg.GetToken(), Server: "echo"}))
	if err != nil || resp.Msg.GetPrincipal().GetId() != "alice" {
		t.Fatalf("%v, %v", resp, err)
	}
	f.clock.Advance(10 * time.Second)
	_, err = client.Authenticate(ctx, connect.NewRequest(&authv1.AuthenticateRequest{Credential: created.Msg.GetToken(), Server: "echo"}))
	wantCode(t, err, connect.CodeUnauthenticated, "token expired")
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Message() != "token expired" {
		t.Fatalf("wire message %q, want %q", ce.Message(), "token expired")
	}
	_, err = client.Authenticate(ctx, connect.NewRequest(&authv1.AuthenticateRequest{Server: "other"}))
	wantCode(t, err, connect.CodeUnauthenticated, "no credential")
	_, err = client.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "alice", Tenant: "acme", Token: strings.Repeat("x", 40<<10)}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted && connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("oversized request: %v", err)
	}
}
