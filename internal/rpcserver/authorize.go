package rpcserver

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
)

// ErrPolicyUnavailable is an Authorizer's failure to get a decision (as opposed to a denial):
// the request is refused all the same, as unavailable.
var ErrPolicyUnavailable = errors.New("policy unavailable")

// Authorizer decides whether principal p may do action (an admin action, an API call) on
// tenant (the gateway as a whole when tenant is empty): nil when allowed, an error saying
// why not otherwise.
type Authorizer func(ctx context.Context, p *authv1.Principal, action, tenant string) error

// PolicyAsker is what PolicyAuthorizer needs of policysvc: its client, or the service itself
// in single-process mode.
type PolicyAsker interface {
	Authorize(context.Context, *connect.Request[policyv1.AuthorizeRequest]) (*connect.Response[policyv1.AuthorizeResponse], error)
}

// PolicyAuthorizer decides by asking policysvc's Authorize, as one of the gateway's own
// services.
func PolicyAuthorizer(policy PolicyAsker) Authorizer {
	return func(ctx context.Context, p *authv1.Principal, action, tenant string) error {
		resp, err := policy.Authorize(WithCaller(ctx, Caller{}), connect.NewRequest(&policyv1.AuthorizeRequest{
			Subject: &policyv1.Subject{Id: p.GetId(), Tenant: p.GetTenant(), Groups: p.GetGroups(), Kind: KindName(p.GetKind())},
			Action:  action, Tenant: tenant,
		}))
		if err != nil {
			return fmt.Errorf("%w: %w", ErrPolicyUnavailable, err)
		}
		if resp.Msg.GetDecision() != policyv1.Decision_DECISION_ALLOW {
			return fmt.Errorf("%s is not allowed %s (bundle %s)", p.GetId(), action, resp.Msg.GetBundleVersion())
		}
		return nil
	}
}

// KindName is a principal kind's name in policy.
func KindName(k authv1.PrincipalKind) string {
	switch k {
	case authv1.PrincipalKind_PRINCIPAL_KIND_USER:
		return "user"
	case authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE:
		return "service"
	case authv1.PrincipalKind_PRINCIPAL_KIND_ANONYMOUS:
		return "anonymous"
	}
	return "unspecified"
}
