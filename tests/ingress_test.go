package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

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

// rpcCode is the JSON-RPC error code of the response body, 0 when there is none.
func (r rawResponse) rpcCode() int {
	var m struct {
		Error *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(r.body, &m) != nil || m.Error == nil {
		return 0
	}
	return m.Error.Code
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
	resp, err := http.DefaultClient.Do(req)
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
	cfg := "servers:\n" + stdioEntry("echo", echo) + stdioEntry("open", echo) +
		"anonymous:\n  servers: [open]\n  principal: anonymous\n  tenant: default\n"
	g := gatehousetest.Start(t, gatehousetest.Options{Config: cfg, Args: []string{"--max-body-bytes", "65536"}})
	c := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
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
	cases := []struct {
		name   string
		client rawClient
		method string
		body   string
		header map[string]string
		status int
		code   int
	}{
		{name: "truncated JSON", body: `{"jsonrpc":"2.0","id":1,"method":"tools/ca`, header: sess, status: 400, code: -32700},
		{name: "invalid JSON", body: `{"jsonrpc":"2.0",,}`, header: sess, status: 400, code: -32700},
		{name: "invalid UTF-8", body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"x\":\"\xc3\x28\"}}", header: sess, status: 400, code: -32700},
		{name: "NUL byte", body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\x00\"}", header: sess, status: 400, code: -32700},
		{name: "duplicate key", body: `{"jsonrpc":"2.0","id":1,"method":"ping","id":2}`, header: sess, status: 400, code: -32600},
		{name: "case-variant key", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"other"}}`, header: sess, status: 400, code: -32600},
		{name: "wrong jsonrpc", body: `{"jsonrpc":"1.0","id":1,"method":"ping"}`, header: sess, status: 400, code: -32600},
		{name: "null id", body: `{"jsonrpc":"2.0","id":null,"method":"ping"}`, header: sess, status: 400, code: -32600},
		{name: "object id", body: `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, header: sess, status: 400, code: -32600},
		{name: "10000-deep nesting", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}}}`, header: sess, status: 400, code: -32600},
		{name: "body over the limit", body: `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("a", 70000) + `"}}`, header: sess, status: 413},
		{name: "batch where the revision forbids it", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, header: sess, status: 400, code: -32600},
		{name: "huge batch where allowed", body: huge, header: oldSess, status: 400, code: -32600},
		{name: "wrong Accept", body: echoCall, header: with(map[string]string{"Accept": "text/html"}), status: 406},
		{name: "wrong Content-Type", body: echoCall, header: with(map[string]string{"Content-Type": "text/plain"}), status: 415},
		{name: "foreign Origin", body: echoCall, header: with(map[string]string{"Origin": "http://evil.example"}), status: 403},
		{name: "foreign Host", body: echoCall, header: with(map[string]string{"Host": "evil.example"}), status: 403},
		{name: "bad MCP-Protocol-Version", body: echoCall, header: with(map[string]string{"MCP-Protocol-Version": "1999-01-01"}), status: 400},
		{name: "missing session", body: echoCall, status: 400},
		{name: "unknown session", body: echoCall, header: with(map[string]string{"Mcp-Session-Id": strings.Repeat("ab", 32)}), status: 404},
		{name: "malformed session id", body: echoCall, header: with(map[string]string{"Mcp-Session-Id": "../../etc"}), status: 404},
		{name: "deleted session", body: echoCall, header: with(map[string]string{"Mcp-Session-Id": deleted}), status: 404},
		{name: "another principal's session", client: rawClient{t: t, url: g.Endpoint("open")}, body: echoCall, header: sess, status: 404},
		{name: "a session of another server", client: rawClient{t: t, url: g.Endpoint("open"), token: g.Token}, body: echoCall, header: sess, status: 404},
		{name: "a token on another's anonymous session", client: rawClient{t: t, url: g.Endpoint("open"), token: g.Token}, body: echoCall, header: map[string]string{"Mcp-Session-Id": anonSid}, status: 404},
		{name: "no token", client: rawClient{t: t, url: g.Endpoint("echo")}, body: echoCall, header: sess, status: 401},
		{name: "wrong token", client: rawClient{t: t, url: g.Endpoint("echo"), token: "gh_not_a_token_at_all"}, body: echoCall, header: sess, status: 401},
		{name: "unknown server", client: rawClient{t: t, url: g.Base + "/servers/nope/mcp", token: g.Token}, body: echoCall, header: sess, status: 404},
		{name: "DELETE without session", method: http.MethodDelete, status: 400},
		{name: "GET without session", method: http.MethodGet, header: map[string]string{"Accept": "text/event-stream"}, status: 400},
		{name: "Last-Event-ID of another stream", method: http.MethodGet, header: with(map[string]string{"Accept": "text/event-stream", "Last-Event-ID": "other-stream-42"}), status: 400},
		{name: "request disguised as a notification", body: `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`, header: sess, status: 400, code: -32600},
		{name: "unknown top-level member", body: `{"jsonrpc":"2.0","id":1,"ID":2,"method":"tools/call","params":{"name":"echo"}}`, header: sess, status: 400, code: -32600},
		{name: "unicode case-variant key", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a","teﬆ":"b"}},"paramſ":{}}`, header: sess, status: 400, code: -32600},
		{name: "PUT", method: http.MethodPut, body: echoCall, header: sess, status: 405},
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
			if tc.code != 0 && r.rpcCode() != tc.code {
				t.Fatalf("JSON-RPC code %d, want %d; body %s", r.rpcCode(), tc.code, r.body)
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
		if r := c.do(http.MethodPost, body, sess); r.status != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", r.status)
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
		if r.status != http.StatusBadRequest {
			t.Fatalf("2024-11-05 on a 2025-06-18 session: %d, want 400", r.status)
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
