package policysvc

import (
	"context"

	"connectrpc.com/connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

// maxPermitIDBytes bounds a permit id (newPermitID makes 32 hex digits).
const maxPermitIDBytes = 64

// ReleasePermit implements policyv1connect.PolicyServiceHandler: it frees the concurrency
// permit an allowed tools/call took, when the call has concluded. A caller with its own
// identity may release the permits of the tenants it may Check for.
func (s *Service) ReleasePermit(ctx context.Context, req *connect.Request[policyv1.ReleasePermitRequest]) (*connect.Response[policyv1.ReleasePermitResponse], error) {
	id := req.Msg.GetPermitId()
	if id == "" || len(id) > maxPermitIDBytes {
		return nil, toConnect(invalid("permit id is required, at most %d bytes", maxPermitIDBytes))
	}
	if s.quota == nil {
		return connect.NewResponse(&policyv1.ReleasePermitResponse{}), nil
	}
	var authorize func(tenant string) error
	if c, ok := rpcserver.CallerFrom(ctx); ok && c.Principal != nil {
		authorize = func(tenant string) error { return s.authorizeCaller(c.Principal, actionAPICheck, tenant) }
	}
	released, err := s.quota.release(id, authorize)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&policyv1.ReleasePermitResponse{Released: released}), nil
}
