package rpcserver_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/grpchealth"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

type served struct {
	mux     *rpcserver.Mux
	addr    string
	entered chan struct{}
	release chan struct{}
	stopped chan grpchealth.Status // the health status when Stopping ran
	done    chan error
	cancel  context.CancelFunc
}

// start serves one handler that signals entered and then waits for release or the end of
// its request.
func start(t *testing.T, drain time.Duration) *served {
	t.Helper()
	s := &served{entered: make(chan struct{}, 1), release: make(chan struct{}), stopped: make(chan grpchealth.Status, 1), done: make(chan error, 1)}
	s.mux = rpcserver.NewMux(rpcserver.Handler{Service: "test.v1.Slow", Path: "/slow/", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.entered <- struct{}{}
		select {
		case <-s.release:
			_, _ = io.WriteString(w, "done")
		case <-r.Context().Done():
		}
	})})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	t.Cleanup(cancel)
	stopping := func() {
		res, err := s.mux.Health.Check(context.Background(), &grpchealth.CheckRequest{Service: "test.v1.Slow"})
		if err != nil {
			t.Error(err)
		}
		s.stopped <- res.Status
	}
	go func() {
		s.done <- rpcserver.ServeUntil(ctx, ln, rpcserver.NewServer(s.mux), rpcserver.Shutdown{Mux: s.mux, Stopping: stopping, Drain: drain}, slog.New(slog.DiscardHandler))
	}()
	return s
}

type result struct {
	body string
	err  error
}

func (s *served) get() <-chan result {
	out := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + s.addr + "/slow/x")
		if err != nil {
			out <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out <- result{body: string(b), err: err}
	}()
	return out
}

func wait[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("no %s within 20s", what)
		panic("unreachable")
	}
}

func TestShutdownDrainsInFlight(t *testing.T) {
	s := start(t, time.Minute)
	res := s.get()
	wait(t, s.entered, "request in the handler")
	s.cancel()
	if got := wait(t, s.stopped, "Stopping"); got != grpchealth.StatusNotServing {
		t.Errorf("health at Stopping: %v, want NOT_SERVING first", got)
	}
	// New connections are refused once the drain has begun.
	testsync.WaitFor(t, 10*time.Second, "new connections to be refused while draining", func() bool {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			return true
		}
		_ = c.Close()
		return false
	})
	close(s.release)
	if r := wait(t, res, "response"); r.err != nil || r.body != "done" {
		t.Fatalf("in-flight request: %q %v, want it to finish", r.body, r.err)
	}
	if err := wait(t, s.done, "ServeUntil to return"); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownHardDeadline(t *testing.T) {
	s := start(t, 50*time.Millisecond)
	res := s.get()
	wait(t, s.entered, "request in the handler")
	s.cancel()
	// The handler never finishes on its own: the deadline closes its connection.
	if err := wait(t, s.done, "ServeUntil to return"); err != nil {
		t.Fatal(err)
	}
	if r := wait(t, res, "response"); r.err == nil {
		t.Fatalf("a hung request got %q, want its connection closed", r.body)
	}
}
