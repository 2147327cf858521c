package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// switchable is a Go SDK server over Streamable HTTP whose tools/call the test switches
// between failing (HTTP 500), holding (answered once release is closed) and healthy; it
// counts the tools/call requests that reach it.
type switchable struct {
	url     string
	mode    atomic.Value // "fail", "hold" or "ok"
	calls   atomic.Int64
	release chan struct{}
}

func startSwitchable(t *testing.T) *switchable {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "switchable", Version: "v1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "healthy"}}}, nil, nil
	})
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	s := &switchable{release: make(chan struct{})}
	s.mode.Store("ok")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if isToolsCall(body) {
				s.calls.Add(1)
				switch s.mode.Load().(string) {
				case "fail":
					http.Error(w, "upstream down", http.StatusInternalServerError)
					return
				case "hold":
					select {
					case <-s.release:
					case <-r.Context().Done():
						return
					}
				}
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		sdk.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
	})
	s.url = srv.URL + "/mcp"
	return s
}

var refusedUntil = regexp.MustCompile(`refused until (\S+) \(trace `)

// TestBreakerOpens: an HTTP upstream that fails opens its server's breaker after 3 failures;
// calls are then refused with -32010 (naming the server and the retry time, with Retry-After)
// without reaching it; after the cool-down (300ms), of 8 concurrent calls exactly one probe
// reaches the upstream, the rest are refused, and the probe's success closes the breaker:
// calls flow again. The transitions and the refused call are in the audit log.
func TestBreakerOpens(t *testing.T) {
	t.Parallel()
	up := startSwitchable(t)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + httpEntry("flaky", up.url) + "    breaker: {failures: 3, cooldown: 300ms}\n",
	})
	c := rawClient{t: t, url: g.Endpoint("flaky"), token: g.Token}
	sess := session(c.initialize("2025-06-18"))
	call := func(id int) rawResponse {
		return c.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{}}}`, id), sess)
	}

	up.mode.Store("fail")
	for i := range 3 {
		r := call(i + 1)
		if code, _, ok := r.rpcError(); !ok || code != -32003 {
			t.Fatalf("failing call %d: %d %s, want -32003 (the upstream is unavailable)", i, r.status, r.body)
		}
	}
	if n := up.calls.Load(); n != 3 {
		t.Fatalf("the upstream got %d calls, want 3", n)
	}
	// Open: refused at once. (Should the cool-down pass before this call, it is a probe that
	// fails and opens the breaker again; the next call is refused then.)
	var refusal rawResponse
	testsync.WaitFor(t, 30*time.Second, "a call refused by the breaker", func() bool {
		before := up.calls.Load()
		refusal = call(10)
		code, _, _ := refusal.rpcError()
		if code == -32010 && up.calls.Load() != before {
			t.Fatalf("a refused call reached the upstream")
		}
		return code == -32010
	})
	_, msg, _ := refusal.rpcError()
	m := refusedUntil.FindStringSubmatch(msg)
	if refusal.status != http.StatusOK || !strings.Contains(msg, `server "flaky" is failing`) || m == nil || refusal.header.Get("Retry-After") == "" {
		t.Fatalf("refusal %d %v %s, want -32010 naming flaky and the retry time, with Retry-After", refusal.status, refusal.header, refusal.body)
	}
	retryAt, err := time.Parse(time.RFC3339, m[1])
	if err != nil {
		t.Fatalf("retry time %q: %v", m[1], err)
	}
	trace := traceID(msg)

	// The upstream is healthy again, but holds its answers: the probe stays out while the
	// other calls arrive.
	up.mode.Store("hold")
	testsync.WaitFor(t, 30*time.Second, "the retry time the gateway announced", func() bool { return time.Now().After(retryAt) })
	before := up.calls.Load()
	const callers = 8
	var wg sync.WaitGroup
	var refused, answered atomic.Int32
	for i := range callers {
		wg.Go(func() {
			r, err := postRaw(context.Background(), rawHTTP, g.Endpoint("flaky"), g.Token,
				fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{}}}`, 100+i), sess)
			if err != nil {
				t.Errorf("call %d: %v", i, err)
				return
			}
			switch code, _, isErr := r.rpcError(); {
			case !isErr && bytes.Contains(r.body, []byte("healthy")):
				answered.Add(1)
			case code == -32010:
				refused.Add(1)
			default:
				t.Errorf("call %d in half-open: %d %s", i, r.status, r.body)
			}
		})
	}
	testsync.WaitFor(t, 30*time.Second, "one probe at the upstream and 7 refusals", func() bool {
		return up.calls.Load() == before+1 && refused.Load() == callers-1
	})
	close(up.release)
	wg.Wait()
	if answered.Load() != 1 || up.calls.Load() != before+1 {
		t.Fatalf("%d answered, %d reached the upstream; want the one probe", answered.Load(), up.calls.Load()-before)
	}
	// Closed: calls flow.
	for i := range 3 {
		if r := call(200 + i); !bytes.Contains(r.body, []byte("healthy")) {
			t.Fatalf("call %d after the breaker closed: %d %s", i, r.status, r.body)
		}
	}

	rec := waitAudit(t, g.DataDir, "the refused call's outcome", func(r auditRecord) bool {
		return r.TraceID == trace && r.Phase == "PHASE_OUTCOME"
	})
	if rec.Outcome != "OUTCOME_FAILED" || !strings.HasPrefix(rec.Error, "breaker_open") || rec.Server != "flaky" {
		t.Fatalf("the refused call's record %+v, want FAILED naming the breaker", rec)
	}
	for _, want := range []string{"breaker open after 3 failures", "breaker half-open", "breaker closed: a probe succeeded"} {
		rec := waitAudit(t, g.DataDir, "the transition "+want, func(r auditRecord) bool {
			return r.Method == "gatehouse/breaker" && strings.HasPrefix(r.Error, want)
		})
		if rec.Server != "flaky" || rec.Phase != "PHASE_COMPLETE" {
			t.Fatalf("transition record %+v", rec)
		}
	}
	if !strings.Contains(g.Logs(), "circuit breaker open") {
		t.Error("the opening is not in the log")
	}
}

// TestBreakerStdioSpawn: a stdio server whose program is missing fails every initialize;
// after 3 its breaker refuses the next at once: 503, Retry-After, -32010.
func TestBreakerStdioSpawn(t *testing.T) {
	t.Parallel()
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("missing", "/nonexistent/gatehouse-breaker-test") + "    breaker: {failures: 3, cooldown: 1m}\n",
	})
	c := rawClient{t: t, url: g.Endpoint("missing"), token: g.Token}
	for i := range 3 {
		if r := c.post(initBody, nil); r.status != http.StatusBadGateway {
			t.Fatalf("initialize %d: %d %s, want 502 (the upstream cannot be started)", i, r.status, r.body)
		}
	}
	r := c.post(initBody, nil)
	code, msg, _ := r.rpcError()
	if r.status != http.StatusServiceUnavailable || code != -32010 || r.header.Get("Retry-After") == "" || !strings.Contains(msg, `server "missing"`) {
		t.Fatalf("initialize on an open breaker: %d %v %s, want 503 with Retry-After and -32010", r.status, r.header, r.body)
	}
}
