package ingress_test

import (
	"net/http"
	"strings"
	"testing"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
)

// TestBreakerOpen: the bridge's refusal by an open circuit breaker (a wait of 24.2 s) reaches
// the host as -32010 naming the server and the retry time, with Retry-After 25: a 503 for an
// initialize, a 200 carrying the JSON-RPC error for a call, whose audit outcome is FAILED and
// names the breaker. The bridge's own text (a path here) never shows.
func TestBreakerOpen(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, r response, status int, server string) {
		t.Helper()
		if r.status != status || r.code != -32010 || r.header.Get("Retry-After") != "25" {
			t.Fatalf("answer %d, code %d, Retry-After %q, want %d, -32010 and 25: %s", r.status, r.code, r.header.Get("Retry-After"), status, r.body)
		}
		if !strings.HasPrefix(r.msg, `circuit breaker open: server "`+server+`" is failing; calls to it are refused until 20`) || !strings.Contains(r.msg, "(trace ") {
			t.Fatalf("message %q, want one naming %s, the retry time and the trace id", r.msg, server)
		}
		if strings.Contains(string(r.body), "/secret") {
			t.Fatalf("the host sees the bridge's text: %s", r.body)
		}
	}
	t.Run("initialize", func(t *testing.T) {
		t.Parallel()
		g := newGateway(t, nil)
		check(t, g.do(http.MethodPost, serverBroken, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`, nil), http.StatusServiceUnavailable, serverBroken)
	})
	t.Run("call", func(t *testing.T) {
		t.Parallel()
		g := newGateway(t, nil)
		sid := g.initialize("echo", tokenAlice, rev)
		check(t, g.callTool("echo", sid, rev, "breaker"), http.StatusOK, "echo")
		recs := g.audit.waitRecords(t, 2)
		out := recs[len(recs)-1].GetRecord()
		if out.GetOutcome() != auditv1.Outcome_OUTCOME_FAILED || !strings.HasPrefix(out.GetError(), "breaker_open: ") || out.GetServer() != "echo" {
			t.Fatalf("outcome record %v, want FAILED naming the breaker", out)
		}
		// The session stays: the next call goes through.
		if r := g.callTool("echo", sid, rev, "echo"); r.status != http.StatusOK || r.code != 0 {
			t.Fatalf("call after the refusal: %d %s", r.status, r.body)
		}
	})
}
