package authsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

// The admin RPCs (tokens, the upstream signing key) are an operator's requests: made with
// the operator's own credential (rpcserver.Guard), decided by Cedar like everything else
// (admin/... actions on the tenant acted on, or on the gateway), never by the internal token
// alone. A call within the process (single-process mode's own start) is the process itself.

// Admin actions.
const (
	actionIssueTokens  = "admin/tokens.issue"
	actionListTokens   = "admin/tokens.list"
	actionRevokeTokens = "admin/tokens.revoke"
	actionRotateKeys   = "admin/keys.rotate"
)

// Authorizer decides whether principal p may do an admin action on tenant (the gateway as a
// whole when tenant is empty): nil when allowed, an error saying why not otherwise.
type Authorizer func(ctx context.Context, p *authv1.Principal, action, tenant string) error

// admin decides the admin request in ctx.
func (s *Service) admin(ctx context.Context, action, tenant string) error {
	p, err := rpcserver.AdminCaller(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", errAdminDenied, err)
	}
	if p == nil {
		return nil // the process itself
	}
	if s.authorize == nil {
		return fmt.Errorf("%w: no policy service decides admin requests here (authsvc --policy-addr)", errAdminDenied)
	}
	if err := s.authorize(ctx, p, action, tenant); err != nil {
		s.logger.Info("admin request refused", "principal", p.GetId(), "action", action, "tenant", tenant, "err", err)
		return fmt.Errorf("%w: %w", errAdminDenied, err)
	}
	return nil
}

// tenantOf is the tenant of the token with this id ("" when there is none: revoking it is
// then decided on the gateway, and answered not found).
func (ts *tokenStore) tenantOf(ctx context.Context, id string) (string, error) {
	resp, err := ts.kv.Get(ctx, ts.idKey(id))
	if err != nil {
		return "", storeError(ctx, "read token id", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	rec, err := ts.kv.Get(ctx, ts.tokenKey(string(resp.Kvs[0].Value)))
	if err != nil {
		return "", storeError(ctx, "read token", err)
	}
	if len(rec.Kvs) == 0 {
		return "", nil
	}
	var r record
	if err := json.Unmarshal(rec.Kvs[0].Value, &r); err != nil {
		return "", fmt.Errorf("decode token record: %w", err)
	}
	return r.Tenant, nil
}

// PolicyAsker is what PolicyAuthorizer needs of policysvc: its client, or the service itself
// in single-process mode.
type PolicyAsker interface {
	Authorize(context.Context, *connect.Request[policyv1.AuthorizeRequest]) (*connect.Response[policyv1.AuthorizeResponse], error)
}

// PolicyAuthorizer decides admin requests by asking policysvc's Authorize, as the gateway's
// own service.
func PolicyAuthorizer(policy PolicyAsker) Authorizer {
	return func(ctx context.Context, p *authv1.Principal, action, tenant string) error {
		resp, err := policy.Authorize(rpcserver.WithCaller(ctx, rpcserver.Caller{}), connect.NewRequest(&policyv1.AuthorizeRequest{
			Subject: &policyv1.Subject{Id: p.GetId(), Tenant: p.GetTenant(), Groups: p.GetGroups(), Kind: kindName(p.GetKind())},
			Action:  action, Tenant: tenant,
		}))
		if err != nil {
			return fmt.Errorf("ask policy: %w", err)
		}
		if resp.Msg.GetDecision() != policyv1.Decision_DECISION_ALLOW {
			return fmt.Errorf("%s is not allowed %s (bundle %s)", p.GetId(), action, resp.Msg.GetBundleVersion())
		}
		return nil
	}
}

// kindName is a principal kind's name in policy.
func kindName(k authv1.PrincipalKind) string {
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

// AdminProcedures are the admin RPCs, which operators call with their own credential.
var AdminProcedures = []string{
	authv1connect.AuthServiceCreateTokenProcedure,
	authv1connect.AuthServiceListTokensProcedure,
	authv1connect.AuthServiceRevokeTokenProcedure,
	authv1connect.AuthServiceRotateSigningKeyProcedure,
}

// BootstrapAdminEnv names the secret (GATEHOUSE_BOOTSTRAP_ADMIN_TOKEN, or _FILE) from which
// the standalone binary registers the first operator's token: principal "admin" of tenant
// "default", in group AdminGroup, which the shipped policies let administer the gateway.
const BootstrapAdminEnv = "GATEHOUSE_BOOTSTRAP_ADMIN_TOKEN"

// AdminGroup is the group the shipped policies let administer the gateway.
const AdminGroup = "gatehouse-admins"

// EnsureToken registers an explicit token unless it already is.
func (s *Service) EnsureToken(ctx context.Context, req *authv1.CreateTokenRequest) error {
	_, _, err := s.tokens.create(ctx, req)
	if err != nil && !errors.Is(err, errAlreadyExists) {
		return err
	}
	return nil
}
