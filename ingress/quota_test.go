package ingress_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

// quotaData is the data of a quota refusal as the host reads it.
type quotaData struct {
	Scope      string  `json:"scope"`
	Rate       float64 `json:"rate"`
	Burst      int     `json:"burst"`
	Max        int     `json:"max"`
	RetryAfter int     `json:"retryAfter"`
}

func quotaDataOf(t *testing.T, payload []byte) quotaData {
	t.Helper()
	var answer struct {
		Error struct {
			Code int       `json:"code"`
			Data quotaData `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(payload, &answer); err != nil || answer.Error.Code != -32002 {
		t.Fatalf("answer %s (%v), want a -32002 error", payload, err)
	}
	return answer.Error.Data
}

// TestQuotaRefusals: a flood of calls refused by a quota, concurrent, is answered each with
// 429, Retry-After and the limit in the error's data, never reaches the bridge, and is
// audited as one record with the count once the window ends (here: at Close).
func TestQuotaRefusals(t *testing.T) {
	g := newGateway(t, nil)
	sid := g.initialize("echo", tokenAlice, rev)
	const m = 40
	var wg sync.WaitGroup
	for range m {
		wg.Go(func() {
			r := g.callTool("echo", sid, rev, "quota")
			if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "3" {
				t.Errorf("got %d, Retry-After %q: %s; want 429 and 3", r.status, r.header.Get("Retry-After"), r.body)
				return
			}
			if d := quotaDataOf(t, r.payload); d != (quotaData{Scope: "tool", Rate: 0.5, Burst: 2, RetryAfter: 3}) {
				t.Errorf("data %+v", d)
			}
		})
	}
	wg.Wait()
	if n := toolCalls(g); n != 0 {
		t.Fatalf("the bridge received %d tools/call", n)
	}
	if n := g.svc.QuotaRefusals(); n != m {
		t.Fatalf("QuotaRefusals() = %d, want %d", n, m)
	}
	if recs := g.audit.all(); len(recs) != 0 {
		t.Fatalf("%d records before the window's end, want none", len(recs))
	}
	if err := g.svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := g.audit.all()
	if len(recs) != 1 {
		t.Fatalf("%d records after Close, want one", len(recs))
	}
	rec := recs[0].GetRecord()
	if rec.GetCount() != m || rec.GetOutcome() != auditv1.Outcome_OUTCOME_DENIED || rec.GetPhase() != auditv1.Phase_PHASE_COMPLETE ||
		rec.GetPrincipal() != "alice" || rec.GetServer() != "echo" || rec.GetTool() != "quota" {
		t.Fatalf("record %v, want alice's %d refusals on echo", rec, m)
	}
}

// TestQuotaRefusalWindow: the records are written at each window's end, the count of each
// window in its own record, without Close.
func TestQuotaRefusalWindow(t *testing.T) {
	g := newGateway(t, func(c *ingress.Config) { c.QuotaAuditWindow = time.Second })
	sid := g.initialize("echo", tokenAlice, rev)
	for range 3 {
		g.callTool("echo", sid, rev, "quota")
	}
	testsync.WaitFor(t, 10*time.Second, "the window's record", func() bool { return len(g.audit.all()) == 1 })
	if c := g.audit.all()[0].GetRecord().GetCount(); c != 3 {
		t.Fatalf("count %d, want 3", c)
	}
	g.callTool("echo", sid, rev, "quota")
	testsync.WaitFor(t, 10*time.Second, "the next window's record", func() bool { return len(g.audit.all()) == 2 })
	if c := g.audit.all()[1].GetRecord().GetCount(); c != 1 {
		t.Fatalf("count %d, want 1", c)
	}
}

// TestQuotaRefusalInBatch: in a batch the refusal is a JSON-RPC error in the array, with its
// data, and the batch is answered 200.
func TestQuotaRefusalInBatch(t *testing.T) {
	g := newGateway(t, nil)
	sid := g.initialize(serverBatching, tokenAlice, "2025-03-26")
	body := `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"quota","arguments":{}}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{}}}]`
	r := g.do(http.MethodPost, serverBatching, body, map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-03-26"})
	var answers []json.RawMessage
	if r.status != http.StatusOK || json.Unmarshal(r.body, &answers) != nil || len(answers) != 2 {
		t.Fatalf("got %d %s, want 200 and two answers", r.status, r.body)
	}
	if d := quotaDataOf(t, answers[0]); d.Scope != "tool" || d.RetryAfter != 3 {
		t.Fatalf("data %+v", d)
	}
}

// TestPermitReleased: a call that took a concurrency permit releases it when it concludes.
func TestPermitReleased(t *testing.T) {
	g := newGateway(t, nil)
	sid := g.initialize("echo", tokenAlice, rev)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { g.callTool("echo", sid, rev, "permit") })
	}
	wg.Wait()
	// The release follows the answer: waited for, not assumed.
	testsync.WaitFor(t, 10*time.Second, "eight releases", func() bool {
		_, released := g.policy.permits.snapshot()
		return len(released) >= 8
	})
	issued, released := g.policy.permits.snapshot()
	slices.Sort(issued)
	slices.Sort(released)
	if len(issued) != 8 || !slices.Equal(issued, released) {
		t.Fatalf("issued %v, released %v", issued, released)
	}
}
