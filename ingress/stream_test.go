package ingress_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

// TestStreamReaderNeverReads: a GET reader that never reads while the upstream floods: the
// queue's own accounting never passes its bound, the reader is disconnected and the queue
// freed.
func TestStreamReaderNeverReads(t *testing.T) {
	const bound = 64 << 10
	g := newGateway(t, func(c *ingress.Config) {
		c.StreamQueueBytes = bound
		c.StreamWriteTimeout = 10 * time.Minute // the bound, not the deadline, ends this stream
	})
	sid := g.initialize("echo", tokenAlice, rev)
	g.bridge.mu.Lock()
	g.bridge.flood = []byte(`{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"` + strings.Repeat("x", 16<<10) + `"}}`)
	g.bridge.mu.Unlock()
	c := rawConn(t, g, "GET /servers/echo/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nAuthorization: Bearer "+tokenAlice+"\r\nMcp-Session-Id: "+sid+"\r\n\r\n")
	select {
	case err := <-g.bridge.floodDone:
		if err == nil {
			t.Fatal("the flood ended without an error")
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the flood was never stopped; accounting %+v", g.svc.StreamStats())
	}
	testsync.WaitFor(t, 20*time.Second, "the stream to end", func() bool { return g.svc.StreamStats().Open == 0 })
	st := g.svc.StreamStats()
	if st.Limit != bound || st.HighWater == 0 || st.HighWater > bound || st.Overflows != 1 || st.QueuedBytes != 0 {
		t.Fatalf("accounting %+v, want a high-water mark within %d, one overflow, nothing queued", st, bound)
	}
	readToEOF(t, c, 20*time.Second) // the server closed the connection
}

// TestStreamCaps: one GET stream per session (409), MaxStreamsPerPrincipal per principal
// (503 with Retry-After); DELETE ends the session's stream and frees it.
func TestStreamCaps(t *testing.T) {
	g := newGateway(t, func(c *ingress.Config) { c.MaxStreamsPerPrincipal = 2 })
	a := g.initialize("echo", tokenAlice, rev)
	b := g.initialize("echo", tokenAlice, rev)
	c := g.initialize("echo", tokenAlice, rev)
	bobs := g.initialize("echo", tokenBob, rev)
	get := func(sid, token string) response {
		return g.do(http.MethodGet, "echo", "", map[string]string{"Accept": "text/event-stream", "Mcp-Session-Id": sid, "Authorization": "Bearer " + token, "Content-Type": ""})
	}
	_, body := openStream(t, g, "echo", a, tokenAlice)
	if r := get(a, tokenAlice); r.status != http.StatusConflict || r.code != -32600 || !strings.HasPrefix(r.msg, "Conflict") {
		t.Fatalf("second stream on a session: %d %d %q, want 409", r.status, r.code, r.msg)
	}
	openStream(t, g, "echo", b, tokenAlice)
	r := get(c, tokenAlice)
	if r.status != http.StatusServiceUnavailable || r.code != -32007 || r.header.Get("Retry-After") == "" {
		t.Fatalf("third stream of a principal: %d %d %q, want 503 with Retry-After", r.status, r.code, r.msg)
	}
	openStream(t, g, "echo", bobs, tokenBob) // another principal is not counted against alice
	if n := g.svc.StreamStats().Open; n != 3 {
		t.Fatalf("%d streams open, want 3", n)
	}
	if r := g.do(http.MethodDelete, "echo", "", map[string]string{"Mcp-Session-Id": a, "Content-Type": ""}); r.status != http.StatusOK {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, body); done <- err }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("DELETE did not end the session's stream")
	}
	testsync.WaitFor(t, 20*time.Second, "the ended stream to be freed", func() bool { return g.svc.StreamStats().Open == 2 })
	// Alice's freed slot is hers again.
	openStream(t, g, "echo", c, tokenAlice)
}

// TestSSEWriteDeadline: a host that stops reading its POST's SSE stream fails the next write
// after the write timeout; the call ends (the upstream call cancelled) and is recorded as
// failed because the host went away.
func TestSSEWriteDeadline(t *testing.T) {
	g := newGateway(t, func(c *ingress.Config) { c.StreamWriteTimeout = 200 * time.Millisecond })
	sid := g.initialize("echo", tokenAlice, rev)
	body := `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"chatty","arguments":{}}}`
	rawConn(t, g, postHead(sid, tokenAlice, "Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body))
	select {
	case err := <-g.bridge.chattyDone:
		if err == nil {
			t.Fatal("emitting ended without an error")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a host that never reads holds the call")
	}
	recs := g.audit.waitRecords(t, 2)
	if o := recs[1].GetRecord(); o.GetOutcome() != auditv1.Outcome_OUTCOME_FAILED || !strings.Contains(o.GetError(), "host went away") {
		t.Fatalf("outcome %v %q, want FAILED: the host went away", o.GetOutcome(), o.GetError())
	}
}
