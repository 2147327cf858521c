package tests

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

// traceInMessage is how a host-visible error carries its trace id.
var traceInMessage = regexp.MustCompile(`\(trace [0-9a-f]{32}\)`)

// TestWriteAheadCrash: the gateway is SIGKILLed while upstreams hold a call (one over HTTP,
// held by an in-process server that says when it has the call, one over stdio): the
// decision record of each call is durable before its upstream has it, and after a start on the
// same data dir the log closes each call with an OUTCOME_UNKNOWN record of its call id; the
// chain verifies, and no stdio child of the killed gateway is left.
func TestWriteAheadCrash(t *testing.T) {
	t.Parallel()
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	u := startCountedUpstream(t)
	cfg := "servers:\n" + httpEntry("held", u.URL) + stdioEntry("echo", echo)
	g := gatehousetest.Start(t, gatehousetest.Options{Config: cfg})
	httpSid := rawClient{t: t, url: g.Endpoint("held"), token: g.Token}.initialize("2025-06-18")
	stdioSid := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}.initialize("2025-06-18")
	children := gatehousetest.ChildrenRunning(g.Pid(), echo)
	if len(children) != 1 {
		t.Fatalf("want one echo child of the gateway, have %v", children)
	}

	// The held calls end with the gateway; their answers (connection errors) are not the test's.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &http.Client{Timeout: gatehousetest.ClientTimeout}
	ended := make(chan struct{}, 2)
	hold := func(server, sid, args string) {
		go func() {
			_, _ = postRaw(ctx, client, g.Endpoint(server), g.Token, toolCall("hang", args), session(sid))
			ended <- struct{}{}
		}()
	}
	hold("held", httpSid, `{}`)
	select {
	case <-u.hanging:
	case <-ended:
		t.Fatalf("the hang call on held ended before its upstream had it:\n%s", g.Logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("the upstream did not get the hang call within 30s:\n%s", g.Logs())
	}
	// The upstream holds the call: its decision is already durable.
	var held auditRecord
	for _, r := range auditRecords(t, g.DataDir) {
		if r.Server == "held" && r.Tool == "hang" {
			held = r
		}
	}
	if held.Phase != "PHASE_DECISION" || held.CallID == "" {
		t.Fatalf("the upstream holds the call but the audit log has no decision record of it (have %+v)", held)
	}
	hold("echo", stdioSid, `{"seconds":600}`)
	stdio := waitAudit(t, g.DataDir, "the decision record of the stdio hang call", func(r auditRecord) bool {
		return r.Server == "echo" && r.Tool == "hang" && r.Phase == "PHASE_DECISION" && r.CallID != ""
	})
	select {
	case <-ended:
		t.Fatalf("a hang call ended before the gateway was killed:\n%s", g.Logs())
	default:
	}

	g.Kill(t)
	testsync.WaitFor(t, 15*time.Second, "the stdio child to die with the gateway", func() bool { return !isLive(children[0]) })
	if n := u.calls.Load(); n != 1 {
		t.Fatalf("the HTTP upstream got %d tools/call messages, want the one held", n)
	}

	// A new gateway on the same data dir closes the calls the crash left open.
	g2 := gatehousetest.Start(t, gatehousetest.Options{Config: cfg, DataDir: g.DataDir})
	if kids := gatehousetest.ChildrenRunning(g2.Pid(), echo); len(kids) != 0 {
		t.Fatalf("the new gateway runs children %v before any session", kids)
	}
	g2.Stop(t)
	verifyAudit(t, g.DataDir)
	records := auditRecords(t, g.DataDir)
	for _, call := range []auditRecord{held, stdio} {
		var decisions, outcomes []auditRecord
		for _, r := range records {
			if r.CallID != call.CallID {
				continue
			}
			switch r.Phase {
			case "PHASE_DECISION":
				decisions = append(decisions, r)
			case "PHASE_OUTCOME":
				outcomes = append(outcomes, r)
			default:
				t.Errorf("call %s on %s: unexpected record %+v", call.CallID, call.Server, r)
			}
		}
		if len(decisions) != 1 || len(outcomes) != 1 {
			t.Errorf("call %s on %s: %d decision and %d outcome records, want one of each: %+v", call.CallID, call.Server, len(decisions), len(outcomes), append(decisions, outcomes...))
			continue
		}
		o := outcomes[0]
		if o.Outcome != "OUTCOME_UNKNOWN" || o.Error == "" || o.Server != call.Server || o.Tool != "hang" || o.Principal != "dev" {
			t.Errorf("call %s on %s: outcome record %+v, want OUTCOME_UNKNOWN with an error, of dev's hang on %s", call.CallID, call.Server, o, call.Server)
		}
	}
}

// TestWriteAheadDiskFull: with the audit log's disk full, a tools/call is refused with the
// audit error (-32004, with a trace id) and its upstream receives nothing; once there is room
// again, calls go through and the chain verifies; the health check answers throughout. The log's directory is a small tmpfs (this
// needs root, as in CI).
func TestWriteAheadDiskFull(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs for the audit log needs root (CI runs the suite as root)")
	}
	u := startCountedUpstream(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	auditDir := filepath.Join(dataDir, "audit")
	if err := os.MkdirAll(auditDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", auditDir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=64k,mode=0700"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", auditDir, err)
	}
	// Registered before Start: cleanups run last first, so this runs after the gateway stopped.
	t.Cleanup(func() {
		if err := syscall.Unmount(auditDir, 0); err != nil {
			t.Errorf("unmount %s: %v", auditDir, err)
			_ = syscall.Unmount(auditDir, syscall.MNT_DETACH)
		}
	})
	g := gatehousetest.Start(t, gatehousetest.Options{Config: "servers:\n" + httpEntry("counted", u.URL), DataDir: dataDir})
	c := rawClient{t: t, url: g.Endpoint("counted"), token: g.Token}
	sess := session(c.initialize("2025-06-18"))
	echoOK := func(t *testing.T, text string) {
		t.Helper()
		before := u.calls.Load()
		r := c.post(toolCall("echo", `{"text":"`+text+`"}`), sess)
		if got, isError, ok := r.toolText(); r.status != http.StatusOK || !ok || isError || got != text {
			t.Fatalf("echo: %d %s, want the text %q back", r.status, r.body, text)
		}
		if n := u.calls.Load(); n != before+1 {
			t.Fatalf("the upstream counted %d tools/call messages after one more call, want %d", n, before+1)
		}
	}
	echoOK(t, "before the disk filled")
	waitAudit(t, dataDir, "the first call's outcome", func(r auditRecord) bool { return r.Phase == "PHASE_OUTCOME" })

	filler := filepath.Join(auditDir, "filler")
	fill(t, filler)
	// The log's last page may still have room for a record or two: calls may go through until
	// one finds the disk full. Every call is counted by the upstream or refused before it.
	var refused []string
	for i := 0; len(refused) < 3; i++ {
		if i == 50 {
			t.Fatalf("50 calls after the audit disk filled, %d refused: the gateway does not fail closed:\n%s", len(refused), g.Logs())
		}
		before := u.calls.Load()
		r := c.post(toolCall("echo", `{"text":"disk full"}`), sess)
		code, msg, isErr := r.rpcError()
		if !isErr {
			// (A call may still go through after a refusal: a refused batch can have held a
			// deferred outcome record beside the decision, and the decision alone fits.)
			if got, _, ok := r.toolText(); !ok || got != "disk full" {
				t.Fatalf("call %d after the disk filled: %d %s, want the text back or the audit error", i, r.status, r.body)
			}
			continue
		}
		if code != -32004 || !strings.Contains(msg, "audit") || !traceInMessage.MatchString(msg) {
			t.Fatalf("call %d after the disk filled: JSON-RPC error %d %q, want -32004 about the audit log with a trace id", i, code, msg)
		}
		if n := u.calls.Load(); n != before {
			t.Fatalf("a call refused for the full audit disk reached the upstream (%d tools/call messages, %d before)", n, before)
		}
		refused = append(refused, traceID(msg))
	}

	// The gateway itself stays up: its health check answers while every call is refused.
	hr, err := http.Get(g.Base + "/healthz")
	if err != nil {
		t.Fatalf("health check on a full audit disk: %v", err)
	}
	hr.Body.Close()
	if hr.StatusCode != http.StatusOK {
		t.Fatalf("health check on a full audit disk: %d, want 200", hr.StatusCode)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	echoOK(t, "after the disk was freed")
	g.Stop(t)
	verifyAudit(t, dataDir)
	// A refused call has no decision record (the log refused it) and was not allowed; a later
	// outcome record saying it failed is allowed, where the log takes one again.
	for _, r := range auditRecords(t, dataDir) {
		for _, tr := range refused {
			if r.TraceID == tr && (r.Phase == "PHASE_DECISION" || r.Outcome == "OUTCOME_ALLOWED") {
				t.Errorf("the audit log holds a record %+v of a call refused for the full disk, which has no decision and was not allowed", r)
			}
		}
	}
}

// traceID is the trace id in a host-visible error message, "" when it has none.
func traceID(msg string) string {
	m := traceInMessage.FindString(msg)
	if m == "" {
		return ""
	}
	return strings.TrimSuffix(strings.TrimPrefix(m, "(trace "), ")")
}

// fill writes a file at path until its file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for i := 0; ; i++ {
		if i == 1<<16 {
			t.Fatalf("%s: 256 MiB written and the file system is not full", path)
		}
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return
		}
	}
}
