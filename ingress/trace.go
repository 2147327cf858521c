package ingress

import (
	"context"
	"log/slog"
	"net/http"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Traces at the host's edge. Every HTTP request on an MCP endpoint is a server span whose
// parent is the host's traceparent header (a new root when there is none); each call in it
// is a span of its own, whose parent is the message's params._meta.traceparent when it has a
// valid one (the MCP convention), else the request's span. The call span's trace id is the
// call's trace id: in its log lines, its audit records, the error messages the host reads,
// and, through the bridge, what the upstream receives. Decide, audit and bridge are client
// spans under the call (over RPC only: in one process the handlers' own spans are
// the hops); the services' handlers add theirs beneath (internal/telemetry).

const tracerScope = "github.com/gatehouse-mcp/gatehouse/ingress"

// startExchange starts the server span of one HTTP request and returns the request with it
// in its context, and the span's trace id.
func startExchange(r *http.Request, server string) (*http.Request, trace.Span, string) {
	ctx := r.Context()
	if r.Header.Get("Traceparent") != "" {
		ctx = telemetry.Extract(ctx, r.Header)
	}
	ctx, span := telemetry.Start(ctx, tracerScope, telemetry.SpanName(r.Method, r.Pattern), trace.SpanKindServer)
	if span.IsRecording() {
		span.SetAttributes(telemetry.AttrServer.String(server))
	}
	return r.WithContext(ctx), span, span.SpanContext().TraceID().String()
}

// startCall starts the span of one call and sets the call's trace id to its trace's.
func startCall(ctx context.Context, c *call) (context.Context, trace.Span) {
	var span trace.Span
	if c.msg.Traceparent != "" {
		if pctx := telemetry.ExtractTraceparent(ctx, c.msg.Traceparent, c.msg.Tracestate); trace.SpanContextFromContext(pctx).IsRemote() {
			// The message names its own parent: the request's span is linked, not the parent.
			ctx, span = telemetry.Tracer(tracerScope).Start(pctx, c.msg.Method, trace.WithSpanKind(trace.SpanKindInternal), trace.WithLinks(trace.LinkFromContext(ctx)))
		}
	}
	if span == nil {
		ctx, span = telemetry.Start(ctx, tracerScope, c.msg.Method, trace.SpanKindInternal)
	}
	c.traceID = span.SpanContext().TraceID().String()
	if span.IsRecording() {
		span.SetAttributes(
			telemetry.AttrMethod.String(c.msg.Method),
			telemetry.AttrServer.String(c.server),
			telemetry.AttrTool.String(c.msg.Name),
			telemetry.AttrTenant.String(c.principal.GetTenant()),
			telemetry.AttrPrincipal.String(c.principal.GetId()),
		)
	}
	return ctx, span
}

// endCall ends a call's span with its outcome, as its audit record has it, and logs the call
// at debug level (with its trace id, as every line logged with ctx).
func (s *Service) endCall(ctx context.Context, span trace.Span, rec *auditv1.Record) {
	outcome := rec.GetOutcome()
	if span.IsRecording() {
		span.SetAttributes(telemetry.AttrOutcome.String(outcome.String()))
		if outcome == auditv1.Outcome_OUTCOME_FAILED || outcome == auditv1.Outcome_OUTCOME_TIMED_OUT {
			span.SetStatus(codes.Error, rec.GetError())
		}
	}
	span.End()
	if s.logger.Enabled(ctx, slog.LevelDebug) {
		s.logger.DebugContext(ctx, "call", "call_id", rec.GetCallId(), "server", rec.GetServer(), "method", rec.GetMethod(), "outcome", outcome.String())
	}
}

// traceDecision puts the policy decision on the call's span.
func traceDecision(ctx context.Context, d *policyv1.CheckResponse) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(telemetry.AttrDecision.String(d.GetDecision().String()))
	}
}

// startClient starts the client span of one call the ingress makes to a service over RPC; a
// call to a handler in this process gets none (Deps.InProcess): a span that does nothing.
func (s *Service) startClient(ctx context.Context, name string) (context.Context, trace.Span) {
	if s.deps.InProcess {
		return ctx, noSpan
	}
	return telemetry.Start(ctx, tracerScope, name, trace.SpanKindClient)
}

// noSpan is the span of what is not traced: its End does nothing.
var noSpan trace.Span = noop.Span{}
