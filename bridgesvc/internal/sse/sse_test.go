package sse

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestReader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		want   []Event
		lastID string
	}{
		{
			name: "single data line",
			in:   "data: {\"a\":1}\n\n",
			want: []Event{{Type: "message", Data: []byte(`{"a":1}`)}},
		},
		{
			name: "multi-line data, comments, CRLF and CR endings",
			in:   ": comment\r\nid: 7\r\ndata: one\rdata:two\r\n\r\n",
			want: []Event{{Type: "message", ID: "7", Data: []byte("one\ntwo")}},
		},
		{
			name:   "priming event with empty data, then an event without data sets the id only",
			in:     "id: 0\ndata\n\nid: 1\n\nevent: custom\ndata: x\n\n",
			want:   []Event{{Type: "message", ID: "0", Data: []byte("")}, {Type: "custom", ID: "1", Data: []byte("x")}},
			lastID: "1",
		},
		{
			name: "empty data field counts as data",
			in:   "data\n\n",
			want: []Event{{Type: "message", Data: []byte("")}},
		},
		{
			name: "unterminated event at the end is dropped",
			in:   "data: a\n\ndata: b\n",
			want: []Event{{Type: "message", Data: []byte("a")}},
		},
		{
			name: "unknown fields and a NUL in an id are ignored",
			in:   "id: a\x00b\nfoo: bar\ndata: z\n\n",
			want: []Event{{Type: "message", Data: []byte("z")}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// One byte at a time exercises every split of a line and of a CRLF.
			r := NewReader(iotest.OneByteReader(strings.NewReader(tc.in)), 1024)
			var got []Event
			for {
				ev, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("Next: %v", err)
				}
				got = append(got, ev)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d events %+v, want %+v", len(got), got, tc.want)
			}
			for i := range got {
				if got[i].Type != tc.want[i].Type || got[i].ID != tc.want[i].ID || string(got[i].Data) != string(tc.want[i].Data) {
					t.Errorf("event %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
			if tc.lastID != "" && r.LastEventID() != tc.lastID {
				t.Errorf("LastEventID = %q, want %q", r.LastEventID(), tc.lastID)
			}
		})
	}
}

func TestReaderRetry(t *testing.T) {
	t.Parallel()
	r := NewReader(strings.NewReader("retry: 250\n\nretry: x\n\n"), 64)
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("Next = %v", err)
	}
	if d, ok := r.Retry(); !ok || d != 250*time.Millisecond {
		t.Fatalf("Retry = %v, %v", d, ok)
	}
}

func TestReaderLimits(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"long line":             "data: " + strings.Repeat("x", 100) + "\n\n",
		"endless line":          strings.Repeat("y", 1000),
		"many small data lines": strings.Repeat("data: 0123456789\n", 20) + "\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := NewReader(strings.NewReader(in), 64).Next()
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Next = %v, want ErrTooLarge", err)
			}
		})
	}
}

func FuzzReader(f *testing.F) {
	for _, s := range []string{"data: a\n\n", "id: 1\r\ndata: b\r\ndata: c\r\n\r\n", ": x\rdata\r\r", "retry: 10\nevent: e\ndata:d\n\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r := NewReader(strings.NewReader(in), 64)
		for range len(in) + 1 {
			ev, err := r.Next()
			if err != nil {
				return
			}
			if len(ev.Data) > 64 || ev.Type == "" {
				t.Fatalf("bad event %+v", ev)
			}
		}
		t.Fatal("Next never ended")
	})
}

// TestReleasedReaderStartsClean: a Reader reused after Release keeps nothing of its last
// stream (its id, its retry), and events read before the Release keep their data.
func TestReleasedReaderStartsClean(t *testing.T) {
	first := NewReader(strings.NewReader("id: 9\nretry: 1000\ndata: kept\n\ndata: partial\r"), 1<<10)
	ev, err := first.Next()
	if err != nil || string(ev.Data) != "kept" {
		t.Fatalf("first stream = %+v, %v", ev, err)
	}
	if _, err := first.Next(); err == nil {
		t.Fatal("the unterminated event was dispatched")
	}
	first.Release()
	second := NewReader(strings.NewReader("\ndata: fresh\n\n"), 1<<10)
	defer second.Release()
	got, err := second.Next()
	if err != nil || string(got.Data) != "fresh" || got.ID != "" || second.LastEventID() != "" {
		t.Fatalf("second stream = %+v, %v (last id %q)", got, err, second.LastEventID())
	}
	if _, ok := second.Retry(); ok {
		t.Fatal("the second stream inherited the first one's retry")
	}
	if string(ev.Data) != "kept" {
		t.Fatalf("an event of the released reader changed: %q", ev.Data)
	}
}
