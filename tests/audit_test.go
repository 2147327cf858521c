package tests

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

// TestAuditEveryCall: each tools/call leaves exactly one durable record, allowed, denied or
// failed, and the chain verifies.
func TestAuditEveryCall(t *testing.T) {
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
	forbid := `@id("no-add")
forbid (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.name == "add" };
`
	if err := os.WriteFile(filepath.Join(policies, "no-add.cedar"), []byte(forbid), 0o600); err != nil {
		t.Fatal(err)
	}
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{Config: "servers:\n" + stdioEntry("echo", echo), Args: []string{"--policy-dir", policies}})
	c := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	sid := c.initialize("2025-06-18")
	sess := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}

	calls := []struct {
		tool    string
		code    int // JSON-RPC error code the host gets, 0 for a result
		outcome string
	}{
		{"echo", 0, "OUTCOME_ALLOWED"},
		{"add", -32001, "OUTCOME_DENIED"},
		{"no-such-tool", 0, "OUTCOME_FAILED"},
	}
	for _, call := range calls {
		r := c.post(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"`+call.tool+`","arguments":{"text":"x","a":1,"b":2}}}`, sess)
		if r.status != http.StatusOK {
			t.Fatalf("%s: status %d %s", call.tool, r.status, r.body)
		}
		if call.code != 0 && r.rpcCode() != call.code {
			t.Fatalf("%s: JSON-RPC code %d, want %d: %s", call.tool, r.rpcCode(), call.code, r.body)
		}
	}
	g.Stop(t)

	path := filepath.Join(g.DataDir, "audit", auditsvc.FileName)
	n, err := auditsvc.Verify(path)
	if err != nil {
		t.Fatalf("verify %s: %v", path, err)
	}
	if n != uint64(len(calls)) {
		t.Fatalf("audit log holds %d records, want %d (one per tools/call)", n, len(calls))
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for i := 0; sc.Scan(); i++ {
		var line struct {
			Record struct {
				Principal, Tenant, Server, Method, Tool, Outcome string
			} `json:"record"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		r := line.Record
		if r.Tool != calls[i].tool || r.Outcome != calls[i].outcome || r.Principal != "dev" || r.Tenant != "default" || r.Server != "echo" || r.Method != "tools/call" {
			t.Errorf("record %d = %+v, want tool %s outcome %s by dev/default on echo", i+1, r, calls[i].tool, calls[i].outcome)
		}
	}
}
