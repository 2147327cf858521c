package policysvc

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"

	"github.com/cedar-policy/cedar-go/types"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
)

// Other teams' services may ask policysvc for decisions with their own identity (see
// rpcserver.Guard): Cedar decides which tenants each may ask about, by the action
// "api/policy.check" on the tenant of the subject asked about. The gateway's own services
// (the internal token) ask about any tenant.

// actionAPICheck is the action a caller needs on a tenant to ask Check about its principals.
const actionAPICheck = "api/policy.check"

// authorizeCaller decides whether principal p may do action on tenant (the gateway as a
// whole when tenant is empty).
func (s *Service) authorizeCaller(p *authv1.Principal, action, tenant string) error {
	resp, err := s.authorize(subjectOf(p), action, tenant)
	if err != nil {
		return err
	}
	if resp.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		on := "tenant " + tenant
		if tenant == "" {
			on = "the gateway"
		}
		return fmt.Errorf("%w: %s may not %s on %s", errCallerDenied, p.GetId(), action, on)
	}
	return nil
}

// authorize decides action by sub on tenant, or on the gateway when tenant is empty.
func (s *Service) authorize(sub *policyv1.Subject, action, tenant string) (*policyv1.AuthorizeResponse, error) {
	if sub.GetId() == "" || sub.GetTenant() == "" || action == "" || len(action) > maxActionBytes || len(tenant) > maxTenantBytes {
		return nil, invalid("authorize: subject id and tenant, and an action, are required, within their bounds")
	}
	b := s.active.Load().bundle
	principal := principalEntity(sub.GetId(), sub.GetTenant(), sub.GetKind(), sub.GetGroups())
	resource := types.NewEntityUID(cedarpolicy.TypeTenant, types.String(tenant))
	if tenant == "" {
		resource = types.NewEntityUID(cedarpolicy.TypeGateway, cedarpolicy.GatewayID)
	}
	ents := callerEntities{principal: principal, tenant: types.Entity{UID: resource}, bundle: b}
	// The context of every action (no session, source or arguments of a host here):
	// conditions on time hold for these requests too.
	cctx, err := cedarContext(&policyv1.CheckRequest{Action: action}, s.now(), argumentsNeed{allContext: true})
	if err != nil {
		return nil, err
	}
	d := s.decide(b, &ents, types.Request{
		Principal: principal.UID,
		Action:    types.NewEntityUID(cedarpolicy.TypeAction, types.String(action)),
		Resource:  resource,
		Context:   cctx,
	})
	return &policyv1.AuthorizeResponse{Decision: d.GetDecision(), PolicyIds: d.GetPolicyIds(), BundleVersion: d.GetBundleVersion()}, nil
}

// Authorize implements policyv1connect.PolicyServiceHandler (the gateway's own services ask
// it, with the internal token, about their callers' admin requests).
func (s *Service) Authorize(ctx context.Context, req *connect.Request[policyv1.AuthorizeRequest]) (*connect.Response[policyv1.AuthorizeResponse], error) {
	if c, ok := rpcserver.CallerFrom(ctx); ok && c.Principal != nil {
		return nil, toConnect(fmt.Errorf("%w: Authorize is for the gateway's own services", errCallerDenied))
	}
	resp, err := s.authorize(req.Msg.GetSubject(), req.Msg.GetAction(), req.Msg.GetTenant())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(resp), nil
}

// subjectOf is a principal as policy sees it.
func subjectOf(p *authv1.Principal) *policyv1.Subject {
	return &policyv1.Subject{Id: p.GetId(), Tenant: p.GetTenant(), Groups: p.GetGroups(), Kind: rpcserver.KindName(p.GetKind())}
}

// callerEntities are the entities of a caller's authorization.
type callerEntities struct {
	principal, tenant types.Entity
	bundle            *cedarpolicy.Bundle
}

func (e *callerEntities) Get(uid types.EntityUID) (types.Entity, bool) {
	switch {
	case uid == e.principal.UID:
		return e.principal, true
	case uid == e.tenant.UID:
		return e.tenant, true
	case uid.Type == cedarpolicy.TypeAction:
		return e.bundle.Action(uid)
	}
	return types.Entity{}, false
}
