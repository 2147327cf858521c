package sse

import (
	"bytes"
	"testing"
)

// lineEnd finds what bytes.IndexAny(b, "\r\n") finds.
func TestLineEnd(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 20000)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"no terminator", []byte("data: {}")},
		{"LF", []byte("data: {}\nnext")},
		{"CR", []byte("data: {}\rnext")},
		{"CRLF", []byte("data: {}\r\nnext")},
		{"LF before CR", []byte("a\nb\rc")},
		{"CR before LF", []byte("a\rb\nc")},
		{"terminator first", []byte("\nabc")},
		{"long line then LF", append(append([]byte{}, long...), '\n')},
		{"long line then CR", append(append([]byte{}, long...), '\r', '\n')},
		{"long line, no terminator", long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := lineEnd(tc.b), bytes.IndexAny(tc.b, "\r\n"); got != want {
				t.Fatalf("lineEnd = %d, want %d", got, want)
			}
		})
	}
}

func FuzzLineEnd(f *testing.F) {
	f.Add([]byte("a\r\nb"))
	f.Add([]byte("abc\ndef\r"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := lineEnd(b), bytes.IndexAny(b, "\r\n"); got != want {
			t.Fatalf("lineEnd(%q) = %d, want %d", b, got, want)
		}
	})
}
