package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// quotaReply is one tools/call answer as a quota test reads it.
type quotaReply struct {
	status     int
	retryAfter string
	code       int
	data       struct {
		Scope      string  `json:"scope"`
		Rate       float64 `json:"rate"`
		Burst      int     `json:"burst"`
		Max        int     `json:"max"`
		RetryAfter int     `json:"retryAfter"`
	}
	body string
}

// quotaHost is a host with its own HTTP client (bound to a source address for anonymous
// hosts) and session.
type quotaHost struct {
	t      *testing.T
	client *http.Client
	url    string
	token  string
	sid    string
}

func newQuotaHost(t *testing.T, url, token, source string) *quotaHost {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	h := &quotaHost{t: t, client: &http.Client{Transport: tr, Timeout: 60 * time.Second}, url: url, token: token}
	r := h.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"q","version":"1"}}}`)
	if r.status != http.StatusOK || h.sid == "" {
		t.Fatalf("initialize: %d %s", r.status, r.body)
	}
	h.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return h
}

func (h *quotaHost) post(body string) quotaReply {
	req, err := http.NewRequest(http.MethodPost, h.url, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	if h.sid != "" {
		req.Header.Set("Mcp-Session-Id", h.sid)
		req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Errorf("post: %v", err)
		return quotaReply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
		h.sid = sid
	}
	r := quotaReply{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(b)}
	for _, msg := range (rawResponse{status: resp.StatusCode, header: resp.Header, body: b}).messages() {
		var m struct {
			Error *struct {
				Code int             `json:"code"`
				Data json.RawMessage `json:"data"`
			} `json:"error"`
		}
		if json.Unmarshal(msg, &m) == nil && m.Error != nil {
			r.code = m.Error.Code
			_ = json.Unmarshal(m.Error.Data, &r.data)
		}
	}
	return r
}

var quotaCallID atomic.Int64

func (h *quotaHost) call(tool string) quotaReply {
	id := quotaCallID.Add(1)
	return h.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{"text":"q"}}}`, id, tool))
}

// refused checks that r is a quota refusal of scope, answered 429 with Retry-After.
func (r quotaReply) refused(t *testing.T, scope string) {
	t.Helper()
	ra, err := strconv.Atoi(r.retryAfter)
	if r.status != http.StatusTooManyRequests || err != nil || ra < 1 || r.code != -32002 || r.data.Scope != scope || r.data.RetryAfter != ra {
		t.Fatalf("got %d Retry-After %q code %d data %+v: %s; want 429, a Retry-After, -32002 with scope %s", r.status, r.retryAfter, r.code, r.data, r.body, scope)
	}
}

func (r quotaReply) passed(t *testing.T) {
	t.Helper()
	if r.status != http.StatusOK || r.code != 0 {
		t.Fatalf("got %d code %d: %s; want the tool's answer", r.status, r.code, r.body)
	}
}

// TestQuotaBurst: with a burst of N and a negligible refill, exactly N of many concurrent
// calls pass and the others are refused (429, Retry-After, the limit as data); another
// tenant is unaffected; the refusals are audited as one record per principal with the count.
func TestQuotaBurst(t *testing.T) {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntryFor("echo", []string{"default", "other"}, echo) +
			"quotas:\n  tenant: {rate: 0.000001, burst: 3}\n",
	})
	dev := newQuotaHost(t, g.Endpoint("echo"), g.Token, "")
	const fired = 12
	replies := make([]quotaReply, fired)
	var wg sync.WaitGroup
	for i := range fired {
		wg.Go(func() { replies[i] = dev.call("echo") })
	}
	wg.Wait()
	passed := 0
	for _, r := range replies {
		if r.status == http.StatusOK && r.code == 0 {
			passed++
			continue
		}
		r.refused(t, "tenant")
		if r.data.Burst != 3 || r.data.Rate != 0.000001 {
			t.Fatalf("data %+v, want the tenant's rate and burst", r.data)
		}
	}
	if passed != 3 {
		t.Fatalf("%d of %d concurrent calls passed, want exactly the burst of 3", passed, fired)
	}
	dev.call("echo").refused(t, "tenant")

	bob := newQuotaHost(t, g.Endpoint("echo"), g.NewToken(t, "bob", "other"), "")
	for range 3 {
		bob.call("echo").passed(t)
	}
	bob.call("echo").refused(t, "tenant")

	// The window's records are written when the gateway stops.
	g.Stop(t)
	counts := map[string]int{}
	records := 0
	for _, r := range auditRecords(t, g.DataDir) {
		if strings.Contains(r.Error, "quota exhausted") {
			records++
			counts[r.Principal] += r.Count
		}
	}
	if records != 2 || counts["dev"] != fired-3+1 || counts["bob"] != 1 {
		t.Fatalf("%d quota records with counts %v; want two: dev %d, bob 1", records, counts, fired-3+1)
	}
}

// TestQuotaConcurrency: with at most 2 calls in flight per tenant and server, many concurrent
// calls to a slow tool never have more than 2 at the upstream (which counts them), the others
// are refused at once, and when the calls conclude their permits are free again.
func TestQuotaConcurrency(t *testing.T) {
	var inFlight, most, received atomic.Int64
	gate := make(chan struct{})
	server := mcp.NewServer(&mcp.Implementation{Name: "slow", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "slow"}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct {
		Text string `json:"text"`
	}) (*mcp.CallToolResult, any, error) {
		received.Add(1)
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	upstream := httptest.NewServer(handler)
	t.Cleanup(upstream.Close)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + httpEntry("slow", upstream.URL) + "quotas:\n  concurrency: 2\n",
	})
	host := newQuotaHost(t, g.Endpoint("slow"), g.Token, "")
	const fired = 16
	replies := make(chan quotaReply, fired)
	var wg sync.WaitGroup
	for range fired {
		wg.Go(func() { replies <- host.call("slow") })
	}
	// Every call past the limit is refused without waiting for the slow ones.
	refused := 0
	for refused < fired-2 {
		r := <-replies
		r.refused(t, "concurrency")
		if r.data.Max != 2 {
			t.Fatalf("data %+v, want max 2", r.data)
		}
		refused++
	}
	testsync.WaitFor(t, 30*time.Second, "two calls at the upstream", func() bool { return inFlight.Load() == 2 })
	close(gate)
	wg.Wait()
	close(replies)
	for r := range replies {
		r.passed(t)
	}
	if most.Load() != 2 || received.Load() != 2 {
		t.Fatalf("the upstream had at most %d calls in flight and received %d, want 2 and 2", most.Load(), received.Load())
	}
	// The permits were released when the calls concluded (the release follows the answer).
	testsync.WaitFor(t, 30*time.Second, "a free permit", func() bool {
		r := host.call("slow")
		return r.status == http.StatusOK && r.code == 0
	})
}

// TestQuotaAnonymous: anonymous hosts have buckets per source address, apart from each
// other and from the tenant's, which they never draw on.
func TestQuotaAnonymous(t *testing.T) {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("echo", echo) +
			"anonymous:\n  servers: [echo]\n  principal: anonymous\n  tenant: default\n" +
			"quotas:\n  tenant: {rate: 0.000001, burst: 2}\n  anonymous: {rate: 0.000001, burst: 3}\n",
	})
	for _, source := range []string{"127.0.0.1", "127.0.0.2"} {
		anon := newQuotaHost(t, g.Endpoint("echo"), "", source)
		for range 3 {
			anon.call("echo").passed(t)
		}
		anon.call("echo").refused(t, "anonymous")
	}
	dev := newQuotaHost(t, g.Endpoint("echo"), g.Token, "")
	for range 2 {
		dev.call("echo").passed(t)
	}
	dev.call("echo").refused(t, "tenant")
}
