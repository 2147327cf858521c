package ingress

import (
	"bytes"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sseWriter writes JSON-RPC messages as Server-Sent Events and flushes each one. Each write
// has its own deadline: a host that stops reading fails the write instead of holding it.
type sseWriter struct {
	mu      sync.Mutex // the standalone stream's keep-alive pings write concurrently
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	aborted atomic.Bool // set by abort: no later write gets a deadline in the future
}

// startSSE writes the stream's headers; they reach the host with the first event, in the same
// write (call flush to send them alone).
func startSSE(w http.ResponseWriter, timeout time.Duration) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sseWriter{w: w, rc: http.NewResponseController(w), timeout: timeout}
}

func (s *sseWriter) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadline()
	return s.rc.Flush()
}

// deadline bounds the next write; the caller holds mu. A writer that cannot take deadlines
// (http.ErrNotSupported) writes without one.
func (s *sseWriter) deadline() {
	if s.timeout > 0 {
		_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	}
	// Checked after setting it: an abort that ran before this, or meanwhile, keeps its
	// deadline in the past (abort sets the flag before the deadline).
	if s.aborted.Load() {
		_ = s.rc.SetWriteDeadline(time.Now())
	}
}

// abort makes the write in progress, and every later one, fail now.
func (s *sseWriter) abort() {
	s.aborted.Store(true)
	_ = s.rc.SetWriteDeadline(time.Now())
}

var (
	eventPrefix = []byte("event: message\ndata: ")
	newlineData = []byte("\ndata: ")
)

// event encodes one message as one event. JSON has no raw newlines inside strings, so a
// multi-line encoding splits into several data lines that the reader joins back. The common
// message, one line without a carriage return, is copied once.
// The buffer comes from eventBufs; the caller gives it back with putEventBuf once written.
func event(msg []byte) *[]byte {
	if bytes.IndexByte(msg, '\r') >= 0 {
		msg = bytes.ReplaceAll(msg, []byte("\r"), nil)
	}
	if bytes.IndexByte(msg, '\n') >= 0 {
		msg = bytes.ReplaceAll(bytes.TrimRight(msg, "\n"), []byte("\n"), newlineData)
	}
	bp := eventBufs.Get().(*[]byte)
	buf := append((*bp)[:0], eventPrefix...)
	buf = append(buf, msg...)
	*bp = append(buf, '\n', '\n')
	return bp
}

// eventBufs holds event buffers between writes, so that a call's answer (as large as the
// upstream's message) need not be garbage. A buffer goes back only after a write and flush
// that succeeded: then net/http holds nothing of it, while after a failure an HTTP/2 frame
// write may still be reading it.
var eventBufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledEvent is the largest event buffer kept for reuse.
const maxPooledEvent = 256 << 10

func putEventBuf(bp *[]byte) {
	if cap(*bp) <= maxPooledEvent {
		*bp = (*bp)[:0]
		eventBufs.Put(bp)
	}
}

// send writes one message as one event and flushes it.
func (s *sseWriter) send(msg []byte) error {
	bp := event(msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadline()
	if _, err := s.w.Write(*bp); err != nil {
		return err
	}
	if err := s.rc.Flush(); err != nil {
		return err
	}
	putEventBuf(bp)
	return nil
}

// writeLoneEvent answers with a stream of exactly one event, msg: the answer to a call that
// streamed nothing before it. The stream's length is known, so it goes with a Content-Length
// instead of chunked: headers and event leave in one write (two for an event larger than the
// connection's buffer), and no closing chunk follows, which the host would read on its own.
func writeLoneEvent(w http.ResponseWriter, timeout time.Duration, msg []byte) error {
	bp := event(msg)
	buf := *bp
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if timeout > 0 {
		_ = rc.SetWriteDeadline(time.Now().Add(timeout))
	}
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if err := rc.Flush(); err != nil {
		return err
	}
	putEventBuf(bp)
	return nil
}

func (s *sseWriter) comment(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadline()
	if _, err := s.w.Write([]byte(": " + text + "\n\n")); err != nil {
		return err
	}
	return s.rc.Flush()
}
