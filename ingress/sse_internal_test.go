package ingress

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestSSEAbortSticks: after abort, a later write fails too, although each write sets its own
// deadline.
func TestSSEAbortSticks(t *testing.T) {
	results := make(chan error, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sse := startSSE(w, time.Minute)
		results <- sse.send([]byte(`{"n":1}`))
		sse.abort()
		results <- sse.send([]byte(`{"n":2}`))
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	go func() { _, _ = io.Copy(io.Discard, resp.Body) }()
	if err := <-results; err != nil {
		t.Fatalf("send before abort: %v", err)
	}
	if err := <-results; err == nil {
		t.Fatal("send after abort succeeded")
	}
}
