package authsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
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

// Authorizer decides admin requests (rpcserver.PolicyAuthorizer asks policysvc).
type Authorizer = rpcserver.Authorizer

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
		if errors.Is(err, rpcserver.ErrPolicyUnavailable) {
			return fmt.Errorf("%w: %w", errUnavailable, err)
		}
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
