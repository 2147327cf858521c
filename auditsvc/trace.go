package auditsvc

import (
	"context"
	"log/slog"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// tracerScope names auditsvc's spans' instrumentation scope.
const tracerScope = "github.com/gatehouse-mcp/gatehouse/auditsvc"

// endAppend ends an Append's span with what the record says of its call, and logs the
// append at debug level (with the call's trace id, as every line logged with ctx). The
// record's own trace_id is the caller's: auditsvc writes it as given.
func (s *Service) endAppend(ctx context.Context, span trace.Span, req *auditv1.AppendRequest, err error) {
	rec := req.GetRecord()
	if span.IsRecording() {
		span.SetAttributes(
			telemetry.AttrMethod.String(rec.GetMethod()),
			telemetry.AttrServer.String(rec.GetServer()),
			telemetry.AttrTool.String(rec.GetTool()),
			telemetry.AttrTenant.String(rec.GetTenant()),
			telemetry.AttrPrincipal.String(rec.GetPrincipal()),
			telemetry.AttrOutcome.String(rec.GetOutcome().String()),
			attribute.String("gatehouse.audit.phase", rec.GetPhase().String()),
			attribute.Bool("gatehouse.audit.deferred", req.GetDeferred()),
		)
	}
	telemetry.End(span, err)
	if s.logger.Enabled(ctx, slog.LevelDebug) {
		s.logger.DebugContext(ctx, "append", "call_id", rec.GetCallId(), "phase", rec.GetPhase().String(), "deferred", req.GetDeferred(), "err", err)
	}
}
