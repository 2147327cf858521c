package bridgesvc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1/bridgev1connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc"
)

// flakyHTTP is a Streamable HTTP upstream whose tools/call answers are switched by the test:
// "fail" (HTTP 500), "block" (held until release is closed, then answered), "rpcerror" (a
// JSON-RPC error response) or "ok". It counts the tools/call requests it receives.
type flakyHTTP struct {
	mode    atomic.Value // string
	calls   atomic.Int64
	release chan struct{}
}

func newFlakyHTTP(t *testing.T) (*flakyHTTP, string) {
	f := &flakyHTTP{release: make(chan struct{})}
	f.mode.Store("ok")
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func (f *flakyHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	s := string(body)
	switch {
	case r.Method != http.MethodPost:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	case strings.Contains(s, `"initialize"`):
		w.Header().Set("Mcp-Session-Id", "up")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{}}}`)
		return
	case !strings.Contains(s, `"tools/call"`):
		w.WriteHeader(http.StatusAccepted)
		return
	}
	f.calls.Add(1)
	switch f.mode.Load().(string) {
	case "fail":
		http.Error(w, "down", http.StatusInternalServerError)
		return
	case "block":
		select {
		case <-f.release:
		case <-r.Context().Done():
			return
		}
	case "rpcerror":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"no such tool"}}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"jsonrpc":"2.0","id":7,"result":{"content":[]}}`)
}

// fakeClock is the breakers' clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// recordingAudit keeps the records appended to it (auditsvc is another service's module;
// tests/breaker_test.go checks the records in the real log).
type recordingAudit struct {
	mu      sync.Mutex
	records []*auditv1.Record
}

func (a *recordingAudit) Append(_ context.Context, req *connect.Request[auditv1.AppendRequest]) (*connect.Response[auditv1.AppendResponse], error) {
	a.mu.Lock()
	a.records = append(a.records, req.Msg.GetRecord())
	a.mu.Unlock()
	return connect.NewResponse(&auditv1.AppendResponse{}), nil
}

func (a *recordingAudit) errors() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, r := range a.records {
		out = append(out, r.GetError())
	}
	return out
}

// TestBreaker: an HTTP upstream that fails opens the breaker after 3 failures; calls are
// then refused (Unavailable, ErrBreakerOpen, the wait as a detail) without reaching it; after
// the cool-down 32 concurrent calls let exactly the 2 probes through, whose success closes the
// breaker; every transition is audited.
func TestBreaker(t *testing.T) {
	t.Parallel()
	up, url := newFlakyHTTP(t)
	three := uint32(3)
	srv := &registryv1.Server{Name: "flaky", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: url,
		Breaker: &registryv1.Breaker{Failures: &three, Cooldown: durationpb.New(30 * time.Second), Probes: 2}}
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	audit := &recordingAudit{}
	cfg := bridgesvc.Config{StdioGrace: 200 * time.Millisecond, BreakerFailures: 100}
	svc, err := bridgesvc.New(cfg, static(srv), quietLogger(), bridgesvc.WithClock(clock.Now), bridgesvc.WithAudit(audit))
	if err != nil {
		t.Fatal(err)
	}
	rpc := httptest.NewServer(rpcserver.NewMux(svc.Handlers()...))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = svc.Close(ctx)
		rpc.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const sessions = 32
	for i := range sessions {
		if _, err := deliver(ctx, svc, fmt.Sprint("s", i), "flaky", initializeReq); err != nil {
			t.Fatal(err)
		}
	}
	call := func(session int) error {
		_, err := deliver(ctx, svc, fmt.Sprint("s", session), "flaky", toolCall(7, "echo", ""))
		return err
	}

	// JSON-RPC errors of the tool are answers: they never open the breaker.
	up.mode.Store("rpcerror")
	for range 5 {
		if err := call(0); err != nil {
			t.Fatal(err)
		}
	}
	up.mode.Store("fail")
	for i := range 3 {
		if err := call(0); connect.CodeOf(err) != connect.CodeUnavailable || errors.Is(err, bridgesvc.ErrBreakerOpen) {
			t.Fatalf("failing call %d = %v, want the upstream's failure", i, err)
		}
	}
	if got := svc.BreakerState("flaky"); got != bridgesvc.BreakerOpen {
		t.Fatalf("state after 3 failures = %v, want open", got)
	}
	reached := up.calls.Load()
	err = call(1)
	if !errors.Is(err, bridgesvc.ErrBreakerOpen) || connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), `"flaky"`) || !strings.Contains(err.Error(), "2025-01-01T00:00:30Z") {
		t.Fatalf("call on an open breaker = %v, want Unavailable naming flaky and the retry time", err)
	}
	if d, ok := bridgesvc.BreakerRetryAfter(err); !ok || d != 30*time.Second {
		t.Fatalf("BreakerRetryAfter = %v, %v, want 30s", d, ok)
	}
	// Over the wire too: the split-mode ingress reads the same detail.
	client := bridgev1connect.NewBridgeServiceClient(rpc.Client(), rpc.URL)
	clock.Advance(10 * time.Second)
	stream, err := client.Send(ctx, connect.NewRequest(&bridgev1.SendRequest{SessionId: "s1", Server: "flaky", Message: []byte(toolCall(7, "echo", ""))}))
	if err == nil {
		for stream.Receive() {
		}
		err = stream.Err()
	}
	if d, ok := bridgesvc.BreakerRetryAfter(err); !ok || d != 20*time.Second {
		t.Fatalf("remote refusal %v: BreakerRetryAfter = %v, %v, want 20s", err, d, ok)
	}
	// A notification is not gated.
	if _, err := deliver(ctx, svc, "s1", "flaky", `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil {
		t.Fatalf("notification on an open breaker: %v", err)
	}
	if n := up.calls.Load(); n != reached {
		t.Fatalf("the upstream got %d calls while the breaker was open", n-reached)
	}

	// The cool-down passes; the upstream answers, but holds its answers until released.
	clock.Advance(20 * time.Second)
	up.mode.Store("block")
	var wg sync.WaitGroup
	var refused, answered atomic.Int32
	for i := range sessions {
		wg.Go(func() {
			err := call(i)
			switch {
			case err == nil:
				answered.Add(1)
			case errors.Is(err, bridgesvc.ErrBreakerOpen):
				refused.Add(1)
			default:
				t.Errorf("call %d in half-open: %v", i, err)
			}
		})
	}
	testsync.WaitFor(t, 30*time.Second, "2 probes at the upstream and 30 refusals", func() bool {
		return up.calls.Load() == reached+2 && refused.Load() == sessions-2
	})
	if got := svc.BreakerState("flaky"); got != bridgesvc.BreakerHalfOpen {
		t.Fatalf("state with probes out = %v, want half-open", got)
	}
	close(up.release)
	wg.Wait()
	if answered.Load() != 2 || up.calls.Load() != reached+2 {
		t.Fatalf("%d probes answered, %d calls reached the upstream, want 2 and 2", answered.Load(), up.calls.Load()-reached)
	}
	if got := svc.BreakerState("flaky"); got != bridgesvc.BreakerClosed {
		t.Fatalf("state after the probes = %v, want closed", got)
	}
	if err := call(3); err != nil {
		t.Fatalf("call after the breaker closed: %v", err)
	}
	want := []string{"breaker open after 3 failures; probes from 2025-01-01T00:00:30Z", "breaker half-open: admitting 2 probe(s)", "breaker closed: a probe succeeded"}
	testsync.WaitFor(t, 10*time.Second, "3 transition records", func() bool { return len(audit.errors()) == 3 })
	for i, got := range audit.errors() {
		if got != want[i] {
			t.Errorf("transition record %d: %q, want %q", i, got, want[i])
		}
	}
	audit.mu.Lock()
	for _, r := range audit.records {
		if r.GetServer() != "flaky" || r.GetMethod() != bridgesvc.MethodBreaker || r.GetPhase() != auditv1.Phase_PHASE_COMPLETE || r.GetCallId() == "" {
			t.Errorf("transition record %v", r)
		}
	}
	audit.mu.Unlock()
}

// TestBreakerStdio: a stdio server whose command cannot be started opens its breaker across
// sessions; the refusal never tries to spawn it.
func TestBreakerStdio(t *testing.T) {
	t.Parallel()
	srv := &registryv1.Server{Name: "missing", Transport: registryv1.Transport_TRANSPORT_STDIO, Command: []string{"gatehouse-no-such-server"}}
	svc, err := bridgesvc.New(bridgesvc.Config{StdioGrace: 200 * time.Millisecond, BreakerFailures: 2}, static(srv), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	ctx := context.Background()
	for i := range 2 {
		if _, err := deliver(ctx, svc, fmt.Sprint("s", i), "missing", initializeReq); !errors.Is(err, bridgesvc.ErrSpawn) {
			t.Fatalf("start %d = %v, want ErrSpawn", i, err)
		}
	}
	if _, err := deliver(ctx, svc, "s2", "missing", initializeReq); !errors.Is(err, bridgesvc.ErrBreakerOpen) {
		t.Fatalf("third start = %v, want ErrBreakerOpen", err)
	}
}

// TestBreakerNeutral: a host that cancels its calls, and the gateway's own refusals, say
// nothing of the upstream: the breaker stays closed.
func TestBreakerNeutral(t *testing.T) {
	t.Parallel()
	up, url := newFlakyHTTP(t)
	srv := &registryv1.Server{Name: "flaky", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: url}
	svc, err := bridgesvc.New(bridgesvc.Config{StdioGrace: 200 * time.Millisecond, BreakerFailures: 2}, static(srv), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	if _, err := deliver(context.Background(), svc, "s", "flaky", initializeReq); err != nil {
		t.Fatal(err)
	}
	up.mode.Store("block")
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		n := up.calls.Load()
		done := make(chan error, 1)
		go func() {
			_, err := deliver(ctx, svc, "s", "flaky", toolCall(7, "echo", ""))
			done <- err
		}()
		testsync.WaitFor(t, 10*time.Second, "the call at the upstream", func() bool { return up.calls.Load() > n })
		cancel()
		if err := <-done; connect.CodeOf(err) != connect.CodeCanceled {
			t.Fatalf("cancelled call %d = %v", i, err)
		}
	}
	// A session that ended: refused by the bridge itself.
	svc.EndSession("s")
	for range 3 {
		if _, err := deliver(context.Background(), svc, "s", "flaky", toolCall(7, "echo", "")); !errors.Is(err, bridgesvc.ErrSessionEnded) {
			t.Fatalf("call on an ended session = %v", err)
		}
	}
	if got := svc.BreakerState("flaky"); got != bridgesvc.BreakerClosed {
		t.Fatalf("state = %v, want closed", got)
	}
}
