package stdio

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
)

var errLineTooLong = errors.New("line too long")

// minBuf is the buffer a line reader starts with and returns to after a long line: an idle
// child costs this much per stream, not its largest possible message.
const minBuf = 4 << 10

// lineReader reads newline-delimited lines of bounded length into a buffer sized by need: it
// starts at minBuf, doubles as a line needs it (up to the limit plus CRLF), and goes back to
// minBuf once the long line is consumed.
type lineReader struct {
	r          io.Reader
	max        int
	base       int // the resting buffer size: min(minBuf, max+2)
	buf        []byte
	start, end int   // buffered bytes are buf[start:end]
	err        error // a read error held until the bytes before it are consumed
	skip       bool  // nextTruncated: drop input up to the next newline
	size       atomic.Int64
}

func newLineReader(r io.Reader, max int) *lineReader {
	lr := &lineReader{r: r, max: max, base: min(minBuf, max+2)}
	lr.setBuf(make([]byte, lr.base))
	return lr
}

// bufferBytes is the memory the reader holds for buffering; safe to call from any goroutine.
func (r *lineReader) bufferBytes() int { return int(r.size.Load()) }

func (r *lineReader) setBuf(b []byte) {
	var n int
	if r.buf != nil {
		n = copy(b, r.buf[r.start:r.end])
	}
	r.buf, r.start, r.end = b, 0, n
	r.size.Store(int64(cap(b)))
}

// consumed drops what was read so far and, after a long line, returns to the resting size.
func (r *lineReader) consumed() {
	if r.start == r.end {
		r.start, r.end = 0, 0
	}
	if len(r.buf) > r.base && r.end-r.start <= r.base {
		r.setBuf(make([]byte, r.base))
	}
}

var errFull = errors.New("buffer at its limit")

// fill reads more input, compacting or growing the buffer first when it is full.
func (r *lineReader) fill() error {
	if r.err != nil {
		return r.err
	}
	if r.end == len(r.buf) {
		switch {
		case r.start > 0:
			n := copy(r.buf, r.buf[r.start:r.end])
			r.start, r.end = 0, n
		case len(r.buf) >= r.max+2:
			return errFull
		default:
			r.setBuf(make([]byte, min(2*len(r.buf), r.max+2)))
		}
	}
	for range 100 {
		n, err := r.r.Read(r.buf[r.end:])
		r.end += n
		if err != nil {
			r.err = err
		}
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	r.err = io.ErrNoProgress
	return r.err
}

// next returns the next line without its terminator (LF or CRLF) in a slice of its own. A
// final line without a terminator is returned before io.EOF. A line over max bytes is an
// errLineTooLong, returned as soon as the limit is passed (nothing more is buffered).
func (r *lineReader) next() ([]byte, error) {
	for scanned := 0; ; {
		if i := bytes.IndexByte(r.buf[r.start+scanned:r.end], '\n'); i >= 0 {
			nl := r.start + scanned + i
			line := trimEOL(r.buf[r.start : nl+1])
			r.start = nl + 1
			if len(line) > r.max {
				return nil, errLineTooLong
			}
			out := bytes.Clone(line)
			r.consumed()
			return out, nil
		}
		scanned = r.end - r.start
		// One byte of slack for the CR of a CRLF.
		if scanned > r.max+1 {
			return nil, errLineTooLong
		}
		err := r.fill()
		switch {
		case err == nil:
		case errors.Is(err, errFull):
			return nil, errLineTooLong
		case errors.Is(err, io.EOF) && r.end > r.start:
			if r.end-r.start > r.max {
				return nil, errLineTooLong
			}
			out := bytes.Clone(r.buf[r.start:r.end])
			r.start = r.end
			r.consumed()
			return out, nil
		default:
			return nil, err
		}
	}
}

// nextTruncated returns the next line cut to max bytes; the rest of a longer line is read
// and dropped.
func (r *lineReader) nextTruncated() ([]byte, error) {
	for scanned := 0; ; {
		if i := bytes.IndexByte(r.buf[r.start+scanned:r.end], '\n'); i >= 0 {
			nl := r.start + scanned + i
			line := trimEOL(r.buf[r.start : nl+1])
			r.start = nl + 1
			if r.skip {
				r.skip = false
				r.consumed()
				scanned = 0
				continue
			}
			out := bytes.Clone(line[:min(len(line), r.max)])
			r.consumed()
			return out, nil
		}
		scanned = r.end - r.start
		if r.skip {
			r.start, scanned = r.end, 0
			r.consumed()
		} else if scanned >= r.max+2 {
			// The buffer is full with no newline: return the head, drop the rest.
			out := bytes.Clone(r.buf[r.start : r.start+r.max])
			r.start, r.skip = r.end, true
			r.consumed()
			return out, nil
		}
		if err := r.fill(); err != nil {
			if r.end > r.start && !r.skip {
				line := r.buf[r.start:r.end]
				out := bytes.Clone(line[:min(len(line), r.max)])
				r.start = r.end
				r.consumed()
				return out, nil
			}
			return nil, err
		}
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}
