package ingress

import (
	"bytes"
	"errors"
	"io"
	"net/http/httptest"
	"testing"
	"testing/iotest"
)

// TestReadBody: a body of declared length arrives whole however it is split, past the
// preallocation too; a short one is an unexpected EOF. A declared length allocates at most
// bodyPrealloc before bytes arrive.
func TestReadBody(t *testing.T) {
	for _, size := range []int{0, 1, 16 << 10, bodyPrealloc, bodyPrealloc + 1, 3*bodyPrealloc + 7} {
		want := bytes.Repeat([]byte("x"), size)
		r := httptest.NewRequest("POST", "/", iotest.HalfReader(bytes.NewReader(want)))
		r.ContentLength = int64(size)
		got, err := readBody(httptest.NewRecorder(), r, 1<<20)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d: %d bytes, %v", size, len(got), err)
		}
	}
	r := httptest.NewRequest("POST", "/", bytes.NewReader(make([]byte, 100)))
	r.ContentLength = 200
	if _, err := readBody(httptest.NewRecorder(), r, 1<<20); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short body: %v, want unexpected EOF", err)
	}
	// Declared 1 MiB, one byte sent and then nothing: what is held is the preallocation.
	stalled := &firstByteThenFail{}
	r = httptest.NewRequest("POST", "/", stalled)
	r.ContentLength = 1 << 20
	if _, err := readBody(httptest.NewRecorder(), r, 1<<20); err == nil || stalled.largest > bodyPrealloc {
		t.Fatalf("stalled body: %v, largest read buffer %d, want at most %d", err, stalled.largest, bodyPrealloc)
	}
}

// firstByteThenFail gives one byte, then fails as a read deadline would; it records the
// largest buffer it was asked to fill.
type firstByteThenFail struct {
	sent    bool
	largest int
}

func (f *firstByteThenFail) Read(p []byte) (int, error) {
	f.largest = max(f.largest, len(p))
	if !f.sent {
		f.sent = true
		p[0] = 'x'
		return 1, nil
	}
	return 0, errors.New("i/o timeout")
}
