package policysvc_test

import (
	"context"
	"errors"
	"math"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
)

// never is a refill rate no test lives long enough to see: a bucket holds its burst, then
// nothing.
const never = 1e-6

// quotaService is a service whose policies allow everything, so that only quotas refuse.
func quotaService(t *testing.T, q *policysvc.QuotaConfig, clock *fakeClock) *policysvc.Service {
	t.Helper()
	dir := writeDir(t, map[string]string{"gatehouse.cedarschema": shippedSchema(t), "all.cedar": `permit (principal, action, resource);`})
	cfg := policysvc.Config{PolicyDir: dir, Quotas: q}
	if clock != nil {
		cfg.Clock = clock.Now
	}
	return newService(t, cfg, nil)
}

// toolCall is a tools/call Check by principal id of tenant on server's tool, from source.
func toolCall(id, tenant, kind, server, tool, source string) *policyv1.CheckRequest {
	return &policyv1.CheckRequest{
		Subject:  &policyv1.Subject{Id: id, Tenant: tenant, Kind: kind},
		Action:   "tools/call",
		Resource: &policyv1.Resource{Server: server, Name: tool},
		Context:  &policyv1.RequestContext{SourceAddress: source},
	}
}

// exceeded is the QuotaExceeded detail of a refusal; it fails the test when err is not one.
func exceeded(t *testing.T, err error) *policyv1.QuotaExceeded {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
		t.Fatalf("err = %v, want ResourceExhausted", err)
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if q, ok := v.(*policyv1.QuotaExceeded); ok && derr == nil {
			return q
		}
	}
	t.Fatalf("refusal %v carries no QuotaExceeded detail", err)
	return nil
}

// spend checks req n times, each allowed, then once more, refused; it returns the refusal.
func spend(t *testing.T, svc *policysvc.Service, req *policyv1.CheckRequest, n int) *policyv1.QuotaExceeded {
	t.Helper()
	for i := range n {
		if resp, err := check(svc, req); err != nil || resp.GetDecision() != policyv1.Decision_DECISION_ALLOW {
			t.Fatalf("call %d of %d: %v, %v", i+1, n, resp.GetDecision(), err)
		}
	}
	_, err := check(svc, req)
	return exceeded(t, err)
}

func allowed(t *testing.T, svc *policysvc.Service, req *policyv1.CheckRequest) *policyv1.CheckResponse {
	t.Helper()
	resp, err := check(svc, req)
	if err != nil || resp.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		t.Fatalf("%v: %v, %v", req.GetSubject(), resp.GetDecision(), err)
	}
	return resp
}

// TestQuotaFamilies: each family of buckets admits exactly its burst, names itself when it
// refuses, and leaves the other keys of its family alone.
func TestQuotaFamilies(t *testing.T) {
	t.Parallel()
	l := &policysvc.QuotaLimit{Rate: never, Burst: 3}
	tests := []struct {
		name  string
		cfg   policysvc.QuotaConfig
		req   *policyv1.CheckRequest
		other *policyv1.CheckRequest // another key of the same family: unaffected
	}{
		{"tenant", policysvc.QuotaConfig{Tenant: l}, toolCall("alice", "acme", "user", "files", "read", "10.0.0.1"), toolCall("alice", "globex", "user", "files", "read", "10.0.0.1")},
		{"principal", policysvc.QuotaConfig{Principal: l}, toolCall("alice", "acme", "user", "files", "read", "10.0.0.1"), toolCall("bob", "acme", "user", "files", "read", "10.0.0.1")},
		{"server", policysvc.QuotaConfig{Server: l}, toolCall("alice", "acme", "user", "files", "read", "10.0.0.1"), toolCall("alice", "acme", "user", "search", "read", "10.0.0.1")},
		{"tool", policysvc.QuotaConfig{Tool: l}, toolCall("alice", "acme", "user", "files", "read", "10.0.0.1"), toolCall("alice", "acme", "user", "files", "write", "10.0.0.1")},
		{"anonymous", policysvc.QuotaConfig{Anonymous: l}, toolCall("anonymous", "acme", "anonymous", "files", "read", "10.0.0.1"), toolCall("anonymous", "acme", "anonymous", "files", "read", "10.0.0.2")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			svc := quotaService(t, &tt.cfg, nil)
			q := spend(t, svc, tt.req, 3)
			if q.GetScope() != tt.name || q.GetBurst() != 3 || q.GetRate() != never || q.GetRetryAfterSeconds() < 1 || q.GetMax() != 0 {
				t.Errorf("detail = %v, want scope %s, burst 3, rate %v, a retry", q, tt.name, never)
			}
			spend(t, svc, tt.other, 3)
		})
	}
}

// TestQuotaAllOrNothing: a call refused by one bucket consumes nothing of the others.
func TestQuotaAllOrNothing(t *testing.T) {
	t.Parallel()
	svc := quotaService(t, &policysvc.QuotaConfig{
		Tenant: &policysvc.QuotaLimit{Rate: never, Burst: 3},
		Tool:   &policysvc.QuotaLimit{Rate: never, Burst: 1},
	}, nil)
	read := toolCall("alice", "acme", "user", "files", "read", "")
	if q := spend(t, svc, read, 1); q.GetScope() != "tool" {
		t.Fatalf("scope %s, want tool", q.GetScope())
	}
	for range 5 { // each refused by the tool: the tenant keeps its two tokens
		_, err := check(svc, read)
		exceeded(t, err)
	}
	allowed(t, svc, toolCall("alice", "acme", "user", "files", "write", ""))
	allowed(t, svc, toolCall("alice", "acme", "user", "files", "list", ""))
	_, err := check(svc, toolCall("alice", "acme", "user", "files", "delete", ""))
	if q := exceeded(t, err); q.GetScope() != "tenant" {
		t.Fatalf("scope %s, want tenant: its three tokens are spent", q.GetScope())
	}
}

// TestQuotaOverrides: an override replaces the default of its key only; rate 0 lifts it.
func TestQuotaOverrides(t *testing.T) {
	t.Parallel()
	svc := quotaService(t, &policysvc.QuotaConfig{
		Tenant:    &policysvc.QuotaLimit{Rate: never, Burst: 1},
		Principal: &policysvc.QuotaLimit{Rate: never, Burst: 100},
		Tool:      &policysvc.QuotaLimit{Rate: never, Burst: 100},
		Overrides: &policysvc.QuotaOverrides{
			Tenant:    map[string]policysvc.QuotaLimit{"acme": {Rate: never, Burst: 4}, "free": {}},
			Principal: map[string]policysvc.QuotaLimit{"bot": {Rate: never, Burst: 2}},
			Tool:      map[string]policysvc.QuotaLimit{"search/query": {Rate: never, Burst: 1}},
		},
	}, nil)
	spend(t, svc, toolCall("alice", "acme", "user", "files", "read", ""), 4)
	spend(t, svc, toolCall("alice", "globex", "user", "files", "read", ""), 1)
	if q := spend(t, svc, toolCall("bot", "free", "service", "files", "read", ""), 2); q.GetScope() != "principal" {
		t.Errorf("bot: scope %s, want principal", q.GetScope())
	}
	if q := spend(t, svc, toolCall("carol", "free", "user", "search", "query", ""), 1); q.GetScope() != "tool" {
		t.Errorf("search/query: scope %s, want tool", q.GetScope())
	}
}

// TestQuotaAnonymousApart: anonymous hosts draw on their address's bucket, never on the
// tenant's or a named principal's, even when those are empty.
func TestQuotaAnonymousApart(t *testing.T) {
	t.Parallel()
	svc := quotaService(t, &policysvc.QuotaConfig{
		Tenant:    &policysvc.QuotaLimit{Rate: never, Burst: 2},
		Principal: &policysvc.QuotaLimit{Rate: never, Burst: 2},
		Anonymous: &policysvc.QuotaLimit{Rate: never, Burst: 3},
	}, nil)
	spend(t, svc, toolCall("anonymous", "default", "anonymous", "files", "read", "127.0.0.1"), 3)
	spend(t, svc, toolCall("anonymous", "default", "anonymous", "files", "read", "127.0.0.2"), 3)
	// The tenant's and its principals' buckets are untouched by the six anonymous calls...
	if q := spend(t, svc, toolCall("dev", "default", "user", "files", "read", "127.0.0.1"), 2); q.GetScope() != "tenant" && q.GetScope() != "principal" {
		t.Errorf("scope %s", q.GetScope())
	}
	// ...and an empty tenant does not stop an anonymous address that has tokens.
	allowed(t, svc, toolCall("anonymous", "default", "anonymous", "files", "read", "127.0.0.3"))
}

// TestQuotaConcurrency: at most max permits per (tenant, server); a release or an expiry
// frees one; other tenants and servers have their own; a refused call takes no token.
func TestQuotaConcurrency(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	svc := quotaService(t, &policysvc.QuotaConfig{
		Concurrency: 2, PermitTTL: "1m",
		Tenant:    &policysvc.QuotaLimit{Rate: never, Burst: 5},
		Overrides: &policysvc.QuotaOverrides{Concurrency: map[string]int{"acme/search": 1}},
	}, clock)
	read := toolCall("alice", "acme", "user", "files", "read", "")
	first := allowed(t, svc, read)
	allowed(t, svc, read)
	if first.GetPermitId() == "" {
		t.Fatal("no permit id under a concurrency limit")
	}
	_, err := check(svc, read)
	if q := exceeded(t, err); q.GetScope() != "concurrency" || q.GetMax() != 2 || q.GetRetryAfterSeconds() < 1 {
		t.Fatalf("detail %v, want concurrency max 2", q)
	}
	allowed(t, svc, toolCall("alice", "globex", "user", "files", "read", ""))
	search := allowed(t, svc, toolCall("alice", "acme", "user", "search", "q", "")) // tenant token 3
	if _, err := check(svc, toolCall("alice", "acme", "user", "search", "q", "")); exceeded(t, err).GetMax() != 1 {
		t.Fatal("the override of acme/search is not 1")
	}
	release := func(id string) bool {
		resp, err := svc.ReleasePermit(context.Background(), connect.NewRequest(&policyv1.ReleasePermitRequest{PermitId: id}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg.GetReleased()
	}
	if !release(first.GetPermitId()) || release(first.GetPermitId()) {
		t.Fatal("a permit is released once, then unknown")
	}
	allowed(t, svc, read) // tenant token 4
	// Lost releases: the permits expire after their TTL.
	clock.Advance(time.Minute)
	allowed(t, svc, toolCall("alice", "acme", "user", "search", "q", "")) // token 5
	if release(search.GetPermitId()) {
		t.Error("an expired permit was released")
	}
	// The tenant's five tokens went to five admitted calls, none to the refused ones.
	_, err = check(svc, read)
	if q := exceeded(t, err); q.GetScope() != "tenant" {
		t.Errorf("scope %s, want tenant", q.GetScope())
	}
	if _, err := svc.ReleasePermit(context.Background(), connect.NewRequest(&policyv1.ReleasePermitRequest{PermitId: strings.Repeat("f", 65)})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("oversized permit id: %v", err)
	}
}

// TestQuotaConcurrentChecks: concurrent Checks never admit more than a bucket's burst or a
// concurrency limit's max.
func TestQuotaConcurrentChecks(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  policysvc.QuotaConfig
		want int
	}{
		{"bucket", policysvc.QuotaConfig{Tool: &policysvc.QuotaLimit{Rate: never, Burst: 7}}, 7},
		{"concurrency", policysvc.QuotaConfig{Concurrency: 5}, 5},
		{"both", policysvc.QuotaConfig{Concurrency: 9, Principal: &policysvc.QuotaLimit{Rate: never, Burst: 4}}, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			svc := quotaService(t, &tt.cfg, nil)
			const n = 64
			var wg sync.WaitGroup
			var mu sync.Mutex
			ok, refused := 0, 0
			start := make(chan struct{})
			for range n {
				wg.Go(func() {
					<-start
					_, err := check(svc, toolCall("alice", "acme", "user", "files", "read", ""))
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						ok++
					case connect.CodeOf(err) == connect.CodeResourceExhausted:
						refused++
					default:
						t.Error(err)
					}
				})
			}
			close(start)
			wg.Wait()
			if ok != tt.want || refused != n-tt.want {
				t.Fatalf("%d admitted, %d refused; want %d and %d", ok, refused, tt.want, n-tt.want)
			}
		})
	}
}

// TestQuotaOverConnect: a remote caller gets the detail and Retry-After, and releases a
// permit with the RPC.
func TestQuotaOverConnect(t *testing.T) {
	t.Parallel()
	svc := quotaService(t, &policysvc.QuotaConfig{Concurrency: 1, Server: &policysvc.QuotaLimit{Rate: 0.25, Burst: 2}}, &fakeClock{now: time.Unix(1_700_000_000, 0)})
	srv := httptest.NewServer(rpcserver.NewMux(svc.Handlers()...))
	t.Cleanup(srv.Close)
	client := policyv1connect.NewPolicyServiceClient(srv.Client(), srv.URL)
	ctx := context.Background()
	req := toolCall("alice", "acme", "user", "files", "read", "")
	resp, err := client.Check(ctx, connect.NewRequest(req))
	if err != nil || resp.Msg.GetPermitId() == "" {
		t.Fatalf("first: %v %v", resp, err)
	}
	_, err = client.Check(ctx, connect.NewRequest(req))
	if q := exceeded(t, err); q.GetScope() != "concurrency" {
		t.Fatalf("second: %v, want the concurrency limit", q)
	}
	rel, err := client.ReleasePermit(ctx, connect.NewRequest(&policyv1.ReleasePermitRequest{PermitId: resp.Msg.GetPermitId()}))
	if err != nil || !rel.Msg.GetReleased() {
		t.Fatalf("release: %v %v", rel, err)
	}
	if _, err := client.Check(ctx, connect.NewRequest(req)); err != nil {
		t.Fatalf("after the release: %v", err)
	}
	// The server's two tokens are spent (a refused call took none); the next one is 4 s away.
	_, err = client.Check(ctx, connect.NewRequest(req))
	var ce *connect.Error
	errors.As(err, &ce)
	if q := exceeded(t, err); q.GetScope() != "server" || q.GetRetryAfterSeconds() != 4 || ce.Meta().Get("Retry-After") != "4" {
		t.Fatalf("detail %v, Retry-After %q; want server, 4 s", q, ce.Meta().Get("Retry-After"))
	}
}

func TestParseQuotas(t *testing.T) {
	t.Parallel()
	many := "quotas:\n  overrides:\n    tenant:\n"
	for i := range policysvc.MaxQuotaOverrides + 1 {
		many += "      t" + strconv.Itoa(i) + ": {rate: 1}\n"
	}
	tests := []struct {
		name, yaml, err string
	}{
		{"none", "servers: []\n", ""},
		{"full", `
servers: []
quotas:
  tenant: {rate: 10, burst: 20}
  principal: {rate: 1}
  server: {rate: 100, burst: 100}
  tool: {rate: 5, burst: 5}
  anonymous: {rate: 0.5, burst: 2}
  concurrency: 4
  permit_ttl: 2m
  overrides:
    tenant: {acme: {rate: 50, burst: 50}}
    principal: {bot: {rate: 0}}
    server: {files: {rate: 1}}
    tool: {files/write: {rate: 0.1, burst: 1}}
    concurrency: {acme/files: 16}
`, ""},
		{"unknown key", "quotas:\n  tenants: {rate: 1}\n", "field tenants not found"},
		{"unknown limit key", "quotas:\n  tenant: {rate: 1, brust: 2}\n", "field brust not found"},
		{"negative rate", "quotas:\n  tenant: {rate: -1}\n", "rate -1"},
		{"nan rate", "quotas:\n  server: {rate: .nan}\n", "rate NaN"},
		{"infinite rate", "quotas:\n  server: {rate: .inf}\n", "rate +Inf"},
		{"huge rate", "quotas:\n  tool: {rate: 1e300}\n", "rate 1e+300"},
		{"negative burst", "quotas:\n  tool: {rate: 1, burst: -1}\n", "burst -1"},
		{"huge burst", "quotas:\n  tool: {rate: 1, burst: 99999999999}\n", "burst 99999999999"},
		{"burst without rate", "quotas:\n  tool: {burst: 5}\n", "without a rate"},
		{"negative concurrency", "quotas:\n  concurrency: -1\n", "concurrency"},
		{"huge concurrency", "quotas:\n  concurrency: 1000000\n", "concurrency"},
		{"bad ttl", "quotas:\n  permit_ttl: 1ms\n", "permit_ttl"},
		{"tool key without server", "quotas:\n  overrides:\n    tool: {write: {rate: 1}}\n", "not of the form"},
		{"concurrency key", "quotas:\n  overrides:\n    concurrency: {acme/: 1}\n", "not of the form"},
		{"bad override", "quotas:\n  overrides:\n    principal: {bot: {rate: -3}}\n", "rate -3"},
		{"too many overrides", many, "more than the limit"},
		{"not yaml", "quotas: [\n", "parse"},
		{"not a map", "quotas: 3\n", "quotas"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := policysvc.ParseQuotas([]byte(tt.yaml))
			if tt.err == "" && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("err = %v, want one containing %q", err, tt.err)
			}
		})
	}
}

// TestQuotaFlagsAndFile: the flags are the tenant default beside a file without one, and
// refused beside a file with one; bad flag values are refused.
func TestQuotaFlagsAndFile(t *testing.T) {
	t.Parallel()
	dir := writeDir(t, map[string]string{
		"with.yaml":    "quotas:\n  tenant: {rate: 1}\n",
		"without.yaml": "quotas:\n  tool: {rate: 1}\n",
	})
	base := policysvc.Config{PolicyDir: shippedDir}
	for _, tt := range []struct {
		name string
		mod  func(*policysvc.Config)
		ok   bool
	}{
		{"flags beside a file without tenant", func(c *policysvc.Config) { c.QuotaFile, c.QuotaRate = dir+"/without.yaml", 2 }, true},
		{"flags beside a file with tenant", func(c *policysvc.Config) { c.QuotaFile, c.QuotaRate = dir+"/with.yaml", 2 }, false},
		{"missing file", func(c *policysvc.Config) { c.QuotaFile = dir + "/none.yaml" }, false},
		{"NaN flag", func(c *policysvc.Config) { c.QuotaRate = math.NaN() }, false},
		{"negative burst flag", func(c *policysvc.Config) { c.QuotaRate, c.QuotaBurst = 1, -1 }, false},
	} {
		cfg := base
		tt.mod(&cfg)
		svc, err := policysvc.New(cfg, testCatalog(), nil, nil)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v", tt.name, err)
		}
		if svc != nil {
			_ = svc.Close(context.Background())
		}
	}
}
