package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

// policyDir is a directory with the example policies and schema plus extra (file name to
// Cedar text), for a gateway's --policy-dir.
func policyDir(t *testing.T, extra map[string]string) string {
	t.Helper()
	policies := t.TempDir()
	src := filepath.Join(gatehousetest.RepoRoot(t), "examples", "policies")
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".cedar") || strings.HasSuffix(e.Name(), ".cedarschema") {
			b, err := os.ReadFile(filepath.Join(src, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(policies, e.Name()), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, text := range extra {
		if err := os.WriteFile(filepath.Join(policies, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return policies
}

// TestInitializeDenied: a policy that forbids opening a session to a server is obeyed: the
// host gets 404 (as for a server that does not exist), no session and no upstream child,
// while a server the policy leaves alone still opens.
func TestInitializeDenied(t *testing.T) {
	policies := policyDir(t, map[string]string{"locked.cedar": `@id("no-sessions-on-locked")
forbid (principal, action == Gatehouse::Action::"initialize", resource == Gatehouse::Server::"locked");
`})
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("locked", echo) + stdioEntry("echo", echo),
		Args:   []string{"--policy-dir", policies},
	})
	locked := rawClient{t: t, url: g.Endpoint("locked"), token: g.Token}
	r := locked.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, nil)
	code, msg, _ := r.rpcError()
	if r.status != http.StatusNotFound || r.header.Get("Mcp-Session-Id") != "" || code != -32600 || !strings.Contains(strings.ToLower(msg), "not found") {
		t.Fatalf("initialize on a forbidden server: %d session=%q %d %q, want 404 -32600 not found and no session", r.status, r.header.Get("Mcp-Session-Id"), code, msg)
	}
	if kids := gatehousetest.ChildrenRunning(g.Pid(), echo); len(kids) != 0 {
		t.Fatalf("children %v started for a denied initialize", kids)
	}
	rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}.initialize("2025-06-18")
	if kids := gatehousetest.ChildrenRunning(g.Pid(), echo); len(kids) != 1 {
		t.Fatalf("children %v for the one allowed session", kids)
	}
}

// TestAuditEveryCall: each tools/call leaves exactly one durable record, allowed, denied or
// failed, and the chain verifies.
func TestAuditEveryCall(t *testing.T) {
	policies := policyDir(t, map[string]string{"no-add.cedar": `@id("no-add")
forbid (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.name == "add" };
`})
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{Config: "servers:\n" + stdioEntry("echo", echo), Args: []string{"--policy-dir", policies}})
	c := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	sid := c.initialize("2025-06-18")
	sess := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}

	const text = "audited call"
	calls := []struct {
		tool    string
		args    string
		code    int    // JSON-RPC error code the host gets, 0 for a result
		msg     string // a phrase of the error's message, or of the result's text
		isError bool   // the result is a tool error
		outcome string
	}{
		{tool: "echo", args: `{"text":"` + text + `"}`, msg: text, outcome: "OUTCOME_ALLOWED"},
		{tool: "add", args: `{"a":1,"b":2}`, code: -32001, msg: "denied", outcome: "OUTCOME_DENIED"},
		{tool: "no-such-tool", args: `{}`, code: -32602, msg: "no-such-tool", outcome: "OUTCOME_FAILED"},
	}
	for _, call := range calls {
		r := c.post(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"`+call.tool+`","arguments":`+call.args+`}}`, sess)
		if r.status != http.StatusOK {
			t.Fatalf("%s: status %d %s", call.tool, r.status, r.body)
		}
		if call.code == 0 {
			got, isError, ok := r.toolText()
			if !ok || isError != call.isError || got != call.msg {
				t.Fatalf("%s: result %q (isError %v, found %v), want %q: %s", call.tool, got, isError, ok, call.msg, r.body)
			}
			continue
		}
		code, msg, ok := r.rpcError()
		if !ok || code != call.code || !strings.Contains(strings.ToLower(msg), call.msg) {
			t.Fatalf("%s: JSON-RPC error %d %q (found %v), want %d with %q: %s", call.tool, code, msg, ok, call.code, call.msg, r.body)
		}
	}
	g.Stop(t)

	path := filepath.Join(g.DataDir, "audit", auditsvc.FileName)
	n, err := auditsvc.Verify(path)
	if err != nil {
		t.Fatalf("verify %s: %v", path, err)
	}
	// A call the upstream saw has a decision record written ahead and an outcome record; a
	// denied call, which never reached the upstream, has one complete record.
	// The session's initialize is audited the same way: a decision and an outcome.
	records := map[string]int{"echo": 2, "add": 1, "no-such-tool": 2}
	if n != 7 {
		t.Fatalf("audit log holds %d records, want 7 (decision and outcome for the initialize and the two calls that reached the upstream, one for the denied)", n)
	}
	// The chain covers the records' bodies: one byte changed in the denied call's record (made
	// to look like a call of another tool) breaks it there. Outcomes are committed without
	// holding the answer, so the records' order is not fixed: find the record first.
	log, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(log, []byte(`"tool":"add"`))
	if at < 0 {
		t.Fatalf("no record of tool add in the log:\n%s", log)
	}
	seq := uint64(bytes.Count(log[:at], []byte("\n")) + 1)
	tampered := bytes.Clone(log)
	tampered[at+len(`"tool":"a`)] = 'x' // "adx"
	copyPath := filepath.Join(t.TempDir(), auditsvc.FileName)
	if err := os.WriteFile(copyPath, tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	var chainErr *auditsvc.ChainError
	if _, err := auditsvc.Verify(copyPath); !errors.As(err, &chainErr) || chainErr.Seq != seq {
		t.Fatalf("verify of a log with an edited record body: %v, want a chain error at sequence %d", err, seq)
	}

	type record struct {
		Principal, Tenant, Server, Method, Tool, Outcome, Error, Phase string
		CallID                                                         string `json:"call_id"`
		ResultDigest                                                   string `json:"result_digest"`
	}
	byTool := map[string][]record{}
	for i, line := range bytes.Split(bytes.TrimSpace(log), []byte("\n")) {
		var l struct {
			Record record `json:"record"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		r := l.Record
		if r.Method == "initialize" {
			byTool["(initialize)"] = append(byTool["(initialize)"], r)
			continue
		}
		if r.Principal != "dev" || r.Tenant != "default" || r.Server != "echo" || r.Method != "tools/call" || r.CallID == "" {
			t.Errorf("record %d = %+v, want a call id and dev/default on echo, tools/call", i+1, r)
		}
		byTool[r.Tool] = append(byTool[r.Tool], r)
	}
	if rs := byTool["(initialize)"]; len(rs) != 2 || rs[0].CallID != rs[1].CallID || rs[0].Principal != "dev" {
		t.Errorf("initialize records %+v, want a decision and an outcome of one call id", rs)
	}
	for _, call := range calls {
		rs := byTool[call.tool]
		if len(rs) != records[call.tool] {
			t.Errorf("%s: %d records %+v, want %d", call.tool, len(rs), rs, records[call.tool])
			continue
		}
		last := rs[len(rs)-1]
		if len(rs) == 2 {
			decision, outcome := rs[0], rs[1]
			if decision.Phase == "PHASE_OUTCOME" {
				decision, outcome = outcome, decision
			}
			if decision.Phase != "PHASE_DECISION" || decision.Outcome != "" || outcome.Phase != "PHASE_OUTCOME" || decision.CallID != outcome.CallID || outcome.ResultDigest == "" {
				t.Errorf("%s: records %+v, want a decision without outcome and an outcome with a result digest, of one call id", call.tool, rs)
			}
			last = outcome
		} else if last.Phase != "PHASE_COMPLETE" {
			t.Errorf("%s: record %+v, want one complete record", call.tool, last)
		}
		if last.Outcome != call.outcome {
			t.Errorf("%s: outcome %s, want %s", call.tool, last.Outcome, call.outcome)
		}
		if (last.Error == "") != (call.outcome == "OUTCOME_ALLOWED") {
			t.Errorf("%s: outcome %s has error %q: want one exactly when the call was not allowed", call.tool, last.Outcome, last.Error)
		}
	}
}
