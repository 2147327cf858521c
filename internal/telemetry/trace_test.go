package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const hostTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// envOf is a getenv over a map.
func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// receiver counts OTLP/HTTP export requests.
func receiver(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/traces" {
			n.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// TestSetup: what the OTEL_* environment turns on. Not parallel: Setup installs OTel's
// global provider.
func TestSetup(t *testing.T) {
	srv, exports := receiver(t)
	for _, tc := range []struct {
		name   string
		env    map[string]string
		export bool
	}{
		{"nothing configured", nil, false},
		{"exporter none", map[string]string{telemetry.EnvTracesExporter: "none", telemetry.EnvEndpoint: srv.URL}, false},
		{"SDK disabled", map[string]string{telemetry.EnvSDKDisabled: "true", telemetry.EnvEndpoint: srv.URL}, false},
		{"an endpoint", map[string]string{telemetry.EnvEndpoint: srv.URL}, true},
		{"a traces endpoint", map[string]string{telemetry.EnvTracesEndpoint: srv.URL + "/v1/traces", telemetry.EnvProtocol: "http/protobuf"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := exports.Load()
			shutdown, err := telemetry.Setup(t.Context(), "gatehouse-test", envOf(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			_, span := telemetry.StartHandler(t.Context(), "test", "/x.v1.S/M")
			if !span.SpanContext().IsValid() {
				t.Fatal("a span without ids")
			}
			if span.IsRecording() != tc.export {
				t.Fatalf("recording %v, want %v", span.IsRecording(), tc.export)
			}
			// A two-part name is joined only when someone reads it.
			if name, want := telemetry.SpanName("tools/call", "echo"), map[bool]string{true: "tools/call echo", false: "tools/call"}[tc.export]; name != want {
				t.Fatalf("SpanName = %q, want %q", name, want)
			}
			span.End()
			if err := shutdown(t.Context()); err != nil { // flushes
				t.Fatal(err)
			}
			if name := telemetry.SpanName("tools/call", "echo"); name != "tools/call" {
				t.Fatalf("SpanName after shutdown = %q, want the first part", name)
			}
			if got := exports.Load() - before; (got > 0) != tc.export {
				t.Fatalf("%d export requests, want export %v", got, tc.export)
			}
		})
	}
}

func TestSetupRefuses(t *testing.T) {
	for _, env := range []map[string]string{
		{telemetry.EnvTracesExporter: "zipkin"},
		{telemetry.EnvTracesExporter: "otlp", telemetry.EnvProtocol: "http/json"},
		{telemetry.EnvEndpoint: "localhost:4318"},
		{telemetry.EnvEndpoint: "http://127.0.0.1:1", telemetry.EnvSampler: "sometimes"},
		{telemetry.EnvEndpoint: "http://127.0.0.1:1", telemetry.EnvSampler: "traceidratio", telemetry.EnvSamplerArg: "2"},
	} {
		if _, err := telemetry.Setup(t.Context(), "x", envOf(env)); err == nil {
			t.Errorf("%v: no error", env)
		}
	}
}

// TestIDsOnly: without an exporter a child keeps its parent's trace, flags and state with a
// span id of its own; a root gets a new, unsampled trace.
func TestIDsOnly(t *testing.T) {
	tr := telemetry.IDsOnly().Tracer("t")
	_, root := tr.Start(context.Background(), "root")
	if sc := root.SpanContext(); !sc.IsValid() || sc.IsSampled() || root.IsRecording() {
		t.Fatalf("root %v recording %v", sc, root.IsRecording())
	}
	parent := telemetry.ExtractTraceparent(context.Background(), hostTraceparent, "k=v")
	_, child := tr.Start(parent, "child")
	sc := child.SpanContext()
	if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() == "00f067aa0ba902b7" || !sc.IsSampled() || sc.TraceState().String() != "k=v" {
		t.Fatalf("child %v", sc)
	}
	if got := telemetry.Traceparent(trace.ContextWithSpan(context.Background(), child)); got != "00-4bf92f3577b34da6a3ce929d0e0e4736-"+sc.SpanID().String()+"-01" {
		t.Fatalf("Traceparent %q", got)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		_, s := tr.Start(parent, "x")
		s.End()
	}); allocs > 2 {
		t.Errorf("a span without an exporter: %v allocations, want at most 2 (the span, the context)", allocs)
	}
}

// TestLogHandler: a line logged with a span's context carries its ids; one that names a
// trace_id keeps it; one without a span has neither.
func TestLogHandler(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&buf, nil))).With("svc", "x")
	ctx, span := telemetry.IDsOnly().Tracer("t").Start(telemetry.ExtractTraceparent(context.Background(), hostTraceparent, ""), "s")
	logger.InfoContext(ctx, "a")
	logger.InfoContext(ctx, "b", "trace_id", "host-said")
	logger.Info("c")
	var lines []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	sid := span.SpanContext().SpanID().String()
	if lines[0]["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" || lines[0]["span_id"] != sid {
		t.Errorf("line a: %v", lines[0])
	}
	if lines[1]["trace_id"] != "host-said" || lines[1]["span_id"] != sid || strings.Count(buf.String(), `"trace_id"`) != 2 {
		t.Errorf("line b: %v (%s)", lines[1], buf.String())
	}
	if _, ok := lines[2]["trace_id"]; ok {
		t.Errorf("line c: %v", lines[2])
	}
}

// TestPropagation: a client made with Transport sends the span of its request's context; a
// server reading it with Extract continues that trace, and a handler span is its child.
// Not parallel: it installs a recording provider as OTel's global.
func TestPropagation(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	var seen trace.SpanContext
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, span := telemetry.StartHandler(telemetry.Extract(r.Context(), r.Header), "server", "/s.v1.S/M")
		seen = span.SpanContext()
		telemetry.End(span, nil)
	}))
	defer srv.Close()
	ctx, caller := telemetry.Tracer("client").Start(telemetry.ExtractTraceparent(context.Background(), hostTraceparent, ""), "call")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	req.Header.Set("Traceparent", "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01") // replaced
	resp, err := (&http.Client{Transport: telemetry.Transport(nil)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	caller.End()
	if req.Header.Get("Traceparent") != "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01" {
		t.Error("Transport changed the caller's request")
	}
	if seen.TraceID() != caller.SpanContext().TraceID() {
		t.Fatalf("the server's span is in trace %s, want %s", seen.TraceID(), caller.SpanContext().TraceID())
	}
	var handler sdktrace.ReadOnlySpan
	for _, s := range exp.GetSpans().Snapshots() {
		if s.Name() == "s.v1.S/M" {
			handler = s
		}
	}
	if handler == nil || handler.Parent().SpanID() != caller.SpanContext().SpanID() || handler.SpanKind() != trace.SpanKindServer {
		t.Fatalf("the handler's span %v, want a server span whose parent is the caller's %s", handler, caller.SpanContext().SpanID())
	}
}
