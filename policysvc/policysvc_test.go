package policysvc_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
)

// shippedDir is the default policy bundle, which the tests also use as a fixture.
const shippedDir = "../examples/policies"

// testPolicies adds, to the shipped schema, a forbid by group and one by principal kind.
const testPolicies = `
@id("tenant-servers")
permit (principal, action == Gatehouse::Action::"initialize", resource is Gatehouse::Server)
when { resource.tenants.contains(principal.tenant) };

@id("tenant-tools")
permit (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.server.tenants.contains(principal.tenant) };

@id("contractors-may-not-delete")
forbid (
  principal in Gatehouse::Group::"contractors",
  action == Gatehouse::Action::"tools/call",
  resource == Gatehouse::Tool::"files/delete"
);

@id("anonymous-may-not-call-tools")
forbid (principal, action == Gatehouse::Action::"tools/call", resource)
when { principal.kind == "anonymous" };
`

// writeDir creates a policy directory holding files (name → content).
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func shippedSchema(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(shippedDir, "gatehouse.cedarschema"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testCatalog() *catalog.Catalog {
	return catalog.Static(
		&registryv1.Server{Name: "files", Tenants: []string{"acme"}},
		&registryv1.Server{Name: "search", Tenants: []string{"acme", "globex"}},
	)
}

// fakeClock is a manually advanced time source for the quota.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newService(t *testing.T, cfg policysvc.Config, cat policysvc.Catalog) *policysvc.Service {
	t.Helper()
	if cfg.PolicyDir == "" {
		cfg.PolicyDir = writeDir(t, map[string]string{"gatehouse.cedarschema": shippedSchema(t), "test.cedar": testPolicies})
	}
	if cat == nil {
		cat = testCatalog()
	}
	svc, err := policysvc.New(cfg, cat, nil, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

func check(svc *policysvc.Service, req *policyv1.CheckRequest) (*policyv1.CheckResponse, error) {
	resp, err := svc.Check(context.Background(), connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func subject(id, tenant string, groups ...string) *policyv1.Subject {
	return &policyv1.Subject{Id: id, Tenant: tenant, Kind: "user", Groups: groups}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	svc := newService(t, policysvc.Config{}, nil)
	allow, deny := policyv1.Decision_DECISION_ALLOW, policyv1.Decision_DECISION_DENY
	tests := []struct {
		name     string
		req      *policyv1.CheckRequest
		decision policyv1.Decision
		ids      []string
		code     connect.Code // non-zero: an error with this code
	}{
		{
			name:     "tenant opens approved server",
			req:      &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "initialize", Resource: &policyv1.Resource{Server: "files"}},
			decision: allow, ids: []string{"tenant-servers"},
		},
		{
			name:     "tenant calls tool on approved server",
			req:      &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "tools/call", Resource: &policyv1.Resource{Server: "files", Name: "read"}},
			decision: allow, ids: []string{"tenant-tools"},
		},
		{
			name:     "server approved for several tenants",
			req:      &policyv1.CheckRequest{Subject: subject("bob", "globex"), Action: "tools/call", Resource: &policyv1.Resource{Server: "search", Name: "query"}},
			decision: allow, ids: []string{"tenant-tools"},
		},
		{
			name:     "other tenant denied initialize",
			req:      &policyv1.CheckRequest{Subject: subject("bob", "globex"), Action: "initialize", Resource: &policyv1.Resource{Server: "files"}},
			decision: deny,
		},
		{
			name:     "other tenant denied tool",
			req:      &policyv1.CheckRequest{Subject: subject("bob", "globex"), Action: "tools/call", Resource: &policyv1.Resource{Server: "files", Name: "read"}},
			decision: deny,
		},
		{
			name:     "unknown server denied",
			req:      &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "initialize", Resource: &policyv1.Resource{Server: "nope"}},
			decision: deny,
		},
		{
			name:     "forbid by group overrides permit",
			req:      &policyv1.CheckRequest{Subject: subject("carol", "acme", "staff", "contractors"), Action: "tools/call", Resource: &policyv1.Resource{Server: "files", Name: "delete"}},
			decision: deny, ids: []string{"contractors-may-not-delete"},
		},
		{
			name:     "forbid by group does not touch other tools",
			req:      &policyv1.CheckRequest{Subject: subject("carol", "acme", "contractors"), Action: "tools/call", Resource: &policyv1.Resource{Server: "files", Name: "read"}},
			decision: allow, ids: []string{"tenant-tools"},
		},
		{
			name:     "forbid by kind",
			req:      &policyv1.CheckRequest{Subject: &policyv1.Subject{Id: "anon", Tenant: "acme", Kind: "anonymous"}, Action: "tools/call", Resource: &policyv1.Resource{Server: "files", Name: "read"}},
			decision: deny, ids: []string{"anonymous-may-not-call-tools"},
		},
		{
			name:     "action without a policy denied",
			req:      &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "prompts/get", Resource: &policyv1.Resource{Server: "files", Name: "p"}},
			decision: deny,
		},
		{name: "no subject", req: &policyv1.CheckRequest{Action: "initialize", Resource: &policyv1.Resource{Server: "files"}}, code: connect.CodeInvalidArgument},
		{name: "no subject id", req: &policyv1.CheckRequest{Subject: subject("", "acme"), Action: "initialize", Resource: &policyv1.Resource{Server: "files"}}, code: connect.CodeInvalidArgument},
		{name: "no tenant", req: &policyv1.CheckRequest{Subject: subject("alice", ""), Action: "initialize", Resource: &policyv1.Resource{Server: "files"}}, code: connect.CodeInvalidArgument},
		{name: "no action", req: &policyv1.CheckRequest{Subject: subject("alice", "acme"), Resource: &policyv1.Resource{Server: "files"}}, code: connect.CodeInvalidArgument},
		{name: "no server", req: &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "initialize"}, code: connect.CodeInvalidArgument},
		{name: "name on a server action", req: &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "initialize", Resource: &policyv1.Resource{Server: "files", Name: "x"}}, code: connect.CodeInvalidArgument},
		{name: "oversized id", req: &policyv1.CheckRequest{Subject: subject(strings.Repeat("a", 513), "acme"), Action: "initialize", Resource: &policyv1.Resource{Server: "files"}}, code: connect.CodeInvalidArgument},
		{name: "empty group", req: &policyv1.CheckRequest{Subject: subject("alice", "acme", ""), Action: "initialize", Resource: &policyv1.Resource{Server: "files"}}, code: connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := check(svc, tt.req)
			if tt.code != 0 {
				if connect.CodeOf(err) != tt.code {
					t.Fatalf("err = %v, want code %v", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if resp.GetDecision() != tt.decision {
				t.Errorf("decision = %v, want %v", resp.GetDecision(), tt.decision)
			}
			if !slices.Equal(resp.GetPolicyIds(), tt.ids) {
				t.Errorf("policy ids = %q, want %q", resp.GetPolicyIds(), tt.ids)
			}
			if resp.GetBundleVersion() != svc.BundleVersion() || !strings.HasPrefix(resp.GetBundleVersion(), "sha256:") {
				t.Errorf("bundle version = %q, want %q", resp.GetBundleVersion(), svc.BundleVersion())
			}
			if len(resp.GetErrors()) > 0 {
				t.Errorf("errors = %q", resp.GetErrors())
			}
		})
	}
}

// TestCheckSubjectChanges: the same principal id sent with other groups, another kind or
// another tenant is decided on what it is sent with, every time (the principal entity
// cache must not answer with the entity of an earlier Check).
func TestCheckSubjectChanges(t *testing.T) {
	t.Parallel()
	svc := newService(t, policysvc.Config{}, nil)
	allow, deny := policyv1.Decision_DECISION_ALLOW, policyv1.Decision_DECISION_DENY
	del := &policyv1.Resource{Server: "files", Name: "delete"}
	read := &policyv1.Resource{Server: "files", Name: "read"}
	steps := []struct {
		name     string
		sub      *policyv1.Subject
		res      *policyv1.Resource
		decision policyv1.Decision
	}{
		{"staff may delete", subject("carol", "acme", "staff"), del, allow},
		{"a contractor now", subject("carol", "acme", "staff", "contractors"), del, deny},
		{"staff again", subject("carol", "acme", "staff"), del, allow},
		{"same groups, another order", subject("carol", "acme", "contractors", "staff"), del, deny},
		{"anonymous now", &policyv1.Subject{Id: "carol", Tenant: "acme", Kind: "anonymous", Groups: []string{"staff"}}, read, deny},
		{"a user again", subject("carol", "acme", "staff"), read, allow},
		{"another tenant", subject("carol", "globex", "staff"), read, deny},
		{"back in acme", subject("carol", "acme", "staff"), read, allow},
	}
	for _, st := range steps {
		resp, err := check(svc, &policyv1.CheckRequest{Subject: st.sub, Action: "tools/call", Resource: st.res})
		if err != nil {
			t.Fatalf("%s: Check: %v", st.name, err)
		}
		if resp.GetDecision() != st.decision {
			t.Errorf("%s: decision = %v, want %v", st.name, resp.GetDecision(), st.decision)
		}
	}
}

// TestCheckCatalogUpdates: a change of a server's tenants is seen by the next Check.
func TestCheckCatalogUpdates(t *testing.T) {
	t.Parallel()
	cat := &swapCatalog{srv: &registryv1.Server{Name: "files", Tenants: []string{"acme"}}}
	svc := newService(t, policysvc.Config{}, cat)
	req := &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "initialize", Resource: &policyv1.Resource{Server: "files"}}
	for i, want := range []struct {
		tenants  []string
		decision policyv1.Decision
	}{
		{[]string{"acme"}, policyv1.Decision_DECISION_ALLOW},
		{[]string{"globex"}, policyv1.Decision_DECISION_DENY},
		{[]string{"globex", "acme"}, policyv1.Decision_DECISION_ALLOW},
	} {
		cat.set(&registryv1.Server{Name: "files", Tenants: want.tenants})
		resp, err := check(svc, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetDecision() != want.decision {
			t.Errorf("step %d (tenants %q): decision = %v, want %v", i, want.tenants, resp.GetDecision(), want.decision)
		}
	}
}

type swapCatalog struct {
	mu  sync.Mutex
	srv *registryv1.Server
}

func (c *swapCatalog) set(s *registryv1.Server) { c.mu.Lock(); c.srv = s; c.mu.Unlock() }

func (c *swapCatalog) Server(name string) (*registryv1.Server, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.srv, c.srv != nil && c.srv.GetName() == name
}

func TestCheckCatalogNotReady(t *testing.T) {
	t.Parallel()
	svc := newService(t, policysvc.Config{}, catalog.New())
	_, err := check(svc, &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "initialize", Resource: &policyv1.Resource{Server: "files"}})
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("err = %v, want Unavailable before the first registry snapshot", err)
	}
}

func TestQuota(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	svc := newService(t, policysvc.Config{QuotaRate: 1, QuotaBurst: 2, Clock: clock.Now}, nil)
	call := func(tenant, server string) (*policyv1.CheckResponse, error) {
		return check(svc, &policyv1.CheckRequest{Subject: subject("u", tenant), Action: "tools/call", Resource: &policyv1.Resource{Server: server, Name: "read"}})
	}
	steps := []struct {
		name     string
		advance  time.Duration
		tenant   string
		server   string
		decision policyv1.Decision
		code     connect.Code
	}{
		{name: "first token", tenant: "acme", server: "files", decision: policyv1.Decision_DECISION_ALLOW},
		{name: "second token", tenant: "acme", server: "files", decision: policyv1.Decision_DECISION_ALLOW},
		{name: "exhausted", tenant: "acme", server: "files", code: connect.CodeResourceExhausted},
		{name: "a denial costs nothing", tenant: "globex", server: "files", decision: policyv1.Decision_DECISION_DENY},
		{name: "other tenant has its own bucket", tenant: "globex", server: "search", decision: policyv1.Decision_DECISION_ALLOW},
		{name: "still exhausted just before refill", advance: 999 * time.Millisecond, tenant: "acme", server: "files", code: connect.CodeResourceExhausted},
		{name: "refilled one token", advance: time.Millisecond, tenant: "acme", server: "files", decision: policyv1.Decision_DECISION_ALLOW},
		{name: "and only one", tenant: "acme", server: "files", code: connect.CodeResourceExhausted},
		{name: "refill caps at burst", advance: time.Hour, tenant: "acme", server: "files", decision: policyv1.Decision_DECISION_ALLOW},
		{name: "second of burst", tenant: "acme", server: "files", decision: policyv1.Decision_DECISION_ALLOW},
		{name: "burst spent", tenant: "acme", server: "files", code: connect.CodeResourceExhausted},
	}
	for _, st := range steps {
		clock.Advance(st.advance)
		resp, err := call(st.tenant, st.server)
		if st.code != 0 {
			if connect.CodeOf(err) != st.code {
				t.Fatalf("%s: err = %v, want %v", st.name, err, st.code)
			}
			var ce *connect.Error
			if !errors.As(err, &ce) || !strings.Contains(ce.Message(), "quota") || !strings.Contains(ce.Message(), st.tenant) {
				t.Errorf("%s: message %q should say the tenant's quota is exhausted", st.name, ce.Message())
			}
			if ra := ce.Meta().Get("Retry-After"); ra == "" {
				t.Errorf("%s: no Retry-After", st.name)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if resp.GetDecision() != st.decision {
			t.Fatalf("%s: decision = %v, want %v", st.name, resp.GetDecision(), st.decision)
		}
	}
	// initialize never consumes the tools/call quota.
	resp, err := check(svc, &policyv1.CheckRequest{Subject: subject("u", "acme"), Action: "initialize", Resource: &policyv1.Resource{Server: "files"}})
	if err != nil || resp.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		t.Fatalf("initialize with an empty bucket: %v, %v", resp.GetDecision(), err)
	}
}

// TestCheckOverConnect serves the handler and checks what a remote caller sees, including
// the quota error's code and Retry-After header.
func TestCheckOverConnect(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	svc := newService(t, policysvc.Config{QuotaRate: 0.5, QuotaBurst: 1, Clock: clock.Now}, nil)
	mux := rpcserver.NewMux(svc.Handlers()...)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client := policyv1connect.NewPolicyServiceClient(srv.Client(), srv.URL)
	req := &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "tools/call", Resource: &policyv1.Resource{Server: "files", Name: "read"}}
	resp, err := client.Check(context.Background(), connect.NewRequest(req))
	if err != nil || resp.Msg.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		t.Fatalf("first call: %v %v", resp, err)
	}
	_, err = client.Check(context.Background(), connect.NewRequest(req))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
		t.Fatalf("second call: err = %v, want ResourceExhausted", err)
	}
	if got := ce.Meta().Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After = %q, want 2", got)
	}
	_, err = client.Check(context.Background(), connect.NewRequest(&policyv1.CheckRequest{Action: "tools/call"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("bad request: err = %v, want InvalidArgument", err)
	}
}

func TestCheckEvaluationErrors(t *testing.T) {
	t.Parallel()
	// Without a schema nothing is validated, so a policy can fail at evaluation time; the
	// failure is reported and the policy ignored, as Cedar specifies.
	dir := writeDir(t, map[string]string{"p.cedar": `
@id("broken") permit (principal, action, resource) when { resource.nope == 1 };
@id("fine") permit (principal, action == Gatehouse::Action::"initialize", resource);
`})
	svc := newService(t, policysvc.Config{PolicyDir: dir}, nil)
	resp, err := check(svc, &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "initialize", Resource: &policyv1.Resource{Server: "files"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDecision() != policyv1.Decision_DECISION_ALLOW || !slices.Equal(resp.GetPolicyIds(), []string{"fine"}) {
		t.Errorf("decision %v by %q, want ALLOW by fine", resp.GetDecision(), resp.GetPolicyIds())
	}
	if len(resp.GetErrors()) != 1 || !strings.Contains(resp.GetErrors()[0], "broken") {
		t.Errorf("errors = %q, want one naming policy broken", resp.GetErrors())
	}
}

func TestNewRejectsBadBundles(t *testing.T) {
	t.Parallel()
	schema := shippedSchema(t)
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error
	}{
		{
			name:  "syntax error",
			files: map[string]string{"gatehouse.cedarschema": schema, "ok.cedar": testPolicies, "bad.cedar": "permit (principal, action, resource) when { ;"},
			want:  []string{"bad.cedar"},
		},
		{
			name: "unknown attribute",
			files: map[string]string{"gatehouse.cedarschema": schema, "typo.cedar": "\n\n@id(\"typo\")\npermit (principal, action == Gatehouse::Action::\"initialize\", resource is Gatehouse::Server)\n" +
				"when { resource.tenant == principal.tenant };"},
			want: []string{"typo.cedar:3", "tenant"},
		},
		{
			name:  "unknown action",
			files: map[string]string{"gatehouse.cedarschema": schema, "a.cedar": `permit (principal, action == Gatehouse::Action::"tools/delete", resource);`},
			want:  []string{"a.cedar:1", "tools/delete"},
		},
		{
			name: "duplicate id",
			files: map[string]string{"gatehouse.cedarschema": schema,
				"a.cedar": `@id("same") permit (principal, action == Gatehouse::Action::"initialize", resource);`,
				"b.cedar": `@id("same") permit (principal, action == Gatehouse::Action::"initialize", resource);`},
			want: []string{`"same"`, "a.cedar:1", "b.cedar:1"},
		},
		{
			name:  "bad schema",
			files: map[string]string{"gatehouse.cedarschema": "entity {", "a.cedar": testPolicies},
			want:  []string{"gatehouse.cedarschema"},
		},
		{
			name:  "two schemas",
			files: map[string]string{"a.cedarschema": schema, "b.cedarschema": schema, "a.cedar": testPolicies},
			want:  []string{"more than one schema"},
		},
		{
			name:  "no policies",
			files: map[string]string{"gatehouse.cedarschema": schema, "README.md": "hello"},
			want:  []string{"no .cedar files"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := policysvc.New(policysvc.Config{PolicyDir: writeDir(t, tt.files)}, testCatalog(), nil, nil)
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			t.Logf("error: %v", err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	t.Run("missing dir", func(t *testing.T) {
		t.Parallel()
		_, err := policysvc.New(policysvc.Config{PolicyDir: filepath.Join(t.TempDir(), "nope")}, testCatalog(), nil, nil)
		if err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("err = %v, want one naming the directory", err)
		}
	})
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	if _, err := policysvc.New(policysvc.Config{PolicyDir: shippedDir, QuotaRate: -1}, testCatalog(), nil, nil); err == nil {
		t.Error("negative quota rate accepted")
	}
	if _, err := policysvc.New(policysvc.Config{PolicyDir: shippedDir}, nil, nil, nil); err == nil {
		t.Error("nil catalog accepted")
	}
}
