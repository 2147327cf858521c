package tests

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

// TestEveryMethodDecided: every request a host sends is decided and audited, whatever its
// method: lists and completion by their own actions, a method the schema does not name by
// the catch-all (denied unless permitted), a denied initialize with a record of its own; and
// a policy on a tool's arguments allows and denies the same tool by its arguments.
func TestEveryMethodDecided(t *testing.T) {
	policies := policyDir(t, map[string]string{"args.cedar": `@id("no-dangerous-echo")
forbid (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { context has arguments && context.arguments has text && context.arguments.text == "rm -rf /" };

@id("no-sessions-on-locked")
forbid (principal, action == Gatehouse::Action::"initialize", resource == Gatehouse::Server::"locked");
`})
	// The echo tool's argument is declared for policies to read.
	schemaPath := filepath.Join(policies, "gatehouse.cedarschema")
	schema, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	withText := strings.Replace(string(schema), "force?: Bool", "force?: Bool,\n    text?: String", 1)
	if withText == string(schema) {
		t.Fatal("the shipped schema no longer declares force?: Bool in Arguments; update this test")
	}
	if err := os.WriteFile(schemaPath, []byte(withText), 0o600); err != nil {
		t.Fatal(err)
	}
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("echo", echo) + stdioEntry("locked", echo),
		Args:   []string{"--policy-dir", policies},
	})
	c := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	sid := c.initialize("2025-11-25")
	sess := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}

	call := func(id int, method, params string) rawResponse {
		return c.post(`{"jsonrpc":"2.0","id":`+itoa(id)+`,"method":"`+method+`","params":`+params+`}`, sess)
	}
	// Allowed, each by its own action.
	for i, m := range []struct{ method, params string }{
		{"tools/list", `{}`},
		{"ping", `{}`},
		{"tools/call", `{"name":"echo","arguments":{"text":"harmless"}}`},
	} {
		r := call(10+i, m.method, m.params)
		if code, msg, ok := r.rpcError(); ok || r.status != http.StatusOK {
			t.Fatalf("%s: %d %d %q, want an answer", m.method, r.status, code, msg)
		}
	}
	// The same tool denied by its arguments, naming the policy.
	r := call(20, "tools/call", `{"name":"echo","arguments":{"text":"rm -rf /"}}`)
	code, msg, ok := r.rpcError()
	if !ok || code != -32001 || !strings.Contains(string(r.body), "no-dangerous-echo") {
		t.Fatalf("echo with a forbidden argument: %d %q %s, want -32001 naming no-dangerous-echo", code, msg, r.body)
	}
	// A method the schema does not name: the catch-all, which no shipped policy permits.
	r = call(21, "experimental/frobnicate", `{}`)
	if code, _, ok := r.rpcError(); !ok || code != -32001 {
		t.Fatalf("an unnamed method: %d %s, want -32001", code, r.body)
	}
	// A denied initialize.
	locked := rawClient{t: t, url: g.Endpoint("locked"), token: g.Token}
	if r := locked.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, nil); r.status != http.StatusNotFound {
		t.Fatalf("initialize on a forbidden server: %d", r.status)
	}

	// Every one of them is in the audit log, with its decision.
	want := []struct{ method, tool, outcome string }{
		{"tools/list", "", "OUTCOME_ALLOWED"},
		{"ping", "", "OUTCOME_ALLOWED"},
		{"tools/call", "echo", "OUTCOME_ALLOWED"},
		{"tools/call", "echo", "OUTCOME_DENIED"},
		{"experimental/frobnicate", "", "OUTCOME_DENIED"},
	}
	for _, w := range want {
		waitAudit(t, g.DataDir, w.method+" "+w.outcome, func(r auditRecord) bool {
			return r.Method == w.method && r.Tool == w.tool && r.Outcome == w.outcome && r.Server == "echo"
		})
	}
	waitAudit(t, g.DataDir, "the allowed initialize's outcome", func(r auditRecord) bool {
		return r.Method == "initialize" && r.Server == "echo" && r.Phase == "PHASE_OUTCOME" && r.Outcome == "OUTCOME_ALLOWED"
	})
	rec := waitAudit(t, g.DataDir, "the denied initialize", func(r auditRecord) bool {
		return r.Method == "initialize" && r.Server == "locked" && r.Outcome == "OUTCOME_DENIED"
	})
	if rec.Principal != "dev" || rec.Phase != "PHASE_COMPLETE" {
		t.Fatalf("denied initialize record %+v", rec)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
