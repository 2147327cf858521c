package auditsvc_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func open(t *testing.T, dir string, maxBatch int) *auditsvc.Service {
	t.Helper()
	svc, err := auditsvc.New(auditsvc.Config{Dir: dir, MaxBatch: maxBatch}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

func record(i int) *auditv1.Record {
	return &auditv1.Record{
		Time:            timestamppb.New(time.Unix(1_700_000_000, int64(i))),
		TraceId:         fmt.Sprintf("trace-%d", i),
		SessionId:       "s1",
		Principal:       "alice",
		Tenant:          "acme",
		Server:          "files",
		Method:          "tools/call",
		Tool:            "read",
		ArgumentsDigest: strings.Repeat("ab", 32),
		BundleVersion:   "sha256:00",
		PolicyIds:       []string{"tenant-tools"},
		Outcome:         auditv1.Outcome_OUTCOME_ALLOWED,
		Latency:         durationpb.New(time.Millisecond),
	}
}

func appendRecord(svc *auditsvc.Service, rec *auditv1.Record) (*auditv1.AppendResponse, error) {
	resp, err := svc.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{Record: rec}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// line is one line of the log, as an operator's tool would read it.
type line struct {
	Seq    uint64          `json:"seq"`
	Prev   string          `json:"prev"`
	Record json.RawMessage `json:"record"`
	Hash   string          `json:"hash"`
}

func readLines(t *testing.T, path string) []line {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []line
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", len(out)+1, err, sc.Bytes())
		}
		out = append(out, l)
	}
	return out
}

func TestConcurrentAppends(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                 string
		maxBatch, n, writers int
	}{
		{"default batch", 256, 500, 50},
		{"small batches", 3, 120, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			svc := open(t, dir, tt.maxBatch)
			var mu sync.Mutex
			hashes := make(map[uint64]string)
			var wg sync.WaitGroup
			errs := make(chan error, tt.n)
			for w := range tt.writers {
				wg.Go(func() {
					for i := w; i < tt.n; i += tt.writers {
						resp, err := appendRecord(svc, record(i))
						if err != nil {
							errs <- err
							return
						}
						mu.Lock()
						if _, dup := hashes[resp.GetSequence()]; dup {
							errs <- fmt.Errorf("sequence %d acknowledged twice", resp.GetSequence())
						}
						hashes[resp.GetSequence()] = resp.GetHash()
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if err := svc.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			for seq := uint64(1); seq <= uint64(tt.n); seq++ {
				if _, ok := hashes[seq]; !ok {
					t.Fatalf("sequence %d never acknowledged", seq)
				}
			}
			lines := readLines(t, svc.Path())
			if len(lines) != tt.n {
				t.Fatalf("%d lines, want %d", len(lines), tt.n)
			}
			traces := make(map[string]bool)
			for i, l := range lines {
				if l.Seq != uint64(i+1) || hashes[l.Seq] != l.Hash {
					t.Fatalf("line %d: seq %d hash %s; acknowledged %s", i+1, l.Seq, l.Hash, hashes[l.Seq])
				}
				var rec auditv1.Record
				if err := protojson.Unmarshal(l.Record, &rec); err != nil {
					t.Fatalf("line %d record: %v", i+1, err)
				}
				traces[rec.GetTraceId()] = true
			}
			if len(traces) != tt.n {
				t.Fatalf("%d distinct records, want %d", len(traces), tt.n)
			}
			n, err := auditsvc.Verify(svc.Path())
			if err != nil || n != uint64(tt.n) {
				t.Fatalf("Verify = %d, %v; want %d", n, err, tt.n)
			}
		})
	}
}

func TestReopenContinuesChain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	svc := open(t, dir, 0)
	var last string
	for i := range 3 {
		resp, err := appendRecord(svc, record(i))
		if err != nil {
			t.Fatal(err)
		}
		last = resp.GetHash()
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	svc = open(t, dir, 0)
	for i := 3; i < 5; i++ {
		resp, err := appendRecord(svc, record(i))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetSequence() != uint64(i+1) {
			t.Fatalf("sequence %d after reopening, want %d", resp.GetSequence(), i+1)
		}
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, filepath.Join(dir, auditsvc.FileName))
	if lines[3].Prev != last {
		t.Fatalf("record 4 prev %s, want record 3's hash %s", lines[3].Prev, last)
	}
	if n, err := auditsvc.Verify(filepath.Join(dir, auditsvc.FileName)); err != nil || n != 5 {
		t.Fatalf("Verify = %d, %v; want 5", n, err)
	}
}

func TestTornTailRecovered(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, auditsvc.FileName)
	svc := open(t, dir, 0)
	for i := range 3 {
		if _, err := appendRecord(svc, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of writing record 4.
	torn := append(append([]byte(nil), good...), `{"seq":4,"prev":"`+strings.Repeat("0", 20)...)
	if err := os.WriteFile(path, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := auditsvc.Verify(path); err == nil || n != 3 || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("Verify of a torn log = %d, %v; want 3 and an incomplete-line error", n, err)
	}
	var logs testsync.Buffer
	svc, err = auditsvc.New(auditsvc.Config{Dir: dir}, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("New on a torn log: %v", err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), "incomplete line") {
		t.Errorf("no warning about the torn line; logs:\n%s", logs.String())
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, good) {
		t.Fatalf("torn tail not cut away exactly: %d bytes, want %d", len(b), len(good))
	}
	resp, err := appendRecord(svc, record(3))
	if err != nil || resp.GetSequence() != 4 {
		t.Fatalf("append after recovery = %v, %v; want sequence 4", resp, err)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, err := auditsvc.Verify(path); err != nil || n != 4 {
		t.Fatalf("Verify = %d, %v; want 4", n, err)
	}
}

func TestTamperingDetected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		tamper  func(lines []string) []string
		wantSeq uint64
	}{
		{"record edited", func(l []string) []string {
			l[2] = strings.Replace(l[2], `"tenant":"acme"`, `"tenant":"evil"`, 1)
			return l
		}, 3},
		{"whitespace added inside record", func(l []string) []string {
			l[2] = strings.Replace(l[2], `"tenant":"acme"`, `"tenant": "acme"`, 1)
			return l
		}, 3},
		{"hash rewritten", func(l []string) []string {
			i := strings.LastIndex(l[2], `"hash":"`) + len(`"hash":"`)
			l[2] = l[2][:i] + strings.Repeat("f", 64) + l[2][i+64:]
			return l
		}, 3},
		{"record deleted", func(l []string) []string { return append(l[:2], l[3:]...) }, 3},
		{"records swapped", func(l []string) []string { l[1], l[2] = l[2], l[1]; return l }, 2},
		{"garbage line", func(l []string) []string { l[2] = "not json"; return l }, 3},
		{"outcome edited", func(l []string) []string {
			l[2] = strings.Replace(l[2], `"outcome":"OUTCOME_ALLOWED"`, `"outcome":"OUTCOME_DENIED"`, 1)
			return l
		}, 3},
		// An editor who recomputes the edited record's hash breaks the next record's link.
		{"record edited and rehashed", func(l []string) []string {
			l[2] = rehash(strings.Replace(l[2], `"tenant":"acme"`, `"tenant":"evil"`, 1))
			return l
		}, 4},
		{"first record edited", func(l []string) []string {
			l[0] = strings.Replace(l[0], `"principal":"alice"`, `"principal":"bob"`, 1)
			return l
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, auditsvc.FileName)
			svc := open(t, dir, 0)
			for i := range 5 {
				if _, err := appendRecord(svc, record(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := svc.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lines := tt.tamper(strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"))
			if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			n, err := auditsvc.Verify(path)
			var ce *auditsvc.ChainError
			if !errors.As(err, &ce) || ce.Seq != tt.wantSeq || n != tt.wantSeq-1 {
				t.Fatalf("Verify = %d, %v; want a chain error at sequence %d", n, err, tt.wantSeq)
			}
			// The gateway still starts: the damaged segment is kept as it is, and the log
			// continues in a new segment whose first record, chained to the last record that
			// verified, says what broke.
			var logs testsync.Buffer
			svc, err = auditsvc.New(auditsvc.Config{Dir: dir}, slog.New(slog.NewJSONHandler(&logs, nil)))
			if err != nil {
				t.Fatalf("New on a damaged log: %v", err)
			}
			if _, err := appendRecord(svc, record(9)); err != nil {
				t.Fatal(err)
			}
			if st := svc.Stats(); st.Breaks != 1 {
				t.Fatalf("Stats.Breaks = %d, want 1", st.Breaks)
			}
			if err := svc.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), `"level":"ERROR","msg":"audit log damaged`) {
				t.Fatalf("no ERROR naming the damage; logs:\n%s", logs.String())
			}
			if filepath.Base(svc.Path()) != "audit-00000001.log" {
				t.Fatalf("appending to %s, want a new segment", svc.Path())
			}
			resp, err := auditsvc.VerifyDir(context.Background(), dir, auditsvc.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ps := resp.GetProblems()
			if len(ps) != 3 || ps[0].GetKind() != auditsvc.KindBroken || ps[0].GetSequence() != tt.wantSeq || ps[0].GetSegment() != auditsvc.FileName ||
				ps[0].GetLine() != tt.wantSeq || ps[1].GetKind() != auditsvc.KindContinuation || ps[1].GetSegment() != "audit-00000001.log" ||
				ps[1].GetSequence() != tt.wantSeq || ps[2].GetKind() != auditsvc.KindRecoveredBreak || !strings.Contains(ps[2].GetReason(), fmt.Sprintf("sequence %d", tt.wantSeq)) {
				t.Fatalf("VerifyDir problems = %v; want the break at sequence %d, the continuation and the recorded break", ps, tt.wantSeq)
			}
			// The continuation holds the break record and the record appended after it.
			if resp.GetRecords() != tt.wantSeq-1+2 {
				t.Fatalf("VerifyDir verified %d records, want %d", resp.GetRecords(), tt.wantSeq+1)
			}
		})
	}
}

// rehash recomputes a line's hash after its body was edited, as the log's writer would:
// hex(SHA-256(prev || line without its hash member)).
func rehash(line string) string {
	i := strings.LastIndex(line, `,"hash":"`)
	prev := line[strings.Index(line, `"prev":"`)+len(`"prev":"`):][:64]
	sum := sha256.Sum256([]byte(prev + line[:i] + "}"))
	return line[:i] + `,"hash":"` + hex.EncodeToString(sum[:]) + `"}`
}

func TestAppendRejectsInvalid(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	svc := open(t, dir, 0)
	with := func(f func(*auditv1.Record)) *auditv1.Record {
		r := record(0)
		f(r)
		return r
	}
	tests := []struct {
		name string
		rec  *auditv1.Record
	}{
		{"no record", nil},
		{"no outcome", with(func(r *auditv1.Record) { r.Outcome = auditv1.Outcome_OUTCOME_UNSPECIFIED })},
		{"unknown outcome", with(func(r *auditv1.Record) { r.Outcome = 42 })},
		{"no server", with(func(r *auditv1.Record) { r.Server = "" })},
		{"no method", with(func(r *auditv1.Record) { r.Method = "" })},
		{"oversized call id", with(func(r *auditv1.Record) { r.CallId = strings.Repeat("c", 129) })},
		{"invalid time", with(func(r *auditv1.Record) { r.Time = &timestamppb.Timestamp{Seconds: -1 << 60} })},
		{"negative latency", with(func(r *auditv1.Record) { r.Latency = durationpb.New(-time.Second) })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := appendRecord(svc, tt.rec)
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
		})
	}
	if n, err := auditsvc.Verify(svc.Path()); err != nil || n != 0 {
		t.Fatalf("Verify = %d, %v; want an empty log", n, err)
	}
}

func TestAppendSetsTime(t *testing.T) {
	t.Parallel()
	svc := open(t, t.TempDir(), 0)
	rec := record(0)
	rec.Time = nil
	before := time.Now()
	if _, err := appendRecord(svc, rec); err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got auditv1.Record
	if err := protojson.Unmarshal(readLines(t, svc.Path())[0].Record, &got); err != nil {
		t.Fatal(err)
	}
	if got.GetTime() == nil || got.GetTime().AsTime().Before(before.Add(-time.Second)) {
		t.Fatalf("time = %v, want about %v", got.GetTime(), before)
	}
}

func TestAppendAfterClose(t *testing.T) {
	t.Parallel()
	svc := open(t, t.TempDir(), 0)
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := appendRecord(svc, record(0)); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSecondInstanceRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open(t, dir, 0)
	if svc, err := auditsvc.New(auditsvc.Config{Dir: dir}, nil); err == nil {
		_ = svc.Close(context.Background())
		t.Fatal("a second service opened the same log")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]auditsvc.Config{
		"no dir":                     {},
		"dir is a file":              {Dir: file},
		"huge max batch":             {Dir: t.TempDir(), MaxBatch: 1 << 30},
		"queue below a batch":        {Dir: t.TempDir(), MaxBatch: 8, MaxQueue: 4},
		"queue bytes below a record": {Dir: t.TempDir(), MaxQueueBytes: 1000},
		"huge commit delay":          {Dir: t.TempDir(), CommitDelay: time.Second},
	} {
		if svc, err := auditsvc.New(cfg, nil); err == nil {
			_ = svc.Close(context.Background())
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// TestAppendOverConnect serves the handler and appends as a remote caller would.
func TestAppendOverConnect(t *testing.T) {
	t.Parallel()
	svc := open(t, t.TempDir(), 0)
	srv := httptest.NewServer(rpcserver.NewMux(svc.Handlers()...))
	t.Cleanup(srv.Close)
	client := auditv1connect.NewAuditServiceClient(srv.Client(), srv.URL)
	resp, err := client.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{Record: record(0)}))
	if err != nil || resp.Msg.GetSequence() != 1 || len(resp.Msg.GetHash()) != 64 {
		t.Fatalf("Append = %v, %v", resp, err)
	}
	_, err = client.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("empty request: err = %v, want InvalidArgument", err)
	}
}
