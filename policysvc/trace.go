package policysvc

import (
	"context"
	"log/slog"

	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"go.opentelemetry.io/otel/trace"
)

// tracerScope names policysvc's spans' instrumentation scope.
const tracerScope = "github.com/gatehouse-mcp/gatehouse/policysvc"

// endCheck ends a Check's span with what was asked and decided, and logs the decision at
// debug level (the line carries the trace id of the call, as every line logged with ctx).
func (s *Service) endCheck(ctx context.Context, span trace.Span, req *policyv1.CheckRequest, resp *policyv1.CheckResponse, err error) {
	decision := "error"
	if err == nil {
		decision = resp.GetDecision().String()
	}
	if span.IsRecording() {
		sub, res := req.GetSubject(), req.GetResource()
		span.SetAttributes(
			telemetry.AttrMethod.String(req.GetAction()),
			telemetry.AttrServer.String(res.GetServer()),
			telemetry.AttrTool.String(res.GetName()),
			telemetry.AttrTenant.String(sub.GetTenant()),
			telemetry.AttrPrincipal.String(sub.GetId()),
			telemetry.AttrDecision.String(decision),
		)
	}
	telemetry.End(span, err)
	if s.logger.Enabled(ctx, slog.LevelDebug) {
		s.logger.DebugContext(ctx, "check", "action", req.GetAction(), "server", req.GetResource().GetServer(), "decision", decision, "policies", resp.GetPolicyIds())
	}
}

// endFilter ends a Filter's span (a list filtered for what its caller may call).
func endFilter(span trace.Span, req *policyv1.FilterRequest, err error) {
	if span.IsRecording() {
		sub := req.GetSubject()
		span.SetAttributes(
			telemetry.AttrMethod.String(req.GetAction()),
			telemetry.AttrServer.String(req.GetServer()),
			telemetry.AttrTenant.String(sub.GetTenant()),
			telemetry.AttrPrincipal.String(sub.GetId()),
		)
	}
	telemetry.End(span, err)
}
