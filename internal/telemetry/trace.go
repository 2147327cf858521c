// Package telemetry is how every Gatehouse process is observed: its traces (this file and
// trace*.go: a TracerProvider from the standard OTEL_* environment, W3C trace context across
// internal RPCs, the span helpers of the services' handlers and a log handler that stamps
// each line with the trace and span ids of its context) and its metrics (metrics*.go).
//
// Tracing is always on in the sense that matters to an operator: every call has a trace id,
// in its log lines, its audit records and what the upstream receives. Exporting spans is
// what the environment turns on; without it the provider only makes ids (IDsOnly), which
// costs an id and a context per span and records nothing.
package telemetry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"
)

// The environment variables Setup reads (the OpenTelemetry SDK's standard names). The
// exporter itself also reads the other OTEL_EXPORTER_OTLP_* variables (headers, timeout,
// certificates, compression) and the batch processor OTEL_BSP_*, from the process's
// environment.
const (
	EnvSDKDisabled    = "OTEL_SDK_DISABLED"
	EnvTracesExporter = "OTEL_TRACES_EXPORTER"
	EnvEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	EnvServiceName    = "OTEL_SERVICE_NAME"
	EnvSampler        = "OTEL_TRACES_SAMPLER"
	EnvSamplerArg     = "OTEL_TRACES_SAMPLER_ARG"
)

// exporting is whether Setup installed a provider that exports spans (SpanName).
var exporting atomic.Bool

// propagator is the one trace context format Gatehouse reads and writes: W3C traceparent
// and tracestate, at the host's edge, between services and towards upstreams.
var propagator = propagation.TraceContext{}

func init() {
	// A process that never calls Setup (a unit test, a CLI) still gives every span an id,
	// so that logs and audit records carry one. The global is OTel's own (the one global
	// Gatehouse allows itself); Tracer reads it at each span, never caching a tracer.
	otel.SetTracerProvider(IDsOnly())
	otel.SetTextMapPropagator(propagator)
}

// Setup installs the process's TracerProvider from the environment (read through getenv)
// and returns its shutdown, which flushes the spans not yet exported. service is the
// service.name used when OTEL_SERVICE_NAME is not set ("gatehouse-policy").
//
// Spans are exported over OTLP when OTEL_TRACES_EXPORTER is "otlp", or when it is unset and
// an OTLP endpoint is (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT);
// OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL chooses "http/protobuf" (the default) or "grpc".
// Otherwise (nothing set, "none", or OTEL_SDK_DISABLED=true) nothing is exported and the
// provider is IDsOnly. A value Setup cannot honour is an error naming the variable.
func Setup(ctx context.Context, service string, getenv func(string) string) (shutdown func(context.Context) error, err error) {
	exp, err := exporter(ctx, getenv)
	if err != nil || exp == nil {
		otel.SetTracerProvider(IDsOnly())
		return func(context.Context) error { return nil }, err
	}
	sampler, err := samplerFrom(getenv)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, err
	}
	if name := strings.TrimSpace(getenv(EnvServiceName)); name != "" {
		service = name
	}
	exporting.Store(true)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sampler),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))),
	)
	otel.SetTracerProvider(tp)
	return func(ctx context.Context) error {
		err := tp.Shutdown(ctx) // flushes what the batcher holds
		otel.SetTracerProvider(IDsOnly())
		exporting.Store(false)
		return err
	}, nil
}

// exporter is the OTLP exporter the environment asks for, nil for none.
func exporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	if strings.EqualFold(strings.TrimSpace(getenv(EnvSDKDisabled)), "true") {
		return nil, nil
	}
	endpoint, generic := strings.TrimSpace(getenv(EnvTracesEndpoint)), false
	if endpoint == "" {
		endpoint, generic = strings.TrimSpace(getenv(EnvEndpoint)), true
	}
	switch v := strings.TrimSpace(getenv(EnvTracesExporter)); v {
	case "":
		if endpoint == "" {
			return nil, nil
		}
	case "none":
		return nil, nil
	case "otlp":
	default:
		return nil, fmt.Errorf("%s=%.40q: Gatehouse exports traces with otlp or none", EnvTracesExporter, v)
	}
	protocol, name := strings.TrimSpace(getenv(EnvTracesProtocol)), EnvTracesProtocol
	if protocol == "" {
		protocol, name = strings.TrimSpace(getenv(EnvProtocol)), EnvProtocol
	}
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			which := EnvTracesEndpoint
			if generic {
				which = EnvEndpoint
			}
			return nil, fmt.Errorf("%s=%.200q: want an http:// or https:// URL", which, endpoint)
		}
	}
	switch protocol {
	case "", "http/protobuf":
		var opts []otlptracehttp.Option
		if endpoint != "" {
			if generic {
				// The generic endpoint is a base: each signal has its own path under it.
				endpoint = strings.TrimSuffix(endpoint, "/") + "/v1/traces"
			}
			opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
		}
		return otlptracehttp.New(ctx, opts...)
	case "grpc":
		var opts []otlptracegrpc.Option
		if endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(endpoint))
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	return nil, fmt.Errorf("%s=%.40q: want grpc or http/protobuf", name, protocol)
}

// samplerFrom is OTEL_TRACES_SAMPLER with its argument; parent-based always-on by default,
// so a host that sampled its trace has it continued, and one that did not is not overruled.
func samplerFrom(getenv func(string) string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		arg := strings.TrimSpace(getenv(EnvSamplerArg))
		if arg == "" {
			return 1, nil
		}
		f, err := strconv.ParseFloat(arg, 64)
		if err != nil || f < 0 || f > 1 {
			return 0, fmt.Errorf("%s=%.40q: want a ratio from 0 to 1", EnvSamplerArg, arg)
		}
		return f, nil
	}
	switch v := strings.TrimSpace(getenv(EnvSampler)); v {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		// A host's sampled flag is a hint, never an order: it cannot make the gateway
		// export what the operator turned off (the span queue is shared by every tenant).
		return sdktrace.ParentBased(sdktrace.NeverSample(), sdktrace.WithRemoteParentSampled(sdktrace.NeverSample())), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio", "parentbased_traceidratio":
		f, err := ratio()
		if err != nil {
			return nil, err
		}
		if v == "traceidratio" {
			return sdktrace.TraceIDRatioBased(f), nil
		}
		// A remote parent's sampled flag does not overrule the ratio: a host sending -01
		// cannot force the export of every span of its calls.
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(f), sdktrace.WithRemoteParentSampled(sdktrace.TraceIDRatioBased(f))), nil
	default:
		return nil, fmt.Errorf("%s=%.40q: want always_on, always_off, traceidratio or their parentbased_ forms", EnvSampler, v)
	}
}

// Tracer is the named tracer of the process's provider, looked up at each use so that a
// provider Setup installs later is the one used.
func Tracer(scope string) trace.Tracer {
	return otel.GetTracerProvider().Tracer(scope)
}

// IDsOnly is the provider of a process that exports nothing: each span gets a new span id
// (and a root a new trace id), keeps its parent's flags and trace state, and records nothing.
// A new root is not sampled: nobody records it, and the upstream is told so.
func IDsOnly() trace.TracerProvider { return idsOnly{} }

type idsOnly struct{ embedded.TracerProvider }

func (idsOnly) Tracer(string, ...trace.TracerOption) trace.Tracer { return idTracer{} }

type idTracer struct{ embedded.Tracer }

func (idTracer) Start(ctx context.Context, _ string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	parent := trace.SpanContextFromContext(ctx)
	cfg := trace.SpanContextConfig{SpanID: newSpanID()}
	if parent.IsValid() && !newRoot(opts) {
		cfg.TraceID, cfg.TraceFlags, cfg.TraceState = parent.TraceID(), parent.TraceFlags(), parent.TraceState()
	} else {
		cfg.TraceID = newTraceID()
	}
	span := &idSpan{sc: trace.NewSpanContext(cfg)}
	return trace.ContextWithSpan(ctx, span), span
}

// newRoot reports whether opts ask for a new root; only then is the start config built.
func newRoot(opts []trace.SpanStartOption) bool {
	if len(opts) == 0 {
		return false
	}
	cfg := trace.NewSpanStartConfig(opts...)
	return cfg.NewRoot()
}

// idSpan is a span that only has its ids.
type idSpan struct {
	noop.Span
	sc trace.SpanContext
}

func (s *idSpan) SpanContext() trace.SpanContext       { return s.sc }
func (s *idSpan) TracerProvider() trace.TracerProvider { return idsOnly{} }

// Ids need to be unique, not secret: math/rand/v2's generator (ChaCha8, per thread) is as
// good as the SDK's own and makes no system call.
func newTraceID() (id trace.TraceID) {
	for !id.IsValid() {
		hi, lo := rand.Uint64(), rand.Uint64()
		for i := range 8 {
			id[i], id[8+i] = byte(hi>>(56-8*i)), byte(lo>>(56-8*i))
		}
	}
	return id
}

func newSpanID() (id trace.SpanID) {
	for !id.IsValid() {
		v := rand.Uint64()
		for i := range 8 {
			id[i] = byte(v >> (56 - 8*i))
		}
	}
	return id
}
