package auditsvc

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"google.golang.org/protobuf/encoding/protojson"
)

// blockingFile holds the writer inside its first Write until release is closed.
type blockingFile struct {
	logFile
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (f *blockingFile) Write(p []byte) (int, error) {
	f.once.Do(func() {
		close(f.entered)
		<-f.release
	})
	return f.logFile.Write(p)
}

func appendReq(s *Service, ctx context.Context, rec *auditv1.Record, deferred bool) error {
	_, err := s.Append(ctx, connect.NewRequest(&auditv1.AppendRequest{Record: rec, Deferred: deferred}))
	return err
}

// bigRecord is a valid record of about 37 KB.
func bigRecord() *auditv1.Record {
	r := testRecord()
	r.Tool = strings.Repeat("t", maxToolBytes)
	for range maxPolicyIDs {
		r.PolicyIds = append(r.PolicyIds, strings.Repeat("p", maxIDBytes))
	}
	return r
}

// TestQueueBackpressure: while the writer is stalled the queue fills to its bound in records
// or in bytes and no further; an append that finds it full waits for room until its context
// ends (and is then refused, not queued), and every append that was accepted is committed
// once the writer moves again.
func TestQueueBackpressure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		rec  func() *auditv1.Record
	}{
		{"records", Config{MaxBatch: 1, MaxQueue: 2}, testRecord},
		{"bytes", Config{MaxBatch: 1, MaxQueue: 100, MaxQueueBytes: maxRecordBytes}, bigRecord},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg
			cfg.Dir = t.TempDir()
			s, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close(context.Background()) })
			f := &blockingFile{logFile: s.log.f, entered: make(chan struct{}), release: make(chan struct{})}
			s.log.f = f
			var releaseOnce sync.Once
			release := func() { releaseOnce.Do(func() { close(f.release) }) }
			t.Cleanup(release) // before Close (cleanups run last first), even on failure
			if err := appendReq(s, context.Background(), tt.rec(), true); err != nil {
				t.Fatal(err)
			}
			<-f.entered // the first record is in the stalled commit
			accepted := 1
			cancelled, cancel := context.WithCancel(context.Background())
			cancel()
			for {
				err := appendReq(s, cancelled, tt.rec(), true)
				if err != nil {
					if connect.CodeOf(err) != connect.CodeCanceled {
						t.Fatalf("append to a full queue: err = %v, want Canceled", err)
					}
					break
				}
				if accepted++; accepted > 100 {
					t.Fatal("the queue takes more than 100 records")
				}
			}
			st := s.Stats()
			if st.Queued != accepted || st.Queued > cfg.MaxQueue || (cfg.MaxQueueBytes > 0 && st.QueuedBytes > cfg.MaxQueueBytes) {
				t.Fatalf("Stats = %+v with %d accepted; bounds %d records, %d bytes", st, accepted, cfg.MaxQueue, cfg.MaxQueueBytes)
			}
			if tt.name == "records" && accepted != cfg.MaxQueue {
				t.Fatalf("%d records accepted, want the bound %d", accepted, cfg.MaxQueue)
			}
			waiting := make(chan error, 1)
			go func() { waiting <- appendReq(s, context.Background(), tt.rec(), true) }()
			release()
			if err := <-waiting; err != nil {
				t.Fatalf("append waiting for room: %v", err)
			}
			accepted++
			if err := s.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n, err := Verify(s.Path()); err != nil || n != uint64(accepted) {
				t.Fatalf("Verify = %d, %v; want every one of the %d accepted records", n, err, accepted)
			}
		})
	}
}

func callRecord(id string, phase auditv1.Phase, o auditv1.Outcome) *auditv1.Record {
	r := testRecord()
	r.CallId, r.Phase, r.Outcome, r.Principal = id, phase, o, "alice"
	return r
}

// TestLostDeferredOutcomeRecovered: an outcome acknowledged as queued and then lost with a
// failed fsync is logged and counted; the restart gives its decision an unknown outcome.
func TestLostDeferredOutcomeRecovered(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var logs testsync.Buffer
	s, err := New(Config{Dir: dir}, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := appendReq(s, context.Background(), callRecord("c1", auditv1.Phase_PHASE_DECISION, 0), false); err != nil {
		t.Fatal(err)
	}
	f := &faultyFile{logFile: s.log.f}
	s.log.f = f
	f.failSync.Store(true)
	if err := appendReq(s, context.Background(), callRecord("c1", auditv1.Phase_PHASE_OUTCOME, auditv1.Outcome_OUTCOME_ALLOWED), true); err != nil {
		t.Fatalf("deferred append: %v", err)
	}
	if err := s.Sync(context.Background()); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("Sync = %v, want Unavailable", err)
	}
	if got := s.Stats().LostDeferred; got != 1 {
		t.Fatalf("LostDeferred = %d, want 1", got)
	}
	// The log is broken now: a deferred append is refused at once, not queued to be lost.
	if err := appendReq(s, context.Background(), callRecord("c2", auditv1.Phase_PHASE_OUTCOME, auditv1.Outcome_OUTCOME_ALLOWED), true); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("deferred append to a broken log: err = %v, want Unavailable", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `"call_ids":["c1"]`) {
		t.Errorf("the lost record's call id is not logged:\n%s", logs.String())
	}
	s, err = New(Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got openCallsProbe
	if _, _, err := scanFile(t, s.Path(), &got); err != nil {
		t.Fatal(err)
	}
	if want := []string{"DECISION c1", "OUTCOME c1 OUTCOME_UNKNOWN"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("log holds %v, want %v", got, want)
	}
}

// TestRecoveryCap: past maxOpenCalls, decisions are counted and reported, not tracked.
func TestRecoveryCap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := New(Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if err := appendReq(s, context.Background(), callRecord(id, auditv1.Phase_PHASE_DECISION, 0), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	l, err := openLog(filepath.Dir(s.Path()), limits{maxBatch: 1, maxQueue: 1, maxQueueBytes: maxRecordBytes, maxOpenCalls: 2, now: time.Now},
		slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l.start()
	if err := l.close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got openCallsProbe
	if _, _, err := scanFile(t, s.Path(), &got); err != nil {
		t.Fatal(err)
	}
	want := []string{"DECISION a", "DECISION b", "DECISION c", "OUTCOME a OUTCOME_UNKNOWN", "OUTCOME b OUTCOME_UNKNOWN"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("log holds %v, want %v", got, want)
	}
	if !strings.Contains(logs.String(), `"level":"ERROR"`) || !strings.Contains(logs.String(), `"untracked":1`) || !strings.Contains(logs.String(), `"first_untracked_sequence":3`) {
		t.Fatalf("the untracked decision is not reported:\n%s", logs.String())
	}
}

// openCallsProbe lists the phase, call id and outcome of each record with a call id.
type openCallsProbe []string

func scanFile(t *testing.T, path string, probe *openCallsProbe) (chainState, int64, error) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return scan(bytes.NewReader(b), func(seq uint64, _ int64, record []byte) error {
		var r auditv1.Record
		if err := protojson.Unmarshal(record, &r); err != nil {
			return err
		}
		if r.GetCallId() == "" {
			return nil
		}
		s := strings.TrimPrefix(r.GetPhase().String(), "PHASE_") + " " + r.GetCallId()
		if r.GetOutcome() != 0 {
			s += " " + r.GetOutcome().String()
		}
		*probe = append(*probe, s)
		return nil
	})
}

// TestCallID: recovery reads back every call id as marshalRecord stored it.
func TestCallID(t *testing.T) {
	t.Parallel()
	for _, id := range []string{
		"0123456789abcdef0123456789abcdef",
		`with "quotes" and \backslashes\`,
		"control\x01\nchars",
		"ünïcode ✓",
		`ends with a backslash\`,
		"", // a complete record without a call id
	} {
		rec, err := marshalRecord("", callRecord(id, auditv1.Phase_PHASE_COMPLETE, auditv1.Outcome_OUTCOME_ALLOWED))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := callID(rec); err != nil || got != id {
			t.Errorf("callID(%s) = %q, %v; want %q", rec, got, err, id)
		}
	}
}

// TestLingerEndsForWaiter: deferred records waiting for company are committed at once when an
// append is waiting for room, however long the commit delay.
func TestLingerEndsForWaiter(t *testing.T) {
	t.Parallel()
	l, err := openLog(t.TempDir(), limits{
		maxBatch: 256, maxQueue: 1024, maxQueueBytes: maxRecordBytes, maxOpenCalls: maxOpenCalls,
		commitDelay: time.Hour, now: time.Now,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	l.start()
	t.Cleanup(func() { _ = l.close(context.Background()) })
	s := &Service{store: l, log: l, logger: slog.New(slog.DiscardHandler), now: time.Now}
	if err := appendReq(s, context.Background(), bigRecord(), true); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := appendReq(s, ctx, bigRecord(), true); err != nil {
		t.Fatalf("append waiting for room behind a lingering writer: %v", err)
	}
	if got := l.commits.Load(); got != 1 {
		t.Fatalf("%d commits, want the lingering record's", got)
	}
}
