package auditsvc_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
)

// decision is the record written ahead of call id's upstream call.
func decision(id string) *auditv1.Record {
	r := record(0)
	r.CallId, r.Phase, r.Outcome, r.Latency = id, auditv1.Phase_PHASE_DECISION, auditv1.Outcome_OUTCOME_UNSPECIFIED, nil
	r.TraceId, r.Principal, r.Tool = "trace-"+id, "principal-"+id, "tool-"+id
	return r
}

// outcome is the record of what became of call id.
func outcome(id string, o auditv1.Outcome) *auditv1.Record {
	return &auditv1.Record{
		CallId: id, Phase: auditv1.Phase_PHASE_OUTCOME, Outcome: o, Server: "files", Method: "tools/call",
		ResultDigest: strings.Repeat("cd", 32), Latency: durationpb.New(2 * time.Millisecond),
	}
}

func appendDeferred(svc *auditsvc.Service, rec *auditv1.Record) (*auditv1.AppendResponse, error) {
	resp, err := svc.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{Record: rec, Deferred: true}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// records returns the log's records in order.
func records(t *testing.T, path string) []*auditv1.Record {
	t.Helper()
	var out []*auditv1.Record
	for i, l := range readLines(t, path) {
		var r auditv1.Record
		if err := protojson.Unmarshal(l.Record, &r); err != nil {
			t.Fatalf("record %d: %v", i+1, err)
		}
		out = append(out, &r)
	}
	return out
}

// unknowns returns the OUTCOME_UNKNOWN records of the log.
func unknowns(t *testing.T, path string) []*auditv1.Record {
	t.Helper()
	var out []*auditv1.Record
	for _, r := range records(t, path) {
		if r.GetOutcome() == auditv1.Outcome_OUTCOME_UNKNOWN {
			out = append(out, r)
		}
	}
	return out
}

func TestDeferredAppend(t *testing.T) {
	t.Parallel()
	svc := open(t, t.TempDir(), 0)
	if _, err := appendRecord(svc, decision("c1")); err != nil {
		t.Fatal(err)
	}
	resp, err := appendDeferred(svc, outcome("c1", auditv1.Outcome_OUTCOME_ALLOWED))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSequence() != 0 || resp.GetHash() != "" {
		t.Fatalf("deferred append answered %v; want sequence 0 and no hash", resp)
	}
	if err := svc.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	// Sync means durable: the record is in the file now, before Close.
	got := records(t, svc.Path())
	if len(got) != 2 || got[1].GetPhase() != auditv1.Phase_PHASE_OUTCOME || got[1].GetCallId() != "c1" ||
		got[1].GetOutcome() != auditv1.Outcome_OUTCOME_ALLOWED || got[1].GetResultDigest() == "" {
		t.Fatalf("records after Sync: %v", got)
	}
	// Deferred records are committed by Close too.
	for i := range 20 {
		if _, err := appendDeferred(svc, outcome(fmt.Sprint("d", i), auditv1.Outcome_OUTCOME_FAILED)); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, err := auditsvc.Verify(svc.Path()); err != nil || n != 22 {
		t.Fatalf("Verify = %d, %v; want 22", n, err)
	}
	if st := svc.Stats(); st.LostDeferred != 0 || st.Queued != 0 || st.QueuedBytes != 0 {
		t.Fatalf("Stats = %+v after Close; want nothing lost or queued", st)
	}
}

// TestDeferredCommittedAlone: a deferred record with nothing after it is still committed,
// once the commit delay has passed, with no Sync, Close or other append to carry it.
func TestDeferredCommittedAlone(t *testing.T) {
	t.Parallel()
	for _, delay := range []time.Duration{-1, 0, 20 * time.Millisecond} {
		t.Run(fmt.Sprint("delay ", delay), func(t *testing.T) {
			t.Parallel()
			svc, err := auditsvc.New(auditsvc.Config{Dir: t.TempDir(), CommitDelay: delay}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = svc.Close(context.Background()) })
			if _, err := appendDeferred(svc, outcome("alone", auditv1.Outcome_OUTCOME_ALLOWED)); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for svc.Stats().Commits != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("deferred record not committed within 10s; Stats = %+v", svc.Stats())
				}
				time.Sleep(time.Millisecond)
			}
			if got := records(t, svc.Path()); len(got) != 1 || got[0].GetCallId() != "alone" {
				t.Fatalf("log holds %v, want the deferred record", got)
			}
		})
	}
}

func TestAppendValidatesPhases(t *testing.T) {
	t.Parallel()
	svc := open(t, t.TempDir(), 0)
	with := func(r *auditv1.Record, f func(*auditv1.Record)) *auditv1.Record { f(r); return r }
	tests := []struct {
		name string
		rec  *auditv1.Record
		ok   bool
	}{
		{"decision", decision("a"), true},
		{"decision without call id", with(decision("a"), func(r *auditv1.Record) { r.CallId = "" }), false},
		{"decision with an outcome", with(decision("a"), func(r *auditv1.Record) { r.Outcome = auditv1.Outcome_OUTCOME_ALLOWED }), false},
		{"decision with a result digest", with(decision("a"), func(r *auditv1.Record) { r.ResultDigest = "ab" }), false},
		{"outcome allowed", outcome("a", auditv1.Outcome_OUTCOME_ALLOWED), true},
		{"outcome timed out", outcome("a", auditv1.Outcome_OUTCOME_TIMED_OUT), true},
		{"outcome without call id", with(outcome("a", auditv1.Outcome_OUTCOME_FAILED), func(r *auditv1.Record) { r.CallId = "" }), false},
		{"outcome unspecified", outcome("a", auditv1.Outcome_OUTCOME_UNSPECIFIED), false},
		{"outcome unknown from a caller", outcome("a", auditv1.Outcome_OUTCOME_UNKNOWN), false},
		{"outcome without server", with(outcome("a", auditv1.Outcome_OUTCOME_FAILED), func(r *auditv1.Record) { r.Server = "" }), false},
		{"complete denied", with(record(0), func(r *auditv1.Record) {
			r.Phase, r.Outcome, r.CallId = auditv1.Phase_PHASE_COMPLETE, auditv1.Outcome_OUTCOME_DENIED, "x"
		}), true},
		{"complete unknown", with(record(0), func(r *auditv1.Record) {
			r.Phase, r.Outcome = auditv1.Phase_PHASE_COMPLETE, auditv1.Outcome_OUTCOME_UNKNOWN
		}), false},
		{"unspecified phase unknown outcome", with(record(0), func(r *auditv1.Record) { r.Outcome = auditv1.Outcome_OUTCOME_UNKNOWN }), false},
		{"unknown phase", with(record(0), func(r *auditv1.Record) { r.Phase = 9 }), false},
		{"oversized call id", decision(strings.Repeat("c", 129)), false},
		{"call id not UTF-8", decision("c\xff"), false},
		{"unknown arguments form", with(record(0), func(r *auditv1.Record) { r.ArgumentsForm = "some" }), false},
		// Names and ids over their bounds, or not UTF-8, are trimmed (TestFieldsTrimmed).
		{"oversized result digest", with(outcome("a", auditv1.Outcome_OUTCOME_ALLOWED), func(r *auditv1.Record) { r.ResultDigest = strings.Repeat("d", 513) }), true},
		{"principal not UTF-8", with(record(0), func(r *auditv1.Record) { r.Principal = "al\xffice" }), true},
	}
	want := uint64(0)
	for _, tt := range tests {
		for _, deferred := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s deferred=%v", tt.name, deferred), func(t *testing.T) {
				_, err := svc.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{Record: tt.rec, Deferred: deferred}))
				if tt.ok && err != nil {
					t.Fatalf("err = %v, want accepted", err)
				}
				if !tt.ok && connect.CodeOf(err) != connect.CodeInvalidArgument {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
			})
			if tt.ok {
				want++
			}
		}
	}
	if err := svc.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, err := auditsvc.Verify(svc.Path()); err != nil || n != want {
		t.Fatalf("Verify = %d, %v; want the %d accepted records only", n, err, want)
	}
}

// TestErrorTruncated: a long error text is kept, cut at its bound with a marker, and the
// caller's record is not changed.
func TestErrorTruncated(t *testing.T) {
	t.Parallel()
	svc := open(t, t.TempDir(), 0)
	long := strings.Repeat("é", 10000) // 20000 bytes, two per character
	rec := outcome("a", auditv1.Outcome_OUTCOME_FAILED)
	rec.Error = long + "\xff"
	if _, err := appendRecord(svc, rec); err != nil {
		t.Fatal(err)
	}
	if rec.GetError() != long+"\xff" || rec.GetTime() != nil {
		t.Fatal("Append changed the caller's record")
	}
	got := records(t, svc.Path())[0].GetError()
	marker := " …[truncated: 20003 bytes in all]"
	if len(got) > 8192 || !strings.HasSuffix(got, marker) || !strings.HasPrefix(long, strings.TrimSuffix(got, marker)) || len(got) < 8100 {
		t.Fatalf("stored error is %d bytes ending %q", len(got), got[max(0, len(got)-60):])
	}
}

// TestFieldsTrimmed: a name or id over its bound is cut with a marker giving its length, and
// invalid UTF-8 is replaced, instead of refusing the call's record; past 64 policy ids the
// first 63 are kept and a marker says how many there were. Each stored record gets a record
// id of its own, whatever the caller sent; the caller's record is not changed.
func TestFieldsTrimmed(t *testing.T) {
	t.Parallel()
	svc := open(t, t.TempDir(), 0)
	rec := decision("a")
	rec.TraceId = strings.Repeat("t", 600)
	rec.Tool = strings.Repeat("x", 5000)
	rec.Method = "tools/\xffcall"
	rec.RecordId = "chosen-by-the-caller"
	rec.Arguments, rec.ArgumentsForm = strings.Repeat("a", 20000), auditsvc.ArgumentsFull
	rec.PolicyIds = nil
	for i := range 70 {
		rec.PolicyIds = append(rec.PolicyIds, fmt.Sprint("p", i))
	}
	if _, err := appendRecord(svc, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := appendRecord(svc, rec); err != nil {
		t.Fatal(err)
	}
	if rec.GetRecordId() != "chosen-by-the-caller" || len(rec.GetTool()) != 5000 || len(rec.GetPolicyIds()) != 70 {
		t.Fatalf("Append changed the caller's record: %q, %d, %d", rec.GetRecordId(), len(rec.GetTool()), len(rec.GetPolicyIds()))
	}
	got := records(t, svc.Path())
	g := got[0]
	for _, f := range []struct {
		name, value, marker string
		max                 int
	}{
		{"trace_id", g.GetTraceId(), " …[truncated: 600 bytes in all]", 512},
		{"tool", g.GetTool(), " …[truncated: 5000 bytes in all]", 4096},
		{"arguments", g.GetArguments(), " …[truncated: 20000 bytes in all]", 16 << 10},
	} {
		if len(f.value) > f.max || len(f.value) < f.max-8 || !strings.HasSuffix(f.value, f.marker) {
			t.Errorf("%s stored as %d bytes ending %q; want at most %d ending %q", f.name, len(f.value), f.value[max(0, len(f.value)-40):], f.max, f.marker)
		}
	}
	if g.GetMethod() != "tools/\uFFFDcall" {
		t.Errorf("method stored as %q", g.GetMethod())
	}
	if ids := g.GetPolicyIds(); len(ids) != 64 || ids[62] != "p62" || ids[63] != "…[truncated: 70 policy ids in all]" {
		t.Errorf("policy ids stored as %d, ending %q", len(ids), ids[len(ids)-2:])
	}
	a, b := g.GetRecordId(), got[1].GetRecordId()
	if len(a) != 32 || len(b) != 32 || a == b || a == "chosen-by-the-caller" || a[:16] != b[:16] {
		t.Errorf("record ids %q and %q: want two distinct ids of 32 hex digits sharing the log's prefix", a, b)
	}
}

// TestRecoveryWritesUnknownOutcome: a decision without an outcome is given one at the next
// start, once; decisions with an outcome are left alone.
func TestRecoveryWritesUnknownOutcome(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, auditsvc.FileName)
	svc := open(t, dir, 0)
	for _, r := range []*auditv1.Record{
		decision("open-1"),
		decision("done"),
		record(1),
		decision("open-2"),
		outcome("done", auditv1.Outcome_OUTCOME_ALLOWED),
		outcome("no-decision", auditv1.Outcome_OUTCOME_FAILED),
		decision("open-3"),
	} {
		if _, err := appendRecord(svc, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := appendDeferred(svc, outcome("open-3", auditv1.Outcome_OUTCOME_TIMED_OUT)); err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var logs testsync.Buffer
	svc, err := auditsvc.New(auditsvc.Config{Dir: dir}, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Durable before New returned: read the file with the service still open.
	got := unknowns(t, path)
	if len(got) != 2 {
		t.Fatalf("%d unknown outcomes, want 2: %v", len(got), got)
	}
	for i, id := range []string{"open-1", "open-2"} {
		r, d := got[i], decision(id)
		if r.GetCallId() != id || r.GetPhase() != auditv1.Phase_PHASE_OUTCOME ||
			r.GetError() != "gateway stopped before the outcome was recorded" ||
			r.GetPrincipal() != d.GetPrincipal() || r.GetTenant() != d.GetTenant() || r.GetServer() != d.GetServer() ||
			r.GetMethod() != d.GetMethod() || r.GetTool() != d.GetTool() || r.GetTraceId() != d.GetTraceId() ||
			r.GetSessionId() != d.GetSessionId() || r.GetTime() == nil {
			t.Fatalf("unknown outcome %d = %v; want the fields of decision %v", i, r, d)
		}
	}
	if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), "open-2") {
		t.Errorf("recovery not logged with the call ids; logs:\n%s", logs.String())
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, err := auditsvc.Verify(path); err != nil || n != 10 {
		t.Fatalf("Verify = %d, %v; want 10", n, err)
	}
	open(t, dir, 0).Close(context.Background())
	if n, err := auditsvc.Verify(path); err != nil || n != 10 {
		t.Fatalf("Verify after a second restart = %d, %v; want 10 (nothing more added)", n, err)
	}
}

// TestDiskFullFailsClosed puts the log on a small tmpfs and fills it (as root, which CI is;
// otherwise the FailWrites hook stands in for the full disk): a decision is refused with
// Unavailable naming the full disk, nothing of it stays in the log, a deferred outcome queued
// meanwhile is counted as lost, and once there is room again the log appends and verifies.
func TestDiskFullFailsClosed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var free func()
	if os.Geteuid() == 0 {
		dir, free = smallDisk(t)
	}
	var logs testsync.Buffer
	svc, err := auditsvc.New(auditsvc.Config{Dir: dir}, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	if free == nil {
		svc.FailWrites(fmt.Errorf("injected: %w", syscall.ENOSPC))
		free = func() { svc.FailWrites(nil) }
	}
	// Append decisions until the disk refuses one.
	var durable uint64
	for ; ; durable++ {
		if durable == 1000 {
			t.Fatal("1000 decisions fit on the full disk")
		}
		resp, err := appendRecord(svc, decision(fmt.Sprint("call-", durable)))
		if err != nil {
			if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "no space left on device") {
				t.Fatalf("append on a full disk: err = %v, want Unavailable naming the full disk", err)
			}
			break
		}
		if resp.GetSequence() != durable+1 {
			t.Fatalf("sequence %d, want %d", resp.GetSequence(), durable+1)
		}
	}
	t.Logf("full disk (tmpfs: %v) after %d decisions", os.Geteuid() == 0, durable)
	if n, err := auditsvc.Verify(svc.Path()); err != nil || n != durable {
		t.Fatalf("Verify on the full disk = %d, %v; want the %d acknowledged records", n, err, durable)
	}
	// A deferred outcome was answered before its commit failed: visible, not silent. Its
	// error text is longer than a page, so that it cannot fit what the refused decision left
	// of the tmpfs's last page.
	lost := outcome("lost-call", auditv1.Outcome_OUTCOME_FAILED)
	lost.Error = strings.Repeat("e", 6000)
	if _, err := appendDeferred(svc, lost); err != nil {
		t.Fatal(err)
	}
	if err := svc.Sync(context.Background()); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("Sync after a lost deferred record: err = %v, want Unavailable", err)
	}
	if st := svc.Stats(); st.LostDeferred != 1 {
		t.Fatalf("Stats.LostDeferred = %d, want 1", st.LostDeferred)
	}
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"deferred audit records lost`) || !strings.Contains(logs.String(), "lost-call") {
		t.Fatalf("the lost deferred record is not logged at ERROR with its call id; logs:\n%s", logs.String())
	}
	free()
	resp, err := appendRecord(svc, decision("after"))
	if err != nil || resp.GetSequence() != durable+1 {
		t.Fatalf("append once there is room = %v, %v; want sequence %d", resp, err, durable+1)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, err := auditsvc.Verify(svc.Path()); err != nil || n != durable+1 {
		t.Fatalf("Verify = %d, %v; want %d", n, err, durable+1)
	}
}

// Crash tests: the test binary re-executes itself as a child that opens the log, does what
// its mode says, reports "ready" on stdout and waits to be killed with SIGKILL.
const (
	crashModeEnv = "GATEHOUSE_AUDITSVC_CRASH_MODE"
	crashDirEnv  = "GATEHOUSE_AUDITSVC_CRASH_DIR"
)

func TestCrashWriteAhead(t *testing.T) {
	if mode := os.Getenv(crashModeEnv); mode != "" {
		crashChild(mode, os.Getenv(crashDirEnv))
		return
	}
	// Not parallel, with anything: a fork briefly holds a copy of every descriptor of this
	// process, the log's locked one included, so another test's reopening of its log could
	// find it still locked.
	tests := []struct {
		mode        string
		wantUnknown bool
	}{
		// Killed while the upstream holds the call: the decision is durable, no outcome.
		{"decision", true},
		// Killed after the deferred outcome was made durable (Sync): nothing to recover.
		{"deferred-outcome-synced", false},
		// Likewise, the deferred outcome made durable by a later durable append.
		{"deferred-outcome-then-durable", false},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, auditsvc.FileName)
			killed := runCrashChild(t, tt.mode, dir)
			before := records(t, path)
			if len(before) == 0 || before[0].GetCallId() != "crash-call" || before[0].GetPhase() != auditv1.Phase_PHASE_DECISION {
				t.Fatalf("child %s left %v; want its decision first", tt.mode, before)
			}
			open(t, dir, 0).Close(context.Background())
			got := unknowns(t, path)
			if tt.wantUnknown {
				if len(got) != 1 || got[0].GetCallId() != "crash-call" || got[0].GetPrincipal() != "principal-crash-call" {
					t.Fatalf("after %s: unknown outcomes %v; want exactly one for crash-call", killed, got)
				}
			} else if len(got) != 0 {
				t.Fatalf("after %s: unknown outcomes %v; want none", killed, got)
			}
			n, err := auditsvc.Verify(path)
			if err != nil || n != uint64(len(before)+len(got)) {
				t.Fatalf("Verify = %d, %v; want %d", n, err, len(before)+len(got))
			}
			open(t, dir, 0).Close(context.Background())
			if n2, err := auditsvc.Verify(path); err != nil || n2 != n {
				t.Fatalf("Verify after a second restart = %d, %v; want %d (nothing more added)", n2, err, n)
			}
		})
	}
}

// runCrashChild runs the child, waits for it to report ready, and kills it with SIGKILL.
func runCrashChild(t *testing.T, mode, dir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashWriteAhead$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashModeEnv+"="+mode, crashDirEnv+"="+dir)
	var stderr testsync.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child %s: read %q, %v; stderr:\n%s", mode, line, err, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child %s: %v, want killed by SIGKILL; stderr:\n%s", mode, err, stderr.String())
	}
	return "SIGKILL in mode " + mode
}

// crashChild is the child's side: it never returns normally.
func crashChild(mode, dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(3)
	}
	svc, err := auditsvc.New(auditsvc.Config{Dir: dir}, nil)
	if err != nil {
		fail(err)
	}
	if _, err := appendRecord(svc, decision("crash-call")); err != nil {
		fail(err)
	}
	switch mode {
	case "decision":
	case "deferred-outcome-synced":
		if _, err := appendDeferred(svc, outcome("crash-call", auditv1.Outcome_OUTCOME_ALLOWED)); err != nil {
			fail(err)
		}
		if err := svc.Sync(context.Background()); err != nil {
			fail(err)
		}
	case "deferred-outcome-then-durable":
		if _, err := appendDeferred(svc, outcome("crash-call", auditv1.Outcome_OUTCOME_ALLOWED)); err != nil {
			fail(err)
		}
		if _, err := appendRecord(svc, record(7)); err != nil {
			fail(err)
		}
	default:
		fail(fmt.Errorf("unknown mode %q", mode))
	}
	fmt.Println("ready")
	select {} // until SIGKILL
}

// TestRecoveryOnFullDisk: when the unknown outcomes cannot be written at start, the log
// refuses to open (the gateway does not start) rather than serve with decisions left open;
// once there is room, it opens and writes them.
func TestRecoveryOnFullDisk(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (CI runs as root); TestDiskFullFailsClosed covers the append path with the hook")
	}
	dir, free := smallDisk(t)
	svc, err := auditsvc.New(auditsvc.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var open int
	for ; ; open++ {
		if open == 1000 {
			t.Fatal("1000 decisions fit on the full disk")
		}
		if _, err := appendRecord(svc, decision(fmt.Sprint("call-", open))); err != nil {
			break
		}
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if svc, err := auditsvc.New(auditsvc.Config{Dir: dir}, nil); err == nil || !strings.Contains(err.Error(), "no space left on device") {
		if err == nil {
			_ = svc.Close(context.Background())
		}
		t.Fatalf("New with %d open decisions on a full disk: err = %v, want it to fail naming the full disk", open, err)
	}
	if n, err := auditsvc.Verify(filepath.Join(dir, auditsvc.FileName)); err != nil || n != uint64(open) {
		t.Fatalf("Verify after the refused start = %d, %v; want the %d decisions", n, err, open)
	}
	free()
	svc, err = auditsvc.New(auditsvc.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatalf("New once there is room: %v", err)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := unknowns(t, svc.Path()); len(got) != open {
		t.Fatalf("%d unknown outcomes, want one for each of the %d decisions", len(got), open)
	}
	if n, err := auditsvc.Verify(svc.Path()); err != nil || n != uint64(2*open) {
		t.Fatalf("Verify = %d, %v; want %d", n, err, 2*open)
	}
}
