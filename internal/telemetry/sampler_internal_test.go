package telemetry

import (
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TestHostCannotForceSampling: a host's sampled flag does not overrule a ratio of 0 or
// parent-based always-off.
func TestHostCannotForceSampling(t *testing.T) {
	t.Parallel()
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	for _, env := range []map[string]string{
		{EnvSampler: "parentbased_traceidratio", EnvSamplerArg: "0"},
		{EnvSampler: "parentbased_always_off"},
	} {
		s, err := samplerFrom(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		res := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: trace.ContextWithSpanContext(t.Context(), parent), TraceID: parent.TraceID(), Name: "x"})
		if res.Decision != sdktrace.Drop {
			t.Errorf("%v: a host's sampled flag forced sampling (%v)", env, res.Decision)
		}
	}
}
