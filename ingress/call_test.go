package ingress_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/ingress"
)

const rev = "2025-06-18"

var callID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func toolCalls(g *gateway) int {
	n := 0
	for _, s := range g.bridge.calls() {
		if strings.Contains(string(s.GetMessage()), `"tools/call"`) {
			n++
		}
	}
	return n
}

// TestAuditFailClosed: when the audit log refuses the decision record, the upstream never
// sees the call and the host gets the audit error.
func TestAuditFailClosed(t *testing.T) {
	g := newGateway(t, nil)
	sid := g.initialize("echo", tokenAlice, rev)
	g.audit.set(func(f *fakeAudit) { f.refuse[auditv1.Phase_PHASE_DECISION] = true })
	r := g.callTool("echo", sid, rev, "echo")
	if r.status != http.StatusOK || r.code != -32004 || !strings.HasPrefix(r.msg, "audit log unavailable") || !strings.Contains(r.msg, "(trace ") {
		t.Fatalf("got %d %d %q, want 200 -32004 audit log unavailable with a trace id", r.status, r.code, r.msg)
	}
	if strings.Contains(string(r.body), "/var/lib") {
		t.Fatalf("the audit service's message reached the host: %s", r.body)
	}
	if n := toolCalls(g); n != 0 {
		t.Fatalf("the bridge received %d tools/call, want none", n)
	}
	// The refused decision may still have landed (a timed-out append): a FAILED outcome is
	// offered so that recovery does not read the call as unknown.
	recs := g.audit.all()
	if len(recs) != 1 || recs[0].GetRecord().GetPhase() != auditv1.Phase_PHASE_OUTCOME || recs[0].GetRecord().GetOutcome() != auditv1.Outcome_OUTCOME_FAILED || !recs[0].GetDeferred() {
		t.Fatalf("audit holds %v, want one deferred FAILED outcome", recs)
	}
}

// TestAuditOutcome: an allowed call leaves a durable DECISION record before the upstream,
// then an OUTCOME record of the same call id, deferred, with the digest of the answer.
func TestAuditOutcome(t *testing.T) {
	cases := []struct {
		tool    string
		code    int
		outcome auditv1.Outcome
	}{
		{"echo", 0, auditv1.Outcome_OUTCOME_ALLOWED},
		{"fail", -32602, auditv1.Outcome_OUTCOME_FAILED},
		{"slow", -32005, auditv1.Outcome_OUTCOME_TIMED_OUT},
		{"down", -32003, auditv1.Outcome_OUTCOME_FAILED},
		{"big", -32006, auditv1.Outcome_OUTCOME_FAILED},
		{"big-old", -32006, auditv1.Outcome_OUTCOME_FAILED},
		{"crowded", -32007, auditv1.Outcome_OUTCOME_FAILED},
	}
	for _, tc := range cases {
		t.Run(tc.tool, func(t *testing.T) {
			g := newGateway(t, nil)
			sid := g.initialize("echo", tokenAlice, rev)
			r := g.callTool("echo", sid, rev, tc.tool)
			if r.status != http.StatusOK || r.code != tc.code {
				t.Fatalf("got %d code %d: %s, want 200 code %d", r.status, r.code, r.body, tc.code)
			}
			recs := g.audit.waitRecords(t, 2)
			d, o := recs[0], recs[1]
			if d.GetRecord().GetPhase() != auditv1.Phase_PHASE_DECISION || d.GetDeferred() {
				t.Fatalf("first record %v deferred=%v, want a durable DECISION", d.GetRecord().GetPhase(), d.GetDeferred())
			}
			dr := d.GetRecord()
			if !callID.MatchString(dr.GetCallId()) || dr.GetPrincipal() != "alice" || dr.GetTenant() != "t1" || dr.GetSessionId() != sid ||
				dr.GetServer() != "echo" || dr.GetMethod() != "tools/call" || dr.GetTool() != tc.tool || dr.GetArgumentsDigest() == "" ||
				dr.GetBundleVersion() != "sha256:test" || len(dr.GetPolicyIds()) != 1 || len(dr.GetTraceId()) != 32 {
				t.Fatalf("decision record incomplete: %v", dr)
			}
			if dr.GetOutcome() != auditv1.Outcome_OUTCOME_UNSPECIFIED {
				t.Fatalf("decision record has outcome %v", dr.GetOutcome())
			}
			or := o.GetRecord()
			if or.GetPhase() != auditv1.Phase_PHASE_OUTCOME || !o.GetDeferred() || or.GetCallId() != dr.GetCallId() || or.GetOutcome() != tc.outcome {
				t.Fatalf("outcome record %v deferred=%v call %s outcome %v, want a deferred OUTCOME of call %s with %v",
					or.GetPhase(), o.GetDeferred(), or.GetCallId(), or.GetOutcome(), dr.GetCallId(), tc.outcome)
			}
			sum := sha256.Sum256(r.payload)
			if or.GetResultDigest() != hex.EncodeToString(sum[:]) {
				t.Fatalf("result digest %s is not the SHA-256 of the answer %s", or.GetResultDigest(), r.payload)
			}
			if or.GetLatency() == nil {
				t.Fatal("outcome record without latency")
			}
			if tc.outcome != auditv1.Outcome_OUTCOME_ALLOWED && or.GetError() == "" {
				t.Fatal("failed outcome without an error")
			}
			// The bridge was told who calls, so it can cap children per principal and tenant.
			calls := g.bridge.calls()
			last := calls[len(calls)-1]
			if last.GetPrincipal() != "alice" || last.GetTenant() != "t1" {
				t.Fatalf("bridge Send principal %q tenant %q, want alice t1", last.GetPrincipal(), last.GetTenant())
			}
		})
	}
}

// TestHostGoneMidCall: a host that goes away while the upstream holds its call cancels the
// upstream call, and the outcome record says so; nothing is answered as a 500.
func TestHostGoneMidCall(t *testing.T) {
	g := newGateway(t, nil)
	sid := g.initialize("echo", tokenAlice, rev)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.url("echo"), strings.NewReader(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"hang","arguments":{}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tokenAlice)
	req.Header.Set("Mcp-Session-Id", sid)
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = errors.New("answered: " + resp.Status)
		}
		done <- err
	}()
	select {
	case <-g.bridge.hanging:
	case <-time.After(10 * time.Second):
		t.Fatal("the call never reached the bridge")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v", err)
	}
	recs := g.audit.waitRecords(t, 2)
	o := recs[1].GetRecord()
	if o.GetPhase() != auditv1.Phase_PHASE_OUTCOME || o.GetOutcome() != auditv1.Outcome_OUTCOME_FAILED || !strings.Contains(o.GetError(), "host went away") || o.GetCallId() != recs[0].GetRecord().GetCallId() {
		t.Fatalf("outcome record %v, want FAILED: the host went away", o)
	}
}

// TestAuditOutcomeDoesNotHoldAnswer: by default the host has its answer while the outcome
// record is still being appended; in strict mode it has none until the record is durable.
func TestAuditOutcomeDoesNotHoldAnswer(t *testing.T) {
	for _, strict := range []bool{false, true} {
		name := map[bool]string{false: "default", true: "strict"}[strict]
		t.Run(name, func(t *testing.T) {
			g := newGateway(t, func(c *ingress.Config) { c.StrictAudit = strict })
			sid := g.initialize("echo", tokenAlice, rev)
			g.audit.set(func(f *fakeAudit) { f.hold = true })
			answered := make(chan response, 1)
			go func() { answered <- g.answerOf("echo", sid, "echo") }()
			select {
			case <-g.audit.entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the outcome append never started")
			}
			if strict {
				select {
				case r := <-answered:
					t.Fatalf("strict: the host has its answer (%d %s) before the outcome record is durable", r.status, r.body)
				default:
				}
			} else {
				// The outcome append is held: the answer must arrive all the same.
				select {
				case r := <-answered:
					answered <- r
				case <-time.After(10 * time.Second):
					t.Fatal("default mode: the answer waits for the outcome append")
				}
			}
			close(g.audit.release)
			var r response
			select {
			case r = <-answered:
			case <-time.After(10 * time.Second):
				t.Fatal("no answer after the outcome record")
			}
			if r.status != http.StatusOK || r.code != 0 {
				t.Fatalf("answer %d %s", r.status, r.body)
			}
			recs := g.audit.waitRecords(t, 2)
			if recs[1].GetDeferred() == strict {
				t.Fatalf("outcome deferred=%v in %s mode", recs[1].GetDeferred(), name)
			}
		})
	}
}

// TestStrictAuditWithholdsAnswer: in strict mode an outcome record that cannot be written
// withholds the answer.
func TestStrictAuditWithholdsAnswer(t *testing.T) {
	g := newGateway(t, func(c *ingress.Config) { c.StrictAudit = true })
	sid := g.initialize("echo", tokenAlice, rev)
	g.audit.set(func(f *fakeAudit) { f.refuse[auditv1.Phase_PHASE_OUTCOME] = true })
	r := g.callTool("echo", sid, rev, "echo")
	if r.code != -32004 || strings.Contains(string(r.body), `"echo"`) {
		t.Fatalf("got %d %s, want the audit error instead of the result", r.code, r.body)
	}
}

// TestDeniedCall: a denied call is one durable COMPLETE record and the bridge sees nothing.
// A denial by policy names the bundle and the deciding policies in the error's data and the
// record; other refusals carry no data.
func TestDeniedCall(t *testing.T) {
	cases := []struct {
		tool    string
		code    int
		outcome auditv1.Outcome
		data    string // the JSON-RPC error's data, "" for none
	}{
		{"forbidden", -32001, auditv1.Outcome_OUTCOME_DENIED, `{"bundle":"sha256:test","policies":["no-forbidden"]}`},
		{"quota-plain", -32002, auditv1.Outcome_OUTCOME_DENIED, ""}, // without the limit's detail: audited alone
		{"policy-down", -32003, auditv1.Outcome_OUTCOME_FAILED, ""},
	}
	for _, tc := range cases {
		t.Run(tc.tool, func(t *testing.T) {
			g := newGateway(t, nil)
			sid := g.initialize("echo", tokenAlice, rev)
			r := g.callTool("echo", sid, rev, tc.tool)
			status := http.StatusOK
			if tc.code == -32002 {
				status = http.StatusTooManyRequests
			}
			if r.status != status || r.code != tc.code {
				t.Fatalf("got %d %d %s, want %d %d", r.status, r.code, r.body, status, tc.code)
			}
			if n := toolCalls(g); n != 0 {
				t.Fatalf("the bridge received %d tools/call", n)
			}
			recs := g.audit.all() // durable before the answer: no waiting
			if len(recs) != 1 {
				t.Fatalf("%d records, want one", len(recs))
			}
			rec := recs[0].GetRecord()
			if recs[0].GetDeferred() || rec.GetPhase() != auditv1.Phase_PHASE_COMPLETE || rec.GetOutcome() != tc.outcome || !callID.MatchString(rec.GetCallId()) || rec.GetTool() != tc.tool {
				t.Fatalf("record %v deferred=%v, want one durable COMPLETE %v", rec, recs[0].GetDeferred(), tc.outcome)
			}
			var answer struct {
				Error struct {
					Data json.RawMessage `json:"data"`
				} `json:"error"`
			}
			if err := json.Unmarshal(r.payload, &answer); err != nil {
				t.Fatalf("answer %s: %v", r.payload, err)
			}
			if string(answer.Error.Data) != tc.data {
				t.Fatalf("error data %s, want %q", answer.Error.Data, tc.data)
			}
			if tc.data != "" && (rec.GetBundleVersion() != "sha256:test" || strings.Join(rec.GetPolicyIds(), ",") != "no-forbidden") {
				t.Fatalf("record names bundle %q and policies %q, want the decision's", rec.GetBundleVersion(), rec.GetPolicyIds())
			}
		})
	}
	t.Run("audit refuses the record", func(t *testing.T) {
		g := newGateway(t, nil)
		sid := g.initialize("echo", tokenAlice, rev)
		g.audit.set(func(f *fakeAudit) { f.refuse[auditv1.Phase_PHASE_COMPLETE] = true })
		if r := g.callTool("echo", sid, rev, "forbidden"); r.code != -32004 {
			t.Fatalf("got %d %s, want -32004", r.code, r.body)
		}
	})
}

// TestInitializeDenied: a denied initialize answers 404, like an unknown server, and opens
// no session.
func TestInitializeDenied(t *testing.T) {
	g := newGateway(t, nil)
	r := g.do(http.MethodPost, serverHidden, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`, nil)
	if r.status != http.StatusNotFound || r.code != -32600 || !strings.HasPrefix(r.msg, "Not Found: no such server") || r.header.Get("Mcp-Session-Id") != "" {
		t.Fatalf("got %d %d %q session %q, want 404 without a session", r.status, r.code, r.msg, r.header.Get("Mcp-Session-Id"))
	}
	if n := g.sessions.count(); n != 0 {
		t.Fatalf("%d sessions, want none", n)
	}
	if n := len(g.bridge.calls()); n != 0 {
		t.Fatalf("the bridge received %d messages", n)
	}
}

// TestHostVisibleErrors: what the bridge says about paths, URLs, addresses and upstream
// bodies stays in the log.
func TestHostVisibleErrors(t *testing.T) {
	g := newGateway(t, nil)
	sid := g.initialize("echo", tokenAlice, rev)
	for _, tool := range []string{"spawn", "rejected", "down", "slow", "boom"} {
		r := g.callTool("echo", sid, rev, tool)
		for _, secret := range []string{"/secret", "SECRET", "postgres", "10.1.2.3", "Traceback", "https://"} {
			if strings.Contains(string(r.body), secret) {
				t.Errorf("%s: the host sees %q: %s", tool, secret, r.body)
			}
		}
		if !strings.Contains(r.msg, "(trace ") {
			t.Errorf("%s: no trace id in %q", tool, r.msg)
		}
	}
}

// TestProgressStreamsBeforeAnswer: upstream messages before the answer reach the host as SSE.
func TestProgressStreamsBeforeAnswer(t *testing.T) {
	g := newGateway(t, nil)
	sid := g.initialize("echo", tokenAlice, rev)
	r := g.callTool("echo", sid, rev, "progress")
	if !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") || strings.Count(string(r.body), "event: message") != 2 ||
		!strings.Contains(string(r.body), "notifications/progress") {
		t.Fatalf("got %s %s", r.header.Get("Content-Type"), r.body)
	}
}

// TestLoneAnswerFraming: an answer with nothing streamed before it is one SSE event with a
// Content-Length (not chunked), byte for byte the upstream's message; an answer after
// progress is chunked, its length unknown when the stream began.
func TestLoneAnswerFraming(t *testing.T) {
	g := newGateway(t, nil)
	sid := g.initialize("echo", tokenAlice, rev)
	for _, tc := range []struct {
		tool    string
		events  int
		chunked bool
	}{
		{"echo", 1, false},
		{"progress", 2, true},
	} {
		t.Run(tc.tool, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, g.url("echo"), strings.NewReader(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"`+tc.tool+`","arguments":{}}}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+tokenAlice)
			req.Header.Set("Mcp-Session-Id", sid)
			req.Header.Set("MCP-Protocol-Version", rev)
			resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("Content-Type %q, body %s", ct, body)
			}
			chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
			if chunked != tc.chunked || (!chunked && resp.ContentLength != int64(len(body))) {
				t.Fatalf("transfer encoding %v, Content-Length %d, body of %d bytes", resp.TransferEncoding, resp.ContentLength, len(body))
			}
			if n := strings.Count(string(body), "event: message\ndata: "); n != tc.events {
				t.Fatalf("%d events, want %d: %s", n, tc.events, body)
			}
			if !strings.HasSuffix(string(body), "\n\n") {
				t.Fatalf("the last event is not terminated: %q", body)
			}
			if tc.tool == "echo" {
				want := "event: message\ndata: " + `{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"echo"}]}}` + "\n\n"
				if string(body) != want {
					t.Fatalf("body %q, want %q", body, want)
				}
			}
		})
	}
}

// An allowed initialize is audited as a call is: its decision durable before the upstream
// sees it, then its outcome.
func TestInitializeAudited(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	sid := g.initialize("echo", tokenAlice, "2025-06-18")
	recs := g.audit.openings()
	if len(recs) != 2 {
		t.Fatalf("%d initialize records, want a decision and an outcome", len(recs))
	}
	d, o := recs[0].GetRecord(), recs[1].GetRecord()
	if d.GetPhase() != auditv1.Phase_PHASE_DECISION || recs[0].GetDeferred() || d.GetSessionId() != sid || d.GetPrincipal() != "alice" {
		t.Fatalf("decision record %v (deferred %v)", d, recs[0].GetDeferred())
	}
	if o.GetPhase() != auditv1.Phase_PHASE_OUTCOME || o.GetOutcome() != auditv1.Outcome_OUTCOME_ALLOWED || o.GetCallId() != d.GetCallId() {
		t.Fatalf("outcome record %v", o)
	}
}

// A list shows only what a call would be allowed on: the items policy's Filter refuses are
// taken out of the upstream's answer, the rest (and the cursor) pass unchanged.
func TestListFiltered(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	sid := g.initialize("echo", tokenAlice, rev)
	r := g.do(http.MethodPost, "echo", `{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}}`, map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": rev})
	var msg struct {
		Result struct {
			Tools []struct {
				Name        string `json:"name"`
				Description string `json:"description"`
			} `json:"tools"`
			NextCursor string `json:"nextCursor"`
		} `json:"result"`
	}
	if err := json.Unmarshal(r.payload, &msg); err != nil {
		t.Fatalf("%v: %s", err, r.payload)
	}
	var names []string
	for _, tool := range msg.Result.Tools {
		names = append(names, tool.Name)
	}
	if strings.Join(names, ",") != "echo,add" || msg.Result.Tools[1].Description != "a + b" || msg.Result.NextCursor != "p2" {
		t.Fatalf("listed %v (cursor %q): want echo and add, forbidden taken out", msg.Result.Tools, msg.Result.NextCursor)
	}
}
