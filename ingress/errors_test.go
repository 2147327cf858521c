package ingress_test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/ingress"
)

// TestErrorTable: every row of the ingress's error table is reachable, and the host gets the
// row's HTTP status (or 200 with the error in the JSON-RPC exchange of a call), JSON-RPC
// code and message, with the trace id and never the cause.
func TestErrorTable(t *testing.T) {
	type scenario struct {
		inCall bool // answered inside the call's JSON-RPC exchange (HTTP 200)
		run    func(t *testing.T) response
	}
	// plain opens a gateway (with edit applied) and a session of alice on echo.
	plain := func(t *testing.T, edit func(*ingress.Config)) (*gateway, string) {
		g := newGateway(t, edit)
		return g, g.initialize("echo", tokenAlice, rev)
	}
	tool := func(name string) scenario {
		return scenario{inCall: true, run: func(t *testing.T) response {
			g, sid := plain(t, nil)
			return g.callTool("echo", sid, rev, name)
		}}
	}
	post := func(edit func(*ingress.Config), body string, header map[string]string) scenario {
		return scenario{run: func(t *testing.T) response {
			g, sid := plain(t, edit)
			h := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": rev}
			for k, v := range header {
				h[k] = v
			}
			return g.do(http.MethodPost, "echo", body, h)
		}}
	}
	initialize := func(server string) scenario {
		return scenario{run: func(t *testing.T) response {
			g := newGateway(t, nil)
			return g.do(http.MethodPost, server, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`, nil)
		}}
	}
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}`
	scenarios := map[string]scenario{
		"not_ready": {run: func(t *testing.T) response {
			g, sid := plain(t, nil)
			g.svc.SetReady(false)
			return g.callTool("echo", sid, rev, "echo")
		}},
		"host_not_allowed":   post(nil, call, map[string]string{"Host": "evil.example"}),
		"origin_not_allowed": post(nil, call, map[string]string{"Origin": "https://evil.example"}),
		"bad_revision":       post(nil, call, map[string]string{"MCP-Protocol-Version": "1999-01-01"}),
		"last_event_id":      post(nil, call, map[string]string{"Last-Event-ID": "1"}),
		"method_not_allowed": {run: func(t *testing.T) response { g, _ := plain(t, nil); return g.do(http.MethodPatch, "echo", call, nil) }},
		"body_too_large":     post(nil, `{"x":"`+strings.Repeat("a", 70<<10)+`"}`, nil),
		"media_type":         post(nil, call, map[string]string{"Content-Type": "text/plain"}),
		"not_acceptable":     post(nil, call, map[string]string{"Accept": "application/json"}),
		"stream_not_acceptable": {run: func(t *testing.T) response {
			g, _ := plain(t, nil)
			return g.do(http.MethodGet, "echo", "", map[string]string{"Accept": "application/json"})
		}},
		"two_credentials": {run: func(t *testing.T) response {
			g, _ := plain(t, nil)
			req, _ := http.NewRequest(http.MethodPost, g.url("echo"), strings.NewReader(call))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Add("Authorization", "Bearer a")
			req.Header.Add("Authorization", "Bearer b")
			return send(t, http.DefaultClient, req)
		}},
		"malformed_authorization": post(nil, call, map[string]string{"Authorization": "Token abc"}),
		"unauthenticated":         post(nil, call, map[string]string{"Authorization": "Bearer " + tokenOdd}),
		"no_credential":           post(nil, call, map[string]string{"Authorization": ""}),
		"unknown_token":           post(nil, call, map[string]string{"Authorization": "Bearer wrong"}),
		"token_expired":           post(nil, call, map[string]string{"Authorization": "Bearer " + tokenExpired}),
		"insufficient_scope":      post(nil, call, map[string]string{"Authorization": "Bearer " + tokenNoScope}),
		"auth_throttled": {run: func(t *testing.T) response {
			g, sid := plain(t, func(c *ingress.Config) { c.AuthFailRate, c.AuthFailBurst = 0.001, 1 })
			h := map[string]string{"Mcp-Session-Id": sid, "Authorization": "Bearer wrong"}
			g.do(http.MethodPost, "echo", call, h)
			return g.do(http.MethodPost, "echo", call, h)
		}},
		"auth_unavailable":  post(nil, call, map[string]string{"Authorization": "Bearer " + tokenAuthDown}),
		"session_required":  post(nil, call, map[string]string{"Mcp-Session-Id": ""}),
		"session_not_found": post(nil, call, map[string]string{"Mcp-Session-Id": "nope"}),
		"session_ended": {run: func(t *testing.T) response {
			g, sid := plain(t, nil)
			r := g.callTool("echo", sid, rev, "gone")
			if g.sessions.count() != 0 {
				t.Error("the session outlived its upstream")
			}
			return r
		}},
		"session_store_unavailable": {run: func(t *testing.T) response {
			g, sid := plain(t, nil)
			g.sessions.mu.Lock()
			g.sessions.down = true
			g.sessions.mu.Unlock()
			return g.callTool("echo", sid, rev, "echo")
		}},
		"too_many_sessions": {run: func(t *testing.T) response {
			g := newGateway(t, func(c *ingress.Config) { c.MaxSessionsPerPrincipal = 1 })
			g.initialize("echo", tokenAlice, rev)
			return g.do(http.MethodPost, "echo", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`, nil)
		}},
		"stream_open": {run: func(t *testing.T) response {
			g, sid := plain(t, nil)
			openStream(t, g, "echo", sid, tokenAlice)
			return g.do(http.MethodGet, "echo", "", map[string]string{"Accept": "text/event-stream", "Mcp-Session-Id": sid})
		}},
		"too_many_streams": {run: func(t *testing.T) response {
			g, sid := plain(t, func(c *ingress.Config) { c.MaxStreamsPerPrincipal = 1 })
			other := g.initialize("echo", tokenAlice, rev)
			openStream(t, g, "echo", sid, tokenAlice)
			return g.do(http.MethodGet, "echo", "", map[string]string{"Accept": "text/event-stream", "Mcp-Session-Id": other})
		}},
		"body_unreadable": {run: func(t *testing.T) response {
			g, sid := plain(t, nil)
			c := rawConn(t, g, postHead(sid, tokenAlice, "Transfer-Encoding: chunked\r\n\r\nzz\r\n"))
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			return decode(resp.StatusCode, resp.Header, b)
		}},
		"invalid_message":        post(nil, `{"jsonrpc":"2.0",,}`, nil),
		"batch_too_large":        batch(5, "echo"),
		"not_a_notification":     post(nil, `{"jsonrpc":"2.0","method":"tools/call"}`, nil),
		"initialize_not_alone":   post(nil, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`, nil),
		"no_server":              initialize(serverHidden),
		"no_initialize_response": initialize(serverMute),
		"batch_server_request":   {inCall: true, run: batch(1, "asks").run},
		"denied":                 tool("forbidden"),
		"quota_exhausted":        tool("quota"),
		"policy_unavailable":     tool("policy-down"),
		"audit_unavailable": {inCall: true, run: func(t *testing.T) response {
			g, sid := plain(t, nil)
			g.audit.set(func(f *fakeAudit) { f.refuse[auditv1.Phase_PHASE_DECISION] = true })
			return g.callTool("echo", sid, rev, "echo")
		}},
		"upstream_timeout":           tool("slow"),
		"upstream_message_too_large": tool("big"),
		"too_many_upstreams":         tool("crowded"),
		"upstream_start":             tool("spawn"),
		"upstream_rejected":          tool("rejected"),
		"upstream_unavailable":       tool("down"),
		"upstream_no_response":       tool("mute"),
		"bad_message":                tool("bad"),
		"duplicate_id":               tool("dup"),
		"cancelled":                  tool("cancelled"),
		"internal":                   tool("boom"),
		"needs_user_token":           initialize(serverExchange),
		"upstream_identity":          tool("identity"),
		"token_exchange_refused":     tool("exchange-refused"),
		"breaker_open":               tool("breaker"),
		"tool_quarantined": {inCall: true, run: func(t *testing.T) response {
			g := newGateway(t, nil)
			return g.callTool(serverPinned, g.initialize(serverPinned, tokenAlice, rev), rev, "echo")
		}},
	}
	for _, row := range ingress.Table {
		t.Run(row.Name, func(t *testing.T) {
			sc, ok := scenarios[row.Name]
			if !ok {
				t.Fatalf("no scenario reaches row %s", row.Name)
			}
			if row.Code > -32000 || row.Code < -32768 || row.Code < -32019 && row.Code > -32099 {
				t.Fatalf("row %s: code %d is outside the gateway's range", row.Name, row.Code)
			}
			r := sc.run(t)
			want := row.Status
			if sc.inCall && row.Name != "quota_exhausted" { // a quota refusal is 429 until a stream starts
				want = http.StatusOK
			}
			if r.status != want {
				t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
			}
			// The fakes' causes name paths, URLs, addresses and upstream bodies: none may show.
			for _, secret := range []string{"/secret", "/etc/", "/var/lib", "10.0.0.", "10.1.2.3", "postgres", "SECRET", "https://", "Traceback"} {
				if strings.Contains(string(r.body), secret) {
					t.Fatalf("the host sees %q: %s", secret, r.body)
				}
			}
			if row.Name == "invalid_message" { // code and message are the parser's
				if r.code != -32700 {
					t.Fatalf("code %d, want the parser's -32700", r.code)
				}
				return
			}
			if r.code != row.Code || !strings.HasPrefix(r.msg, row.Message) || !strings.Contains(r.msg, " (trace ") {
				t.Fatalf("got %d %q, want %d %q with the trace id", r.code, r.msg, row.Code, row.Message)
			}
			if row.Retry != "" && !sc.inCall && r.header.Get("Retry-After") != row.Retry {
				t.Fatalf("Retry-After %q, want %q", r.header.Get("Retry-After"), row.Retry)
			}
		})
	}
}

// batch posts n tools/call of tool in one batch on a 2025-03-26 session.
func batch(n int, tool string) struct {
	inCall bool
	run    func(t *testing.T) response
} {
	return struct {
		inCall bool
		run    func(t *testing.T) response
	}{run: func(t *testing.T) response {
		g := newGateway(t, nil)
		sid := g.initialize(serverBatching, tokenAlice, "2025-03-26")
		msgs := make([]string, n)
		for i := range msgs {
			msgs[i] = `{"jsonrpc":"2.0","id":` + string(rune('1'+i)) + `,"method":"tools/call","params":{"name":"` + tool + `","arguments":{}}}`
		}
		return g.do(http.MethodPost, serverBatching, "["+strings.Join(msgs, ",")+"]", map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-03-26"})
	}}
}
