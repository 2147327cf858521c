package stdio

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestLineReader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		max  int
		want []string
		err  error
	}{
		{name: "lines", in: "a\nbb\r\n\nccc", max: 3, want: []string{"a", "bb", "", "ccc"}, err: io.EOF},
		{name: "exactly max with CRLF", in: "abcd\r\n", max: 4, want: []string{"abcd"}, err: io.EOF},
		{name: "over max", in: "abcde\n", max: 4, err: errLineTooLong},
		{name: "endless", in: strings.Repeat("x", 1000), max: 16, err: errLineTooLong},
		{name: "final line over max", in: "ab\nabcdef", max: 4, want: []string{"ab"}, err: errLineTooLong},
		{name: "max fills the resting buffer with CRLF", in: strings.Repeat("m", 4094) + "\r\nz", max: 4094, want: []string{strings.Repeat("m", 4094), "z"}, err: io.EOF},
		{name: "line that grows the buffer", in: "a\n" + strings.Repeat("g", 10000) + "\nb\n", max: 10000, want: []string{"a", strings.Repeat("g", 10000), "b"}, err: io.EOF},
		{name: "grown line over max", in: strings.Repeat("g", 10001) + "\n", max: 10000, err: errLineTooLong},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lr := newLineReader(iotest.HalfReader(strings.NewReader(tc.in)), tc.max)
			var got []string
			var err error
			for {
				var line []byte
				if line, err = lr.next(); err != nil {
					break
				}
				got = append(got, string(line))
			}
			if !errors.Is(err, tc.err) || strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestLineReaderTruncated(t *testing.T) {
	t.Parallel()
	lr := newLineReader(strings.NewReader(strings.Repeat("y", 100)+"\nshort\nlast"), 20)
	var got []string
	for {
		line, err := lr.nextTruncated()
		if len(line) > 0 {
			got = append(got, string(line))
		}
		if err != nil {
			break
		}
	}
	if strings.Join(got, "|") != strings.Repeat("y", 20)+"|short|last" {
		t.Fatalf("got %q", got)
	}
}

// TestLineReaderBuffer: the buffer starts at its resting size, grows for a long line and goes
// back once the line is consumed.
func TestLineReaderBuffer(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("L", 300000)
	lr := newLineReader(iotest.HalfReader(strings.NewReader("short\n"+long+"\nafter\n")), 1<<20)
	if n := lr.bufferBytes(); n != minBuf {
		t.Fatalf("a new reader holds %d bytes, want %d", n, minBuf)
	}
	for _, want := range []string{"short", long, "after"} {
		line, err := lr.next()
		if err != nil || string(line) != want {
			t.Fatalf("next = %.20q (%d bytes), %v; want %.20q", line, len(line), err, want)
		}
		if n := lr.bufferBytes(); n != minBuf {
			t.Fatalf("after a %d-byte line the reader holds %d bytes, want %d", len(want), n, minBuf)
		}
	}
	// A small limit makes a smaller resting buffer.
	if n := newLineReader(strings.NewReader(""), 100).bufferBytes(); n != 102 {
		t.Fatalf("a reader of 100-byte lines holds %d bytes, want 102", n)
	}
}
