package ingress

import (
	"net/http/httptest"
	"testing"
)

// TestTraceID: a valid traceparent's trace id is taken; an invalid or all-zero one is replaced
// by a fresh id.
func TestTraceID(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, tc := range []struct {
		header string
		keep   bool
	}{
		{"00-" + id + "-00f067aa0ba902b7-01", true},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", true},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", false},
		{"00-" + id + "-00f067aa0ba902b7", false},
		{"", false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.header != "" {
			r.Header.Set("Traceparent", tc.header)
		}
		got := traceID(r)
		if kept := len(tc.header) == 55 && got == tc.header[3:35]; kept != tc.keep {
			t.Errorf("%q: trace id %q, kept %v, want %v", tc.header, got, kept, tc.keep)
		}
		if len(got) != 32 || !isHex(got) || got == "00000000000000000000000000000000" {
			t.Errorf("%q: trace id %q is not 32 hex digits, not zero", tc.header, got)
		}
	}
}
