package bridgesvc

import (
	"context"
	"log/slog"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"go.opentelemetry.io/otel/trace"
)

// tracerScope names the bridge's spans' instrumentation scope.
const tracerScope = "github.com/gatehouse-mcp/gatehouse/bridgesvc"

// endSend ends the span of one Send (the RPC, Deliver or DeliverParsed) with what was sent
// and how it ended, and logs it at debug level with the call's trace id.
func (s *Service) endSend(ctx context.Context, span trace.Span, r *bridgev1.SendRequest, m *upstream.Message, upstreamError bool, err error) {
	outcome := "delivered"
	switch {
	case err != nil:
		outcome = connect.CodeOf(err).String()
	case upstreamError:
		outcome = "upstream_error"
	}
	if span.IsRecording() {
		span.SetAttributes(
			telemetry.AttrMethod.String(m.Method),
			telemetry.AttrServer.String(r.GetServer()),
			telemetry.AttrTool.String(m.Name),
			telemetry.AttrTenant.String(r.GetTenant()),
			telemetry.AttrPrincipal.String(r.GetPrincipal()),
			telemetry.AttrOutcome.String(outcome),
		)
	}
	telemetry.End(span, err)
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "send", "session", tag(r.GetSessionId()), "server", r.GetServer(), "method", m.Method, "outcome", outcome)
	}
}

// startUpstream starts the client span of one request to a server's upstream and returns
// the request with that span as params._meta.traceparent, inserted or replaced by a splice
// (jsonrpc.WithTraceparent): the forwarded bytes differ from those policy judged in that
// member only. A request whose params or _meta is no object goes as it came.
func (s *Service) startUpstream(ctx context.Context, server string, m upstream.Message) (context.Context, trace.Span, upstream.Message) {
	ctx, span := telemetry.Start(ctx, tracerScope, telemetry.SpanName(m.Method, server), trace.SpanKindClient)
	if span.IsRecording() {
		span.SetAttributes(telemetry.AttrMethod.String(m.Method), telemetry.AttrServer.String(server), telemetry.AttrTool.String(m.Name))
	}
	if raw, ok := jsonrpc.WithTraceparent(&m, telemetry.Traceparent(ctx)); ok {
		m.Raw = raw
	}
	return ctx, span, m
}
