package streamable

import "testing"

// TestMediaType: the bare fast path and mime.ParseMediaType's answer agree on every form.
func TestMediaType(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		{"event stream", "text/event-stream", "text/event-stream"},
		{"json", "application/json", "application/json"},
		{"json with charset", "application/json; charset=utf-8", "application/json"},
		{"upper case", "Text/Event-Stream", "text/event-stream"},
		{"spaces", " application/json ", "application/json"},
		{"other type", "text/html", "text/html"},
		{"empty", "", ""},
		{"not a media type", "text/", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := mediaType(tc.in); got != tc.want {
				t.Errorf("mediaType(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
