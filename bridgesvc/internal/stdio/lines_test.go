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
