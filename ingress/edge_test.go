package ingress_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

// rawConn opens a TCP connection to the gateway and writes head (a request's line and
// headers, without the blank line ending them unless given).
func rawConn(t *testing.T, g *gateway, head string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", g.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	return c
}

// readToEOF reads until the server closes the connection; it fails the test if that does
// not happen within the deadline.
func readToEOF(t *testing.T, c net.Conn, within time.Duration) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	b, err := io.ReadAll(c)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the server kept the connection open (read so far: %q)", b)
		}
		// A reset after the answer also closes the connection.
		var ne *net.OpError
		if !errors.As(err, &ne) {
			t.Fatal(err)
		}
	}
	return b
}

func postHead(sid, token, extra string) string {
	h := "POST /servers/echo/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
	if token != "" {
		h += "Authorization: Bearer " + token + "\r\n"
	}
	if sid != "" {
		h += "Mcp-Session-Id: " + sid + "\r\nMCP-Protocol-Version: " + rev + "\r\n"
	}
	return h + extra
}

// TestStalledBodyClosed: a body that never arrives, with or without a valid token, is closed
// by the server's read timeout; so are headers that never end.
func TestStalledBodyClosed(t *testing.T) {
	g := newGateway(t, func(c *ingress.Config) {
		c.ReadTimeout = 300 * time.Millisecond
		c.ReadHeaderTimeout = 300 * time.Millisecond
	})
	sid := g.initialize("echo", tokenAlice, rev)
	cases := []struct {
		name string
		head string
		want string // status line prefix, "" for none
	}{
		{"with a token", postHead(sid, tokenAlice, "Content-Length: 100\r\n\r\n{\"jsonrpc\""), ""},
		{"without a token", postHead(sid, "", "Content-Length: 100\r\n\r\n"), "HTTP/1.1 401"},
		{"headers never end", "POST /servers/echo/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := rawConn(t, g, tc.head)
			b := readToEOF(t, c, 20*time.Second)
			if tc.want != "" && !strings.HasPrefix(string(b), tc.want) {
				t.Fatalf("got %q, want %s", b, tc.want)
			}
		})
	}
}

// TestTooLargeBeforeReading: a declared Content-Length over the limit is answered 413 at
// once, though the body is never sent (the read timeout is far longer than the wait).
func TestTooLargeBeforeReading(t *testing.T) {
	g := newGateway(t, func(c *ingress.Config) { c.ReadTimeout = 10 * time.Minute })
	sid := g.initialize("echo", tokenAlice, rev)
	c := rawConn(t, g, postHead(sid, tokenAlice, "Content-Length: 1099511627776\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer while the body is outstanding: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	r := decode(resp.StatusCode, resp.Header, b)
	if r.status != http.StatusRequestEntityTooLarge || r.code != -32600 || !strings.HasPrefix(r.msg, "Request Entity Too Large") || !resp.Close {
		t.Fatalf("got %d %d %q close=%v, want 413 and the connection closed", r.status, r.code, r.msg, resp.Close)
	}
}

// TestTwoAuthorizationHeaders: two credentials are a 400, whatever they are.
func TestTwoAuthorizationHeaders(t *testing.T) {
	g := newGateway(t, nil)
	req, _ := http.NewRequest(http.MethodPost, g.url("echo"), strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Add("Authorization", "Bearer "+tokenAlice)
	req.Header.Add("Authorization", "Bearer "+tokenBob)
	r := send(t, http.DefaultClient, req)
	if r.status != http.StatusBadRequest || r.code != -32600 || !strings.HasPrefix(r.msg, "Bad Request: more than one Authorization header") {
		t.Fatalf("got %d %d %q", r.status, r.code, r.msg)
	}
	if g.auth.calls.Load() != 0 || g.sessions.count() != 0 {
		t.Fatal("two credentials reached authsvc or opened a session")
	}
}

func send(t *testing.T, c *http.Client, req *http.Request) response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return decode(resp.StatusCode, resp.Header, b)
}

// clientFrom is an HTTP client whose connections come from the given loopback address.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// TestAuthThrottle: concurrent bad tokens from one address spend its bucket exactly: the
// burst is answered 401 (authsvc asked), the rest 429 with Retry-After (authsvc not asked);
// another address still gets 401, and a cached good credential still works.
func TestAuthThrottle(t *testing.T) {
	const burst, n = 5, 24
	g := newGateway(t, func(c *ingress.Config) { c.AuthFailRate, c.AuthFailBurst = 0.001, burst })
	sid := g.initialize("echo", tokenAlice, rev)
	before := g.auth.calls.Load()
	var guesses atomic.Int64
	bad := func(c *http.Client) response {
		req, _ := http.NewRequest(http.MethodPost, g.url("echo"), strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer guess-"+strconv.FormatInt(guesses.Add(1), 10)) // each a new guess
		return send(t, c, req)
	}
	statuses := make(chan response, n)
	var wg sync.WaitGroup
	local := clientFrom("127.0.0.1")
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- bad(local)
		}()
	}
	wg.Wait()
	close(statuses)
	counts := map[int]int{}
	for r := range statuses {
		counts[r.status]++
		if r.status == http.StatusTooManyRequests {
			// One token in 1/0.001 s: the wait is the bucket's, not a constant.
			if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 900 || s > 1000 {
				t.Fatalf("429 with Retry-After %q, want about 1000 s", r.header.Get("Retry-After"))
			}
			if r.code != -32009 || !strings.HasPrefix(r.msg, "Too Many Requests") {
				t.Fatalf("429 body %d %q", r.code, r.msg)
			}
		}
	}
	if counts[http.StatusUnauthorized] != burst || counts[http.StatusTooManyRequests] != n-burst {
		t.Fatalf("statuses %v, want %d×401 and %d×429", counts, burst, n-burst)
	}
	if asked := g.auth.calls.Load() - before; asked != burst {
		t.Fatalf("authsvc asked %d times, want %d", asked, burst)
	}
	if r := bad(clientFrom("127.0.0.2")); r.status != http.StatusUnauthorized {
		t.Fatalf("another address got %d, want 401", r.status)
	}
	if r := g.callTool("echo", sid, rev, "echo"); r.status != http.StatusOK || r.code != 0 {
		t.Fatalf("a cached good credential from the throttled address: %d %s", r.status, r.body)
	}
}

// TestAuthSharedAmongConcurrentRequests: many first requests with one valid credential from
// one address, all in flight at once, share one authentication: none is throttled although
// they outnumber the burst, and authsvc is asked once.
func TestAuthSharedAmongConcurrentRequests(t *testing.T) {
	const burst, n = 2, 16
	g := newGateway(t, func(c *ingress.Config) {
		c.AuthFailRate, c.AuthFailBurst = 0.001, burst
		c.MaxSessionsPerPrincipal = n
	})
	g.auth.hold = make(chan struct{})
	before := g.auth.calls.Load()
	statuses := make(chan response, n)
	var wg sync.WaitGroup
	local := clientFrom("127.0.0.1")
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, g.url("echo"), strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+rev+`","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+tokenCarol)
			statuses <- send(t, local, req)
		}()
	}
	// Release authsvc only once it has been asked: every request is then in flight.
	testsync.WaitFor(t, 20*time.Second, "authsvc to be asked", func() bool { return g.auth.calls.Load() > before })
	close(g.auth.hold)
	wg.Wait()
	close(statuses)
	for r := range statuses {
		if r.status != http.StatusOK {
			t.Errorf("status %d %s, want 200", r.status, r.body)
		}
	}
	if asked := g.auth.calls.Load() - before; asked >= n {
		t.Fatalf("authsvc asked %d times for %d concurrent requests with one credential, want them to share", asked, n)
	}
}

// TestBadInput: each bad request gets its HTTP status, JSON-RPC code and message.
func TestBadInput(t *testing.T) {
	g := newGateway(t, nil)
	sid := g.initialize("echo", tokenAlice, rev)
	old := g.initialize(serverBatching, tokenAlice, "2025-03-26")
	bobs := g.initialize("echo", tokenBob, rev)
	sess := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": rev}
	with := func(extra map[string]string) map[string]string {
		h := map[string]string{}
		for k, v := range sess {
			h[k] = v
		}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}`
	cases := []struct {
		name, method, server, body string
		header                     map[string]string
		status, code               int
		msg                        string
	}{
		{"truncated JSON", "POST", "echo", `{"jsonrpc":"2.0","id":1,"method":"tools/ca`, sess, 400, -32700, ""},
		{"duplicate key", "POST", "echo", `{"jsonrpc":"2.0","id":1,"method":"ping","id":2}`, sess, 400, -32600, ""},
		{"batch where the revision forbids it", "POST", "echo", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, sess, 400, -32600, ""},
		{"batch over the limit", "POST", serverBatching, "[" + strings.Repeat(`{"jsonrpc":"2.0","id":1,"method":"ping"},`, 4) + `{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
			map[string]string{"Mcp-Session-Id": old, "MCP-Protocol-Version": "2025-03-26"}, 400, -32600, "Bad Request: batch larger than the limit"},
		{"request disguised as a notification", "POST", "echo", `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo"}}`, sess, 400, -32600, "Bad Request: a method that is not a notification needs an id"},
		{"initialize on a session", "POST", "echo", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`, sess, 400, -32600, "Bad Request: initialize must be sent alone"},
		{"wrong Accept", "POST", "echo", call, with(map[string]string{"Accept": "text/html"}), 406, -32600, "Not Acceptable"},
		{"wrong Content-Type", "POST", "echo", call, with(map[string]string{"Content-Type": "text/plain"}), 415, -32600, "Unsupported Media Type"},
		{"foreign Origin", "POST", "echo", call, with(map[string]string{"Origin": "http://evil.example"}), 403, -32600, "Forbidden: origin not allowed"},
		{"foreign Host", "POST", "echo", call, with(map[string]string{"Host": "evil.example"}), 403, -32600, "Forbidden: host not allowed"},
		{"Last-Event-ID", "GET", "echo", "", with(map[string]string{"Accept": "text/event-stream", "Last-Event-ID": "x-1"}), 400, -32600, "Bad Request: Last-Event-ID"},
		{"missing session", "POST", "echo", call, nil, 400, -32600, "Bad Request: Mcp-Session-Id header is required"},
		{"GET without session", "GET", "echo", "", map[string]string{"Accept": "text/event-stream"}, 400, -32600, "Bad Request: Mcp-Session-Id header is required"},
		{"unknown session", "POST", "echo", call, with(map[string]string{"Mcp-Session-Id": strings.Repeat("ab", 32)}), 404, -32600, "Not Found: session not found"},
		{"another principal's session", "POST", "echo", call, with(map[string]string{"Mcp-Session-Id": bobs}), 404, -32600, "Not Found: session not found"},
		{"a session of another server", "POST", serverBatching, call, sess, 404, -32600, "Not Found: session not found"},
		{"no token", "POST", "echo", call, with(map[string]string{"Authorization": ""}), 401, -32600, "Unauthorized: no credential"},
		{"wrong token", "POST", "echo", call, with(map[string]string{"Authorization": "Bearer nope"}), 401, -32600, "Unauthorized: unknown or revoked token"},
		{"another scheme", "POST", "echo", call, with(map[string]string{"Authorization": "Basic YTpi"}), 401, -32600, "Unauthorized: malformed Authorization header"},
		{"PUT", "PUT", "echo", call, sess, 405, -32600, "Method Not Allowed"},
		{"body over the limit", "POST", "echo", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("a", 70000) + `"}}`, sess, 413, -32600, "Request Entity Too Large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := g.do(tc.method, tc.server, tc.body, tc.header)
			if r.status != tc.status || r.code != tc.code || !strings.HasPrefix(r.msg, tc.msg) {
				t.Fatalf("got %d %d %q, want %d %d %q", r.status, r.code, r.msg, tc.status, tc.code, tc.msg)
			}
			if r.status == http.StatusUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without a Bearer challenge: %v", r.header)
			}
		})
	}
	if r := g.callTool("echo", sid, rev, "echo"); r.status != http.StatusOK || r.code != 0 {
		t.Fatalf("the gateway stopped serving: %d %s", r.status, r.body)
	}
}

// TestRevisionCheck: the header must be a revision the gateway speaks or the one the
// session negotiated.
func TestRevisionCheck(t *testing.T) {
	g := newGateway(t, nil)
	sid := g.initialize("echo", tokenAlice, rev)
	oldSid := g.initialize(serverOld, tokenAlice, rev) // the upstream negotiates 2024-11-05
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}`
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`
	cases := []struct {
		name, server, body, sid, revision string
		status                            int
	}{
		{"the session's revision", "echo", call, sid, rev, 200},
		{"another supported revision", "echo", call, sid, "2025-11-25", 200},
		{"no header", "echo", call, sid, "", 200},
		{"the upstream's older revision on its session", serverOld, call, oldSid, "2024-11-05", 200},
		{"that older revision on another session", "echo", call, sid, "2024-11-05", 400},
		{"an unknown revision", "echo", call, sid, "1999-01-01", 400},
		{"not a date", "echo", call, sid, "latest", 400},
		{"initialize with an unsupported revision", "echo", init, "", "2024-11-05", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := g.do(http.MethodPost, tc.server, tc.body, map[string]string{"Mcp-Session-Id": tc.sid, "MCP-Protocol-Version": tc.revision})
			if r.status != tc.status {
				t.Fatalf("got %d %s, want %d", r.status, r.body, tc.status)
			}
			if tc.status == 400 && (r.code != -32600 || !strings.HasPrefix(r.msg, "Bad Request: unsupported MCP-Protocol-Version")) {
				t.Fatalf("got %d %q", r.code, r.msg)
			}
		})
	}
}

// openStream opens a GET stream on the session and returns once the bridge subscribed; the
// stream ends with the test or when end is called.
func openStream(t *testing.T, g *gateway, server, sid, token string) (end func(), body io.ReadCloser) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.url(server), nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Mcp-Session-Id", sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET stream: %d", resp.StatusCode)
	}
	select {
	case <-g.bridge.listening:
	case <-time.After(10 * time.Second):
		t.Fatal("the bridge was never subscribed")
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return func() { cancel(); resp.Body.Close() }, resp.Body
}
