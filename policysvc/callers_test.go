package policysvc_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
)

// A caller with its own identity (rpcserver.Guard) asks Check about principals of the tenants
// Cedar lets it: with the shipped policies, a service about its own tenant only; the
// gateway's own services (the internal token) about any.
func TestCallerAuthorized(t *testing.T) {
	t.Parallel()
	svc := newService(t, policysvc.Config{PolicyDir: shippedDir}, nil)
	req := func(tenant string) *connect.Request[policyv1.CheckRequest] {
		return connect.NewRequest(&policyv1.CheckRequest{Subject: subject("alice", tenant), Action: "tools/call", Resource: &policyv1.Resource{Server: "files", Name: "read"}})
	}
	// Guard puts the caller in the request's context (its own tests, and the end-to-end
	// test with a grpc-go client, cover it); here the test stands in for it.
	billing := &authv1.Principal{Id: "billing-svc", Tenant: "acme", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE}
	user := &authv1.Principal{Id: "bob", Tenant: "acme", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER}
	for _, tt := range []struct {
		name   string
		caller *authv1.Principal
		tenant string
		want   connect.Code
	}{
		{"a service about its own tenant", billing, "acme", 0},
		{"a service about another tenant", billing, "globex", connect.CodePermissionDenied},
		{"a user's token", user, "acme", connect.CodePermissionDenied},
		{"the gateway's own services", nil, "globex", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := rpcserver.WithCaller(context.Background(), rpcserver.Caller{Principal: tt.caller})
			_, err := svc.Check(ctx, req(tt.tenant))
			if connect.CodeOf(err) != tt.want && !(tt.want == 0 && err == nil) {
				t.Fatalf("Check = %v, want code %v", err, tt.want)
			}
		})
	}
}

// Admin requests are decided by the shipped policies: the gatehouse-admins group administers
// every tenant and the gateway; nobody else does; and Authorize answers the gateway's own
// services only.
func TestAdminDecisions(t *testing.T) {
	t.Parallel()
	svc := newService(t, policysvc.Config{PolicyDir: shippedDir}, nil)
	internal := rpcserver.WithCaller(context.Background(), rpcserver.Caller{})
	ask := func(ctx context.Context, sub *policyv1.Subject, action, tenant string) (policyv1.Decision, error) {
		resp, err := svc.Authorize(ctx, connect.NewRequest(&policyv1.AuthorizeRequest{Subject: sub, Action: action, Tenant: tenant}))
		if err != nil {
			return 0, err
		}
		return resp.Msg.GetDecision(), nil
	}
	admin := &policyv1.Subject{Id: "ops", Tenant: "default", Kind: "user", Groups: []string{"gatehouse-admins"}}
	user := &policyv1.Subject{Id: "bob", Tenant: "acme", Kind: "user"}
	for _, tt := range []struct {
		sub            *policyv1.Subject
		action, tenant string
		want           policyv1.Decision
	}{
		{admin, "admin/tokens.issue", "acme", policyv1.Decision_DECISION_ALLOW},
		{admin, "admin/policy.apply", "", policyv1.Decision_DECISION_ALLOW},
		{user, "admin/tokens.issue", "acme", policyv1.Decision_DECISION_DENY},
		{user, "admin/keys.rotate", "", policyv1.Decision_DECISION_DENY},
	} {
		if d, err := ask(internal, tt.sub, tt.action, tt.tenant); err != nil || d != tt.want {
			t.Errorf("%s %s on %q: %v %v, want %v", tt.sub.GetId(), tt.action, tt.tenant, d, err, tt.want)
		}
	}
	asCaller := rpcserver.WithCaller(context.Background(), rpcserver.Caller{Principal: &authv1.Principal{Id: "svc", Tenant: "acme"}})
	if _, err := ask(asCaller, admin, "admin/policy.apply", ""); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("Authorize asked by a caller: %v, want PermissionDenied", err)
	}
}
