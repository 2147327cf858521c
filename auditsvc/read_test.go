package auditsvc_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	"github.com/gatehouse-mcp/gatehouse/auditsvc/query"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var queryBase = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// knownRecords are n records whose fields cycle with different periods, so that every
// filter selects a different subset; record i is at queryBase + i seconds.
func knownRecords(n int) []*auditv1.Record {
	outcomes := []auditv1.Outcome{auditv1.Outcome_OUTCOME_ALLOWED, auditv1.Outcome_OUTCOME_DENIED, auditv1.Outcome_OUTCOME_FAILED}
	var out []*auditv1.Record
	for i := range n {
		out = append(out, &auditv1.Record{
			Time:      timestamppb.New(queryBase.Add(time.Duration(i) * time.Second)),
			TraceId:   fmt.Sprintf("trace-%d", i%7),
			SessionId: fmt.Sprintf("s-%d", i%3),
			Principal: []string{"alice", "bob"}[i%2],
			Tenant:    []string{"acme", "globex", "initech", "umbrella"}[i%4],
			Server:    []string{"files", "github", "echo", "db", "web"}[i%5],
			Method:    "tools/call",
			Tool:      fmt.Sprintf("tool-%d", i%6),
			CallId:    fmt.Sprintf("call-%d", i),
			Outcome:   outcomes[i%3],
			Decision:  auditv1.PolicyDecision_POLICY_DECISION_ALLOW,
			Input:     &auditv1.DecisionInput{Groups: []string{"staff"}, Kind: "user", SourceAddress: "127.0.0.1"},
		})
	}
	return out
}

// queryClient serves svc over HTTP, as the gateway does (in-process callers, no Guard).
func queryClient(t *testing.T, svc *auditsvc.Service) auditv1connect.AuditServiceClient {
	t.Helper()
	srv := httptest.NewServer(rpcserver.NewMux(svc.Handlers()...))
	t.Cleanup(srv.Close)
	return auditv1connect.NewAuditServiceClient(srv.Client(), srv.URL)
}

// queryAll pages through every record that matches f, pageSize at a time.
func queryAll(t *testing.T, c auditv1connect.AuditServiceClient, f *auditv1.Filter, pageSize uint32) ([]uint64, int) {
	t.Helper()
	var seqs []uint64
	pages := 0
	req := &auditv1.QueryRequest{Filter: f, PageSize: pageSize}
	for {
		resp, err := c.Query(context.Background(), connect.NewRequest(req))
		if err != nil {
			t.Fatalf("Query %v: %v", f, err)
		}
		pages++
		if uint32(len(resp.Msg.GetEntries())) > pageSize {
			t.Fatalf("page of %d entries, page size %d", len(resp.Msg.GetEntries()), pageSize)
		}
		for _, e := range resp.Msg.GetEntries() {
			seqs = append(seqs, e.GetSequence())
		}
		if resp.Msg.GetNextPageToken() == "" {
			return seqs, pages
		}
		req.PageToken = resp.Msg.GetNextPageToken()
	}
}

func TestQueryFilters(t *testing.T) {
	svc := open(t, t.TempDir(), 0)
	recs := knownRecords(60)
	for _, r := range recs {
		if _, err := appendRecord(svc, r); err != nil {
			t.Fatal(err)
		}
	}
	c := queryClient(t, svc)
	ts := func(i int) *timestamppb.Timestamp {
		return timestamppb.New(queryBase.Add(time.Duration(i) * time.Second))
	}
	cases := []struct {
		name   string
		filter *auditv1.Filter
		want   func(i int, r *auditv1.Record) bool
	}{
		{"none", nil, func(int, *auditv1.Record) bool { return true }},
		{"session", &auditv1.Filter{SessionId: "s-1"}, func(i int, _ *auditv1.Record) bool { return i%3 == 1 }},
		{"principal", &auditv1.Filter{Principal: "bob"}, func(i int, _ *auditv1.Record) bool { return i%2 == 1 }},
		{"tenant", &auditv1.Filter{Tenant: "initech"}, func(i int, _ *auditv1.Record) bool { return i%4 == 2 }},
		{"server", &auditv1.Filter{Server: "db"}, func(i int, _ *auditv1.Record) bool { return i%5 == 3 }},
		{"tool", &auditv1.Filter{Tool: "tool-5"}, func(i int, _ *auditv1.Record) bool { return i%6 == 5 }},
		{"outcome", &auditv1.Filter{Outcome: auditv1.Outcome_OUTCOME_DENIED}, func(i int, _ *auditv1.Record) bool { return i%3 == 1 }},
		{"trace", &auditv1.Filter{TraceId: "trace-4"}, func(i int, _ *auditv1.Record) bool { return i%7 == 4 }},
		{"call", &auditv1.Filter{CallId: "call-17"}, func(i int, _ *auditv1.Record) bool { return i == 17 }},
		{"since", &auditv1.Filter{Since: ts(50)}, func(i int, _ *auditv1.Record) bool { return i >= 50 }},
		{"until", &auditv1.Filter{Until: ts(5)}, func(i int, _ *auditv1.Record) bool { return i < 5 }},
		{"range", &auditv1.Filter{Since: ts(10), Until: ts(20)}, func(i int, _ *auditv1.Record) bool { return i >= 10 && i < 20 }},
		{"combined", &auditv1.Filter{Principal: "alice", Server: "files", Since: ts(1)}, func(i int, _ *auditv1.Record) bool { return i%2 == 0 && i%5 == 0 && i >= 1 }},
		{"no match", &auditv1.Filter{Tenant: "nobody"}, func(int, *auditv1.Record) bool { return false }},
		// A value that appears in another member must not match by substring.
		{"prefix is not a match", &auditv1.Filter{Tool: "tool"}, func(int, *auditv1.Record) bool { return false }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var want []uint64
			for i, r := range recs {
				if tc.want(i, r) {
					want = append(want, uint64(i+1))
				}
			}
			for _, size := range []uint32{0, 1, 7, 1000} {
				got, _ := queryAll(t, c, tc.filter, max(size, 1))
				if !slices.Equal(got, want) {
					t.Fatalf("page size %d: sequences %v, want %v", size, got, want)
				}
			}
			// The records come back as they were appended.
			resp, err := c.Query(context.Background(), connect.NewRequest(&auditv1.QueryRequest{Filter: tc.filter, PageSize: 1000}))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range resp.Msg.GetEntries() {
				got := proto.Clone(e.GetRecord()).(*auditv1.Record)
				got.RecordId = "" // the log's own id of the record, assigned on append
				if !proto.Equal(got, recs[e.GetSequence()-1]) {
					t.Fatalf("entry %d is %v, appended %v", e.GetSequence(), e.GetRecord(), recs[e.GetSequence()-1])
				}
			}
		})
	}
}

func TestQueryBounds(t *testing.T) {
	dir := t.TempDir()
	svc := open(t, dir, 0)
	for _, r := range knownRecords(30) {
		if _, err := appendRecord(svc, r); err != nil {
			t.Fatal(err)
		}
	}
	c := queryClient(t, svc)
	ctx := context.Background()
	q := func(req *auditv1.QueryRequest) (*auditv1.QueryResponse, error) {
		resp, err := c.Query(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	wantInvalid := func(what string, err error) {
		t.Helper()
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("%s: %v, want InvalidArgument", what, err)
		}
	}
	_, err := q(&auditv1.QueryRequest{PageSize: query.MaxPageSize + 1})
	wantInvalid("a page over the maximum", err)
	_, err = q(&auditv1.QueryRequest{Filter: &auditv1.Filter{Since: timestamppb.New(queryBase.Add(time.Hour)), Until: timestamppb.New(queryBase)}})
	wantInvalid("since after until", err)
	_, err = q(&auditv1.QueryRequest{Filter: &auditv1.Filter{Outcome: 99}})
	wantInvalid("an unknown outcome", err)

	first, err := q(&auditv1.QueryRequest{PageSize: 5})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, token %q", err, first.GetNextPageToken())
	}
	tok := first.GetNextPageToken()
	forged := []byte(tok)
	forged[10] ^= 1 // within the position
	if forged[10] == tok[10] {
		t.Fatal("no change")
	}
	for name, bad := range map[string]string{
		"a byte changed":   string(forged),
		"not base64":       "!!!" + tok,
		"cut short":        tok[:len(tok)/2],
		"oversized":        tok + string(make([]byte, 2048)),
		"empty base64 mac": "AQ",
	} {
		_, err := q(&auditv1.QueryRequest{PageSize: 5, PageToken: bad})
		wantInvalid("forged token: "+name, err)
	}
	// A token is good for its own filter only.
	_, err = q(&auditv1.QueryRequest{PageSize: 5, PageToken: tok, Filter: &auditv1.Filter{Principal: "alice"}})
	wantInvalid("a token of another filter", err)
	// Nor for another service (a restart).
	svc2 := open(t, t.TempDir(), 0)
	if _, err := queryClient(t, svc2).Query(ctx, connect.NewRequest(&auditv1.QueryRequest{PageSize: 5, PageToken: tok})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("another service's token: %v", err)
	}
	// The real token resumes where the page stopped.
	second, err := q(&auditv1.QueryRequest{PageSize: 5, PageToken: tok})
	if err != nil || len(second.GetEntries()) != 5 || second.GetEntries()[0].GetSequence() != 6 {
		t.Fatalf("second page: %v %v", second, err)
	}

	// The scan per request is bounded: a filter that matches nothing reads at most MaxScan
	// lines and returns an empty page with a token, until the end.
	e := query.NewEngine(query.NewReader(auditsvc.SegmentFiles(dir), nil))
	e.SetMaxScan(8)
	req := &auditv1.QueryRequest{Filter: &auditv1.Filter{Tenant: "nobody"}}
	pages := 0
	for {
		resp, err := e.Query(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if resp.GetScanned() > 8 || len(resp.GetEntries()) != 0 {
			t.Fatalf("page %d scanned %d lines, %d entries", pages, resp.GetScanned(), len(resp.GetEntries()))
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if pages != 4 { // 30 lines, 8 at a time
		t.Fatalf("%d pages, want 4", pages)
	}
}

// Tail delivers the records committed after it started, in order, and Query never sees more
// than the log has committed.
func TestTail(t *testing.T) {
	svc := open(t, t.TempDir(), 0)
	recs := knownRecords(10)
	for _, r := range recs[:3] {
		if _, err := appendRecord(svc, r); err != nil {
			t.Fatal(err)
		}
	}
	c := queryClient(t, svc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	var got []*auditv1.Entry
	tail := func(req *auditv1.TailRequest) chan error {
		done := make(chan error, 1)
		go func() {
			stream, err := c.Tail(ctx, connect.NewRequest(req))
			if err != nil {
				done <- err
				return
			}
			for stream.Receive() {
				mu.Lock()
				got = append(got, stream.Msg().GetEntries()...)
				mu.Unlock()
			}
			done <- stream.Err()
		}()
		return done
	}
	received := func() []*auditv1.Entry {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}

	// From now: probes are appended until the first arrives (the tail has started); from
	// then on it gets every record, in order, and none from before it started.
	done := tail(&auditv1.TailRequest{Filter: &auditv1.Filter{Server: "files"}})
	probe := proto.CloneOf(recs[0])
	testsync.WaitFor(t, 10*time.Second, "the tail's first record", func() bool {
		if _, err := appendRecord(svc, probe); err != nil {
			t.Fatal(err)
		}
		return len(received()) > 0
	})
	after := proto.CloneOf(recs[5])
	after.Server, after.CallId = "files", "after-the-start"
	other := proto.CloneOf(recs[5])
	other.Server, other.CallId = "github", "filtered-out"
	if _, err := appendRecord(svc, other); err != nil {
		t.Fatal(err)
	}
	resp, err := appendRecord(svc, after)
	if err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 10*time.Second, "the record appended after the start", func() bool {
		g := received()
		return len(g) > 0 && g[len(g)-1].GetSequence() == resp.GetSequence()
	})
	g := received()
	for i, e := range g {
		if e.GetSequence() <= 3 {
			t.Fatalf("the tail sent record %d, committed before it started", e.GetSequence())
		}
		if i > 0 && e.GetSequence() != g[i-1].GetSequence()+1 && e.GetRecord().GetCallId() != "after-the-start" {
			t.Fatalf("the tail skipped from %d to %d", g[i-1].GetSequence(), e.GetSequence())
		}
		if e.GetRecord().GetServer() != "files" {
			t.Fatalf("the tail sent a record of %s", e.GetRecord().GetServer())
		}
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) && connect.CodeOf(err) != connect.CodeCanceled {
		t.Fatalf("tail ended with %v", err)
	}

	// From a sequence: the committed records from it first, then the new ones.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	mu.Lock()
	got = nil
	mu.Unlock()
	done = tail(&auditv1.TailRequest{FromSequence: 2})
	last, err := appendRecord(svc, recs[9])
	if err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 10*time.Second, "records 2 to the last", func() bool {
		g := received()
		return len(g) > 0 && g[len(g)-1].GetSequence() == last.GetSequence()
	})
	for i, e := range received() {
		if e.GetSequence() != uint64(i+2) {
			t.Fatalf("entry %d has sequence %d, want %d", i, e.GetSequence(), i+2)
		}
	}
	// Closing the service ends the stream.
	svc.EndTails()
	if err := <-done; err != nil {
		t.Fatalf("tail ended with %v on close, want a clean end", err)
	}
}

// Query and Tail are admin RPCs: an operator's own credential, decided by Cedar
// (admin/audit.read); the internal token alone is not enough.
func TestQueryGuarded(t *testing.T) {
	var asked sync.Map
	svc, err := auditsvc.New(auditsvc.Config{Dir: t.TempDir(), Authorize: func(_ context.Context, p *authv1.Principal, action, tenant string) error {
		asked.Store(action, tenant)
		if p.GetId() != "operator" || action != auditsvc.ActionRead || tenant != "" {
			return fmt.Errorf("%s may not %s", p.GetId(), action)
		}
		return nil
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	authn := func(_ context.Context, cred string) (*authv1.Principal, error) {
		switch cred {
		case "operator-token":
			return &authv1.Principal{Id: "operator", Tenant: "ops"}, nil
		case "user-token":
			return &authv1.Principal{Id: "user", Tenant: "acme"}, nil
		}
		return nil, errors.New("unknown")
	}
	open := map[string]bool{auditv1connect.AuditServiceQueryProcedure: true, auditv1connect.AuditServiceTailProcedure: true}
	srv := httptest.NewServer(rpcserver.Guard("internal-secret", authn, open, rpcserver.NewMux(svc.Handlers()...)))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name   string
		header [2]string
		want   connect.Code
	}{
		{"operator", [2]string{"Authorization", "Bearer operator-token"}, 0},
		{"another principal", [2]string{"Authorization", "Bearer user-token"}, connect.CodePermissionDenied},
		{"internal token alone", [2]string{rpcserver.InternalTokenHeader, "internal-secret"}, connect.CodePermissionDenied},
		{"nothing", [2]string{"X-None", "x"}, connect.CodeUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := auditv1connect.NewAuditServiceClient(srv.Client(), srv.URL)
			req := connect.NewRequest(&auditv1.QueryRequest{})
			req.Header().Set(tc.header[0], tc.header[1])
			_, err := c.Query(context.Background(), req)
			if connect.CodeOf(err) != tc.want && !(tc.want == 0 && err == nil) {
				t.Fatalf("Query: %v, want %v", err, tc.want)
			}
			if tc.want == 0 {
				return // a tail answers with its first record (TestTail)
			}
			treq := connect.NewRequest(&auditv1.TailRequest{})
			treq.Header().Set(tc.header[0], tc.header[1])
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stream, err := c.Tail(ctx, treq)
			if err == nil {
				stream.Receive()
				err = stream.Err()
			}
			if connect.CodeOf(err) != tc.want {
				t.Fatalf("Tail: %v, want %v", err, tc.want)
			}
		})
	}
	if _, ok := asked.Load(auditsvc.ActionRead); !ok {
		t.Fatal("policy was never asked about admin/audit.read")
	}
}

// TestForgedSegmentIgnored: a file named like a segment but not one (audit-0.log) is not read
// in place of the log by Query, and Verify reports it.
func TestForgedSegmentIgnored(t *testing.T) {
	dir := t.TempDir()
	svc := open(t, dir, 0)
	for _, r := range knownRecords(5) {
		if _, err := appendRecord(svc, r); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, auditsvc.FileName))
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.ReplaceAll(string(b), `"tenant":"acme"`, `"tenant":"forged"`)
	if err := os.WriteFile(filepath.Join(dir, "audit-0.log"), []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	c := queryClient(t, svc)
	if got, _ := queryAll(t, c, &auditv1.Filter{Tenant: "forged"}, 100); len(got) != 0 {
		t.Fatalf("Query read the forged file: %v", got)
	}
	if got, _ := queryAll(t, c, &auditv1.Filter{Tenant: "acme"}, 100); !slices.Equal(got, []uint64{1, 5}) {
		t.Fatalf("Query for the real tenant: %v, want [1 5]", got)
	}
	resp, err := auditsvc.VerifyDir(context.Background(), dir, auditsvc.VerifyOptions{Live: true})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, p := range resp.GetProblems() {
		kinds = append(kinds, p.GetKind()+":"+p.GetSegment())
	}
	if !slices.Equal(kinds, []string{auditsvc.KindUnexpectedFile + ":audit-0.log"}) {
		t.Fatalf("problems %v; want the forged file reported", kinds)
	}
}
