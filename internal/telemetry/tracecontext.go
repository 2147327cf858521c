package telemetry

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Attributes of Gatehouse's spans: the MCP method, what was called, by whom, and how it ended.
const (
	AttrMethod    = attribute.Key("mcp.method")
	AttrServer    = attribute.Key("gatehouse.server")
	AttrTool      = attribute.Key("gatehouse.tool")
	AttrTenant    = attribute.Key("gatehouse.tenant")
	AttrPrincipal = attribute.Key("enduser.id")
	AttrDecision  = attribute.Key("gatehouse.decision")
	AttrOutcome   = attribute.Key("gatehouse.outcome")
)

// The span start options of each kind, made once: an option built at each span is an
// allocation (the option and the variadic slice) on every call of the hot path.
var (
	serverSpan   = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}
	clientSpan   = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	internalSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
)

// Start starts a span of kind (server, client or internal; anything else is internal) named
// name, of the tracer of scope, as a child of the span in ctx.
func Start(ctx context.Context, scope, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	opts := internalSpan
	switch kind {
	case trace.SpanKindServer:
		opts = serverSpan
	case trace.SpanKindClient:
		opts = clientSpan
	}
	return Tracer(scope).Start(ctx, name, opts...)
}

// SpanName is a span's name of two parts ("tools/call echo"), joined only when spans are
// exported: without an exporter nobody reads a name, and joining them is an allocation on
// every call. Without one it is the first part.
func SpanName(first, second string) string {
	if !exporting.Load() {
		return first
	}
	return first + " " + second
}

// StartHandler starts the span of one RPC a service handles, named by its Connect procedure
// ("gatehouse.policy.v1.PolicyService/Check"), as a child of the trace context in ctx: the
// caller's span in single-process mode (the ingress calls the handler method itself), or the
// traceparent header that rpcserver.Mux read in split mode. Both modes give the same tree.
func StartHandler(ctx context.Context, scope, procedure string) (context.Context, trace.Span) {
	// The RPC semantic conventions name the span by the procedure without its leading slash.
	return Start(ctx, scope, strings.TrimPrefix(procedure, "/"), trace.SpanKindServer)
}

// End ends span, marking it failed with err when err is not nil.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Transport sends the trace context of each request's context as traceparent and tracestate
// headers (the internal RPC clients; rpcserver.Mux reads them on the other side).
func Transport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return transport{next: next}
}

type transport struct{ next http.RoundTripper }

func (t transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if trace.SpanContextFromContext(r.Context()).IsValid() {
		// A RoundTripper must not change the request it was given: the headers are copied.
		r2 := *r
		r2.Header = r.Header.Clone()
		Inject(r.Context(), r2.Header)
		r = &r2
	}
	return t.next.RoundTrip(r)
}

// Inject writes the trace context of ctx into h as traceparent and tracestate, replacing
// whatever was there.
func Inject(ctx context.Context, h http.Header) {
	h.Del("Traceparent")
	h.Del("Tracestate")
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// Extract returns ctx with the trace context of h's traceparent and tracestate as its remote
// parent; an absent or invalid traceparent leaves ctx as it was (the next span is a root).
func Extract(ctx context.Context, h http.Header) context.Context {
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// ExtractTraceparent is Extract for a traceparent and tracestate given as strings (an MCP
// message's params._meta).
func ExtractTraceparent(ctx context.Context, traceparent, tracestate string) context.Context {
	c := propagation.MapCarrier{"traceparent": traceparent}
	if tracestate != "" {
		c["tracestate"] = tracestate
	}
	return propagator.Extract(ctx, c)
}

// Traceparent is the W3C traceparent of the span in ctx ("00-<trace id>-<span id>-<flags>"),
// "" when ctx has no valid span context.
func Traceparent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	const hexDigits = "0123456789abcdef"
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	tid, sid := sc.TraceID(), sc.SpanID()
	for i, c := range tid {
		b[3+2*i], b[4+2*i] = hexDigits[c>>4], hexDigits[c&15]
	}
	b[35] = '-'
	for i, c := range sid {
		b[36+2*i], b[37+2*i] = hexDigits[c>>4], hexDigits[c&15]
	}
	b[52] = '-'
	f := byte(sc.TraceFlags())
	b[53], b[54] = hexDigits[f>>4], hexDigits[f&15]
	return string(b[:])
}

// TraceID is the trace id of the span in ctx, hex, "" when there is none.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
