package ingress

import (
	"encoding/hex"
	"mime"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// TestTraceID: a valid traceparent's trace id is the request span's; an invalid or all-zero
// one (upper-case hex included: W3C trace context is lower case) gives a new root.
func TestTraceID(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, tc := range []struct {
		header string
		keep   bool
	}{
		{"00-" + id + "-00f067aa0ba902b7-01", true},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", false},
		{"00-" + id + "-00f067aa0ba902b7", false},
		{"", false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.header != "" {
			r.Header.Set("Traceparent", tc.header)
		}
		r, span, got := startExchange(r, "s")
		span.End()
		if kept := len(tc.header) == 55 && got == tc.header[3:35]; kept != tc.keep {
			t.Errorf("%q: trace id %q, kept %v, want %v", tc.header, got, kept, tc.keep)
		}
		if tid, err := hex.DecodeString(got); err != nil || len(tid) != 16 || got == "00000000000000000000000000000000" || strings.ToLower(got) != got {
			t.Errorf("%q: trace id %q is not 32 lower-case hex digits, not zero", tc.header, got)
		}
		if sc := trace.SpanContextFromContext(r.Context()); sc.TraceID().String() != got || sc.IsRemote() {
			t.Errorf("%q: the request's context holds span %v, want the local span of trace %s", tc.header, sc, got)
		}
	}
}

// TestAccepts: bare types match without parsing; parameters, case and wildcards as
// mime.ParseMediaType reads them.
func TestAccepts(t *testing.T) {
	for _, tc := range []struct {
		accept []string
		json   bool
		sse    bool
	}{
		{[]string{"application/json, text/event-stream"}, true, true},
		{[]string{"application/json", "text/event-stream"}, true, true},
		{[]string{"Application/JSON;q=0.9 , text/*"}, true, true},
		{[]string{"*/*"}, true, true},
		{[]string{"application/*"}, true, false},
		{[]string{"text/event-stream; charset=utf-8"}, false, true},
		{[]string{"application/jsonx, text/plain"}, false, false},
		{[]string{"application/json;;bad"}, false, false},
		{nil, false, false},
	} {
		r := httptest.NewRequest("POST", "/", nil)
		for _, v := range tc.accept {
			r.Header.Add("Accept", v)
		}
		if got := accepts(r, "application/json"); got != tc.json {
			t.Errorf("%q: accepts application/json = %v, want %v", tc.accept, got, tc.json)
		}
		if got := accepts(r, "text/event-stream"); got != tc.sse {
			t.Errorf("%q: accepts text/event-stream = %v, want %v", tc.accept, got, tc.sse)
		}
	}
	r := httptest.NewRequest("POST", "/", nil)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	if allocs := testing.AllocsPerRun(100, func() {
		if !accepts(r, "application/json") || !accepts(r, "text/event-stream") {
			t.Fatal("not accepted")
		}
	}); allocs != 0 {
		t.Errorf("accepts of the common Accept header: %v allocations, want 0", allocs)
	}
}

// TestBareType: a value bareType admits is exactly what mime.ParseMediaType returns for it.
func TestBareType(t *testing.T) {
	for _, v := range []string{
		"application/json", "text/event-stream", "*/*", "text/*", "application/vnd.a+json",
		"Application/json", "application/json;q=1", "application/", "/json", "application",
		"a/b/c", "a b/c", "a/\"b\"", "a\\b/c", "text/event-ſtream", "te\x7fxt/plain", "",
	} {
		mt, params, err := mime.ParseMediaType(v)
		if bareType(v) && (err != nil || mt != v || len(params) != 0) {
			t.Errorf("bareType(%q), but ParseMediaType gives %q %v %v", v, mt, params, err)
		}
	}
}
