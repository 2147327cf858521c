package policysvc

import (
	"context"

	"connectrpc.com/connect"
	"github.com/cedar-policy/cedar-go/types"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
)

// MaxFilterNames bounds the items of one Filter request.
const MaxFilterNames = 4096

// Filter implements policyv1connect.PolicyServiceHandler: one decision per item, each as
// Check would decide it (the same entities and context, arguments absent), no quota
// consumed. The cost is linear in the items: the principal's and the server's entities are
// built once.
func (s *Service) Filter(ctx context.Context, req *connect.Request[policyv1.FilterRequest]) (_ *connect.Response[policyv1.FilterResponse], err error) {
	_, span := telemetry.StartHandler(ctx, tracerScope, policyv1connect.PolicyServiceFilterProcedure)
	defer func() { endFilter(span, req.Msg, err) }()
	m := req.Msg
	if len(m.GetNames()) > MaxFilterNames {
		return nil, toConnect(invalid("%d names, more than the limit of %d", len(m.GetNames()), MaxFilterNames))
	}
	if s.ready != nil {
		select {
		case <-s.ready:
		default:
			return nil, toConnect(errNotReady)
		}
	}
	b := s.active.Load().bundle
	resp := &policyv1.FilterResponse{Allowed: make([]bool, len(m.GetNames())), BundleVersion: b.Version()}
	rc := m.GetContext()
	if rc != nil {
		rc = &policyv1.RequestContext{SourceAddress: rc.GetSourceAddress(), SessionId: rc.GetSessionId(), ProtocolVersion: rc.GetProtocolVersion()}
	}
	one := &policyv1.CheckRequest{Subject: m.GetSubject(), Action: m.GetAction(), Resource: &policyv1.Resource{Server: m.GetServer()}, Context: rc}
	var cctx types.Record
	if b.ReadsContext() {
		var err error
		if cctx, err = cedarContext(one, s.now(), needOf(b)); err != nil {
			return connect.NewResponse(resp), nil // nothing can be decided: nothing is listed
		}
	}
	for i, name := range m.GetNames() {
		one.Resource.Name = name
		if err := validateRequest(one); err != nil {
			return nil, toConnect(err)
		}
		ents, creq, ok := s.request(b, &s.cache, &s.princ, one, cctx, true)
		if !ok {
			break // the registry does not know the server: nothing is allowed
		}
		resp.Allowed[i] = s.decide(b, ents, creq).GetDecision() == policyv1.Decision_DECISION_ALLOW
	}
	return connect.NewResponse(resp), nil
}
