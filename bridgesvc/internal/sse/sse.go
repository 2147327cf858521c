// Package sse reads a text/event-stream (the WHATWG server-sent events format) with bounded
// line and event sizes, for the bridge's Streamable HTTP client.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
)

// ErrTooLarge is returned when a line or an event's data exceeds the reader's limit.
var ErrTooLarge = errors.New("event too large")

// Event is one dispatched event. Type is "message" when the stream named none.
type Event struct {
	Type string
	// ID is the stream's last event id when the event was dispatched.
	ID   string
	Data []byte
}

// Reader reads events from a stream. It is not safe for concurrent use.
type Reader struct {
	br     *bufio.Reader
	max    int
	skipLF bool // the previous line ended in CR; a following LF belongs to it
	line   []byte
	lastID string
	retry  time.Duration
	hasRet bool
}

// Buffers of a Reader: bufSize is read from the stream at a time (a longer line is gathered
// in pieces); a line buffer grown past maxPooledLine is not kept for reuse.
const (
	bufSize       = 16 << 10
	maxPooledLine = 256 << 10
)

// readers holds released Readers, so that a response stream per call does not allocate its
// buffers anew.
var readers = sync.Pool{New: func() any { return &Reader{br: bufio.NewReaderSize(nil, bufSize)} }}

// NewReader returns a Reader whose lines and event data are each at most max bytes. Release
// it when done.
func NewReader(r io.Reader, max int) *Reader {
	rd := readers.Get().(*Reader)
	rd.br.Reset(r)
	rd.max = max
	rd.skipLF, rd.line, rd.lastID, rd.retry, rd.hasRet = false, rd.line[:0], "", 0, false
	return rd
}

// Release hands the Reader's buffers back for reuse; it must not be used afterwards. Events
// it returned stay valid: their data is never in its buffers.
func (r *Reader) Release() {
	r.br.Reset(nil)
	if cap(r.line) > maxPooledLine {
		r.line = nil
	}
	readers.Put(r)
}

// LastEventID is the id of the last event seen, including events without data (such as the
// priming event a resumable MCP stream starts with); "" before any.
func (r *Reader) LastEventID() string { return r.lastID }

// Retry is the reconnection delay the stream asked for, if it asked.
func (r *Reader) Retry() (time.Duration, bool) { return r.retry, r.hasRet }

// Next returns the next event that has a data field (possibly empty, like the priming event
// of a resumable MCP stream). Comments and events without a data field are
// consumed silently. At the end of the stream it returns io.EOF; an unterminated event at the
// end is discarded, as the format requires.
func (r *Reader) Next() (Event, error) {
	var (
		typ     string
		data    []byte
		hasData bool
	)
	for {
		line, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Event{}, io.EOF
			}
			return Event{}, err
		}
		if len(line) == 0 {
			if hasData {
				if typ == "" {
					typ = "message"
				}
				return Event{Type: typ, ID: r.lastID, Data: data}, nil
			}
			typ, data = "", nil
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if len(data)+len(value)+1 > r.max {
				return Event{}, fmt.Errorf("%w: event data exceeds %d bytes", ErrTooLarge, r.max)
			}
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case "event":
			typ = string(value)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				r.lastID = string(value)
			}
		case "retry":
			if ms, err := strconv.ParseUint(string(value), 10, 31); err == nil {
				r.retry, r.hasRet = time.Duration(ms)*time.Millisecond, true
			}
		}
	}
}

// readLine returns the next line without its terminator (CR, LF or CRLF). The slice is valid
// until the next call.
func (r *Reader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	for {
		if r.skipLF {
			b, err := r.br.Peek(1)
			if err != nil {
				return nil, err
			}
			r.skipLF = false
			if b[0] == '\n' {
				_, _ = r.br.Discard(1)
			}
		}
		if _, err := r.br.Peek(1); err != nil {
			if len(r.line) > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		buf, _ := r.br.Peek(r.br.Buffered())
		i := lineEnd(buf)
		if i < 0 {
			if len(r.line)+len(buf) > r.max {
				return nil, fmt.Errorf("%w: line exceeds %d bytes", ErrTooLarge, r.max)
			}
			r.line = append(r.line, buf...)
			_, _ = r.br.Discard(len(buf))
			continue
		}
		if len(r.line)+i > r.max {
			return nil, fmt.Errorf("%w: line exceeds %d bytes", ErrTooLarge, r.max)
		}
		r.line = append(r.line, buf[:i]...)
		r.skipLF = buf[i] == '\r'
		_, _ = r.br.Discard(i + 1)
		return r.line, nil
	}
}

// lineEnd is the index of the first CR or LF in b, or -1: bytes.IndexAny(b, "\r\n") with
// two vectorised single-byte searches instead of a byte-at-a-time set lookup (an event's data
// line is the whole message, kilobytes long).
func lineEnd(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	limit := b
	if i >= 0 {
		limit = b[:i]
	}
	if j := bytes.IndexByte(limit, '\r'); j >= 0 {
		return j
	}
	return i
}
