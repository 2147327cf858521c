package ingress

import (
	"bytes"
	"net/http"
	"sync"
	"time"
)

// sseWriter writes JSON-RPC messages as Server-Sent Events and flushes each one. Each write
// has its own deadline: a host that stops reading fails the write instead of holding it.
type sseWriter struct {
	mu      sync.Mutex // the standalone stream's keep-alive pings write concurrently
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
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
}

// abort makes the write in progress, and every later one, fail now.
func (s *sseWriter) abort() {
	_ = s.rc.SetWriteDeadline(time.Now())
}

var (
	eventPrefix = []byte("event: message\ndata: ")
	newlineData = []byte("\ndata: ")
)

// send writes one message as one event. JSON has no raw newlines inside strings, so a
// multi-line encoding splits into several data lines that the reader joins back.
func (s *sseWriter) send(msg []byte) error {
	buf := make([]byte, 0, len(eventPrefix)+len(msg)+2)
	buf = append(buf, eventPrefix...)
	msg = bytes.ReplaceAll(msg, []byte("\r"), nil)
	if bytes.IndexByte(msg, '\n') >= 0 {
		msg = bytes.ReplaceAll(bytes.TrimRight(msg, "\n"), []byte("\n"), newlineData)
	}
	buf = append(buf, msg...)
	buf = append(buf, '\n', '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadline()
	if _, err := s.w.Write(buf); err != nil {
		return err
	}
	return s.rc.Flush()
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
