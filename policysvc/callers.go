package policysvc

import (
	"fmt"

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

// authorizeCaller decides whether principal p may ask action about tenant.
func (s *Service) authorizeCaller(p *authv1.Principal, action, tenant string) error {
	b := s.active.Load().bundle
	principal := principalEntity(p.GetId(), p.GetTenant(), kindOf(p.GetKind()), p.GetGroups())
	resource := types.NewEntityUID(cedarpolicy.TypeTenant, types.String(tenant))
	ents := callerEntities{principal: principal, tenant: types.Entity{UID: resource}, bundle: b}
	// The context of every action (a caller's request has no session, source or arguments
	// of a host): conditions on time hold for callers too.
	cctx, err := cedarContext(&policyv1.CheckRequest{Action: action}, s.now(), argumentsNeed{allContext: true})
	if err != nil {
		return err
	}
	resp := s.decide(b, &ents, types.Request{
		Principal: principal.UID,
		Action:    types.NewEntityUID(cedarpolicy.TypeAction, types.String(action)),
		Resource:  resource,
		Context:   cctx,
	})
	if resp.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		return fmt.Errorf("%w: %s may not ask about tenant %s (%s)", errCallerDenied, p.GetId(), tenant, action)
	}
	return nil
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

// kindOf is a principal kind's name in policy.
func kindOf(k authv1.PrincipalKind) string {
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
