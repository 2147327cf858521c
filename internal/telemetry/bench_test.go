package telemetry_test

import (
	"context"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// discard is an exporter that drops what it is given: the cost measured is the SDK's.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkSpan is one span with the attributes of a call, as the services start and end
// theirs: without an exporter (ids only) and with the SDK batching to an exporter.
func BenchmarkSpan(b *testing.B) {
	parent := telemetry.ExtractTraceparent(context.Background(), hostTraceparent, "")
	for _, bc := range []struct {
		name string
		tp   trace.TracerProvider
	}{
		{"off", telemetry.IDsOnly()},
		{"on", sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}))},
		{"on-recorded", sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tr := bc.tp.Tracer("bench")
			b.ReportAllocs()
			for b.Loop() {
				_, span := tr.Start(parent, "gatehouse.policy.v1.PolicyService/Check", trace.WithSpanKind(trace.SpanKindServer))
				if span.IsRecording() {
					span.SetAttributes(telemetry.AttrMethod.String("tools/call"), telemetry.AttrServer.String("echo"), telemetry.AttrTool.String("echo"),
						telemetry.AttrTenant.String("default"), telemetry.AttrPrincipal.String("dev"), telemetry.AttrDecision.String("DECISION_ALLOW"))
				}
				telemetry.End(span, nil)
			}
		})
	}
}
