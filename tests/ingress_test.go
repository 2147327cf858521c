package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

// rawHTTP is the raw clients' HTTP client: bounded, so a gateway that never answers fails the
// test rather than hanging it.
var rawHTTP = &http.Client{Timeout: gatehousetest.ClientTimeout}

// rawClient speaks Streamable HTTP by hand, to send what no SDK would.
type rawClient struct {
	t     *testing.T
	url   string
	token string
}

type rawResponse struct {
	status int
	header http.Header
	body   []byte
}

// rpcError is the JSON-RPC error of the response body, whether the body is JSON or an SSE
// stream (the first data line that holds a JSON-RPC message); ok is false when there is none.
func (r rawResponse) rpcError() (code int, message string, ok bool) {
	for _, msg := range r.messages() {
		var m struct {
			Error *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(msg, &m) == nil && m.Error != nil {
			return m.Error.Code, m.Error.Message, true
		}
	}
	return 0, "", false
}

// toolText is the text of a tools/call result in the body (JSON or SSE): its text content
// blocks joined with newlines; ok is false when the body holds no result.
func (r rawResponse) toolText() (text string, isError, ok bool) {
	for _, msg := range r.messages() {
		var m struct {
			Result *struct {
				Content []struct {
					Type string `json:"type"`
					Text string `json:"text"`
				} `json:"content"`
				IsError bool `json:"isError"`
			} `json:"result"`
		}
		if json.Unmarshal(msg, &m) != nil || m.Result == nil {
			continue
		}
		var parts []string
		for _, c := range m.Result.Content {
			if c.Type == "text" {
				parts = append(parts, c.Text)
			}
		}
		return strings.Join(parts, "\n"), m.Result.IsError, true
	}
	return "", false, false
}

// rpcCode is the JSON-RPC error code of the response body, 0 when there is none.
func (r rawResponse) rpcCode() int {
	code, _, _ := r.rpcError()
	return code
}

// messages are the JSON-RPC messages of the body: the body itself when it is JSON, each
// event's data when it is an SSE stream.
func (r rawResponse) messages() [][]byte {
	mediaType, _, _ := mime.ParseMediaType(r.header.Get("Content-Type"))
	if mediaType != "text/event-stream" {
		return [][]byte{r.body}
	}
	var out [][]byte
	var data []byte
	flush := func() {
		if len(data) > 0 {
			out = append(out, data)
		}
		data = nil
	}
	for _, line := range strings.Split(strings.ReplaceAll(string(r.body), "\r\n", "\n"), "\n") {
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "data:"):
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")...)
		}
	}
	flush()
	return out
}

func (c rawClient) do(method string, body io.Reader, header map[string]string) rawResponse {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url, body)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := rawHTTP.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, c.url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

func (c rawClient) post(body string, header map[string]string) rawResponse {
	return c.do(http.MethodPost, strings.NewReader(body), header)
}

// initialize opens a session at the given revision and sends notifications/initialized.
func (c rawClient) initialize(revision string) string {
	c.t.Helper()
	r := c.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":%q,"capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, revision), nil)
	sid := r.header.Get("Mcp-Session-Id")
	if r.status != http.StatusOK || sid == "" {
		c.t.Fatalf("initialize: %d %s", r.status, r.body)
	}
	if !bytes.Contains(r.body, []byte(`"protocolVersion":"`+revision+`"`)) {
		c.t.Fatalf("initialize negotiated another revision than %s: %s", revision, r.body)
	}
	n := c.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": revision})
	if n.status != http.StatusAccepted {
		c.t.Fatalf("notifications/initialized: %d %s", n.status, n.body)
	}
	return sid
}

const echoCall = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"still serving"}}}`

// TestIngressBadInput sends the ingress every kind of bad input in TESTING.md's ingress list:
// each gets the status and JSON-RPC error the spec gives, and the gateway keeps serving.
func TestIngressBadInput(t *testing.T) {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	// echo is open to two tenants, so that a principal of either could use it: only the
	// session's own binding (principal and tenant) keeps them off each other's sessions.
	cfg := "servers:\n" + stdioEntryFor("echo", []string{"default", "research"}, echo) + stdioEntry("open", echo) +
		"anonymous:\n  servers: [open]\n  principal: anonymous\n  tenant: default\n"
	g := gatehousetest.Start(t, gatehousetest.Options{Config: cfg, Args: []string{"--max-body-bytes", "65536"}})
	c := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	// alice is another principal of dev's tenant; dev@research has dev's id in another tenant.
	alice := rawClient{t: t, url: g.Endpoint("echo"), token: g.NewToken(t, "alice", "default")}
	devResearch := rawClient{t: t, url: g.Endpoint("echo"), token: g.NewToken(t, "dev", "research")}
	// Each of them can use echo on a session of their own: a 404 on dev's session below is
	// the session binding, not policy.
	for _, own := range []rawClient{alice, devResearch} {
		own.t = t
		osid := own.initialize("2025-06-18")
		if r := own.post(echoCall, map[string]string{"Mcp-Session-Id": osid, "MCP-Protocol-Version": "2025-06-18"}); r.status != http.StatusOK || !bytes.Contains(r.body, []byte("still serving")) {
			t.Fatalf("tools/call on an own session: %d %s", r.status, r.body)
		}
	}
	sid := c.initialize("2025-06-18")
	sess := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
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
	old := c.initialize("2025-03-26")
	oldSess := map[string]string{"Mcp-Session-Id": old, "MCP-Protocol-Version": "2025-03-26"}
	deleted := c.initialize("2025-06-18")
	if r := c.do(http.MethodDelete, nil, map[string]string{"Mcp-Session-Id": deleted}); r.status != http.StatusOK {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	anonSid := rawClient{t: t, url: g.Endpoint("open")}.initialize("2025-06-18")

	huge := `[` + strings.TrimSuffix(strings.Repeat(`{"jsonrpc":"2.0","method":"notifications/x"},`, 100), ",") + `]`
	// Every refusal is a JSON-RPC error: code is its code and msg a phrase its message must
	// hold (case-insensitive), so a row passes only for the reason it names.
	cases := []struct {
		name   string
		client rawClient
		method string
		body   string
		header map[string]string
		status int
		code   int
		msg    string
	}{
		{name: "truncated JSON", body: `{"jsonrpc":"2.0","id":1,"method":"tools/ca`, header: sess, status: 400, code: -32700, msg: "invalid JSON"},
		{name: "invalid JSON", body: `{"jsonrpc":"2.0",,}`, header: sess, status: 400, code: -32700, msg: "invalid JSON"},
		{name: "invalid UTF-8", body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"x\":\"\xc3\x28\"}}", header: sess, status: 400, code: -32700, msg: "UTF-8"},
		{name: "NUL byte", body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\x00\"}", header: sess, status: 400, code: -32700, msg: "control character"},
		{name: "duplicate key", body: `{"jsonrpc":"2.0","id":1,"method":"ping","id":2}`, header: sess, status: 400, code: -32600, msg: `duplicate or case-variant key "id"`},
		// The rows below put the variant where any member is allowed (inside params and
		// arguments), so only the duplicate-key rule can refuse them.
		{name: "case-variant key", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"other"}}`, header: sess, status: 400, code: -32600, msg: `duplicate or case-variant key "Name"`},
		{name: "unicode case-variant of a params key", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"},"argumentſ":{"text":"b"}}}`, header: sess, status: 400, code: -32600, msg: `duplicate or case-variant key "argumentſ"`},
		{name: "unicode case-variant of an argument", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a","ask":1,"aſK":2}}}`, header: sess, status: 400, code: -32600, msg: "duplicate or case-variant key \"aſK\""},
		{name: "wrong jsonrpc", body: `{"jsonrpc":"1.0","id":1,"method":"ping"}`, header: sess, status: 400, code: -32600, msg: `"jsonrpc" must be "2.0"`},
		{name: "null id", body: `{"jsonrpc":"2.0","id":null,"method":"ping"}`, header: sess, status: 400, code: -32600, msg: "id must be"},
		{name: "object id", body: `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, header: sess, status: 400, code: -32600, msg: "id must be"},
		{name: "10000-deep nesting", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}}}`, header: sess, status: 400, code: -32600, msg: "nesting deeper than"},
		{name: "body over the limit", body: `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("a", 70000) + `"}}`, header: sess, status: 413, code: -32600, msg: "too large"},
		{name: "batch where the revision forbids it", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, header: sess, status: 400, code: -32600, msg: "batches are not allowed"},
		{name: "huge batch where allowed", body: huge, header: oldSess, status: 400, code: -32600, msg: "batch larger than"},
		{name: "wrong Accept", body: echoCall, header: with(map[string]string{"Accept": "text/html"}), status: 406, code: -32600, msg: "Accept must include"},
		{name: "wrong Content-Type", body: echoCall, header: with(map[string]string{"Content-Type": "text/plain"}), status: 415, code: -32600, msg: "Content-Type must be"},
		{name: "foreign Origin", body: echoCall, header: with(map[string]string{"Origin": "http://evil.example"}), status: 403, code: -32600, msg: "origin not allowed"},
		{name: "foreign Host", body: echoCall, header: with(map[string]string{"Host": "evil.example"}), status: 403, code: -32600, msg: "host not allowed"},
		{name: "bad MCP-Protocol-Version", body: echoCall, header: with(map[string]string{"MCP-Protocol-Version": "1999-01-01"}), status: 400, code: -32600, msg: "MCP-Protocol-Version"},
		{name: "missing session", body: echoCall, status: 400, code: -32600, msg: "Mcp-Session-Id header is required"},
		{name: "unknown session", body: echoCall, header: with(map[string]string{"Mcp-Session-Id": strings.Repeat("ab", 32)}), status: 404, code: -32600, msg: "session not found"},
		{name: "malformed session id", body: echoCall, header: with(map[string]string{"Mcp-Session-Id": "../../etc"}), status: 404, code: -32600, msg: "session not found"},
		{name: "deleted session", body: echoCall, header: with(map[string]string{"Mcp-Session-Id": deleted}), status: 404, code: -32600, msg: "session not found"},
		{name: "another principal's session", client: alice, body: echoCall, header: sess, status: 404, code: -32600, msg: "session not found"},
		{name: "the same principal id in another tenant", client: devResearch, body: echoCall, header: sess, status: 404, code: -32600, msg: "session not found"},
		{name: "anonymous on a token's session of another server", client: rawClient{t: t, url: g.Endpoint("open")}, body: echoCall, header: sess, status: 404, code: -32600, msg: "session not found"},
		{name: "a session of another server", client: rawClient{t: t, url: g.Endpoint("open"), token: g.Token}, body: echoCall, header: sess, status: 404, code: -32600, msg: "session not found"},
		{name: "a token on another's anonymous session", client: rawClient{t: t, url: g.Endpoint("open"), token: g.Token}, body: echoCall, header: map[string]string{"Mcp-Session-Id": anonSid}, status: 404, code: -32600, msg: "session not found"},
		{name: "no token", client: rawClient{t: t, url: g.Endpoint("echo")}, body: echoCall, header: sess, status: 401, code: -32600, msg: "no credential"},
		{name: "wrong token", client: rawClient{t: t, url: g.Endpoint("echo"), token: "gh_not_a_token_at_all"}, body: echoCall, header: sess, status: 401, code: -32600, msg: "unknown or revoked token"},
		{name: "unknown server", client: rawClient{t: t, url: g.Base + "/servers/nope/mcp", token: g.Token}, body: echoCall, header: sess, status: 404, code: -32600, msg: "session not found"},
		{name: "DELETE without session", method: http.MethodDelete, status: 400, code: -32600, msg: "Mcp-Session-Id header is required"},
		{name: "GET without session", method: http.MethodGet, header: map[string]string{"Accept": "text/event-stream"}, status: 400, code: -32600, msg: "Mcp-Session-Id header is required"},
		{name: "Last-Event-ID of another stream", method: http.MethodGet, header: with(map[string]string{"Accept": "text/event-stream", "Last-Event-ID": "other-stream-42"}), status: 400, code: -32600, msg: "Last-Event-ID"},
		{name: "request disguised as a notification", body: `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`, header: sess, status: 400, code: -32600, msg: "is not a notification"},
		{name: "unknown top-level member", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"extra":true}`, header: sess, status: 400, code: -32600, msg: `"extra"`},
		{name: "PUT", method: http.MethodPut, body: echoCall, header: sess, status: 405, code: -32600, msg: "method not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := tc.client
			if cl.url == "" {
				cl = c
			}
			cl.t = t
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			r := cl.do(method, body, tc.header)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", r.status, tc.status, r.body)
			}
			code, msg, ok := r.rpcError()
			if !ok {
				t.Fatalf("no JSON-RPC error in the body: %s", r.body)
			}
			if code != tc.code || !strings.Contains(strings.ToLower(msg), strings.ToLower(tc.msg)) {
				t.Fatalf("JSON-RPC error %d %q, want %d with %q", code, msg, tc.code, tc.msg)
			}
			if r.status == http.StatusUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without a Bearer WWW-Authenticate challenge: %v", r.header)
			}
		})
	}

	t.Run("chunked body over the limit", func(t *testing.T) {
		c := c
		c.t = t
		// io.MultiReader hides the length, so the body goes chunked with no Content-Length.
		body := io.MultiReader(strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"`), strings.NewReader(strings.Repeat("a", 70000)), strings.NewReader(`"}}`))
		r := c.do(http.MethodPost, body, sess)
		if code, msg, _ := r.rpcError(); r.status != http.StatusRequestEntityTooLarge || code != -32600 || !strings.Contains(strings.ToLower(msg), "too large") {
			t.Fatalf("%d %d %q, want 413 -32600 too large", r.status, code, msg)
		}
	})
	t.Run("413 before the body is sent", func(t *testing.T) {
		// A Content-Length far over the limit and no body at all: the answer can only come
		// before the body is read, since it never arrives.
		u, err := url.Parse(g.Base)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		req := "POST /servers/echo/mcp HTTP/1.1\r\nHost: " + u.Host + "\r\nAuthorization: Bearer " + g.Token +
			"\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: " + sid +
			"\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: 1000000000000\r\n\r\n"
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer to the headers alone (the gateway waits for the body): %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		r := rawResponse{status: resp.StatusCode, header: resp.Header, body: b}
		if code, msg, _ := r.rpcError(); r.status != http.StatusRequestEntityTooLarge || code != -32600 || !strings.Contains(strings.ToLower(msg), "too large") {
			t.Fatalf("%d %d %q, want 413 -32600 too large", r.status, code, msg)
		}
	})
	t.Run("batch where allowed", func(t *testing.T) {
		c := c
		c.t = t
		r := c.post(`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]`, oldSess)
		var out []map[string]any
		if r.status != http.StatusOK || json.Unmarshal(r.body, &out) != nil || len(out) != 2 {
			t.Fatalf("batch: %d %s", r.status, r.body)
		}
	})
	t.Run("an upstream's older revision in the header", func(t *testing.T) {
		c := c
		c.t = t
		// The upstream negotiated 2024-11-05, which the gateway passes through: the host then
		// sends that revision, and the session accepts it.
		legacy := c.initialize("2024-11-05")
		r := c.post(echoCall, map[string]string{"Mcp-Session-Id": legacy, "MCP-Protocol-Version": "2024-11-05"})
		if r.status != http.StatusOK || !bytes.Contains(r.body, []byte("still serving")) {
			t.Fatalf("tools/call at the session's revision: %d %s", r.status, r.body)
		}
		r = c.post(echoCall, map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2024-11-05"})
		if code, msg, _ := r.rpcError(); r.status != http.StatusBadRequest || code != -32600 || !strings.Contains(msg, "MCP-Protocol-Version") {
			t.Fatalf("2024-11-05 on a 2025-06-18 session: %d %d %q, want 400 -32600 about MCP-Protocol-Version", r.status, code, msg)
		}
	})
	t.Run("CORS for an allowed browser origin", func(t *testing.T) {
		c := c
		c.t = t
		r := c.do(http.MethodOptions, nil, map[string]string{"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"})
		if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "http://localhost:5173" ||
			!strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Mcp-Session-Id") {
			t.Fatalf("preflight: %d %v", r.status, r.header)
		}
		r = c.post(echoCall, with(map[string]string{"Origin": "http://localhost:5173"}))
		if r.status != http.StatusOK || !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "Mcp-Session-Id") {
			t.Fatalf("call from an allowed origin: %d %v", r.status, r.header)
		}
		if r := c.do(http.MethodOptions, nil, map[string]string{"Origin": "http://evil.example"}); r.status != http.StatusForbidden {
			t.Fatalf("preflight from a foreign origin: %d, want 403", r.status)
		}
	})
	t.Run("still serving", func(t *testing.T) {
		c := c
		c.t = t
		r := c.post(echoCall, sess)
		if r.status != http.StatusOK || !bytes.Contains(r.body, []byte("still serving")) {
			t.Fatalf("tools/call after the bad input: %d %s", r.status, r.body)
		}
	})
}

// TestSessionCapPerPrincipal: one principal cannot hold more than its share of sessions (and
// so of stdio children); past the cap it gets 503 with Retry-After, and ending a session
// makes room again.
func TestSessionCapPerPrincipal(t *testing.T) {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("echo", echo),
		Args:   []string{"--max-sessions-per-principal", "2"},
	})
	c := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	first := c.initialize("2025-06-18")
	c.initialize("2025-06-18")
	init := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`
	r := c.post(init, nil)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || r.header.Get("Mcp-Session-Id") != "" {
		t.Fatalf("third session: %d Retry-After=%q session=%q %s, want 503 with Retry-After and no session", r.status, r.header.Get("Retry-After"), r.header.Get("Mcp-Session-Id"), r.body)
	}
	if kids := gatehousetest.ChildrenRunning(g.Pid(), echo); len(kids) != 2 {
		t.Fatalf("%d children for 2 sessions", len(kids))
	}
	if r := c.do(http.MethodDelete, nil, map[string]string{"Mcp-Session-Id": first}); r.status != http.StatusOK {
		t.Fatalf("DELETE: %d", r.status)
	}
	c.initialize("2025-06-18")
}
