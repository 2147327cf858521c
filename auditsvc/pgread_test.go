package auditsvc_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
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
	"github.com/gatehouse-mcp/gatehouse/internal/pgtest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestPostgresQueryFilters is TestQueryFilters over the postgres store, the records appended
// by two replicas in turn, the filter columns then dropped (a table of before them) and
// added back by a third replica, which is queried: every filter returns exactly the records
// it selects, in order, at every page size, as they were appended. Columns left NULL or
// edited change nothing: the columns find candidates, the records decide.
func TestPostgresQueryFilters(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	a, b := openPostgres(t, dsn, 16), openPostgres(t, dsn, 16)
	recs := knownRecords(60)
	for i, r := range recs {
		svc := a
		if i%2 == 1 {
			svc = b
		}
		if resp, err := appendRecord(svc, r); err != nil || resp.GetSequence() != uint64(i+1) {
			t.Fatalf("append %d: %v, %v", i, resp, err)
		}
	}
	// A table from before the filter columns: a replica opening it adds them and fills in
	// session_id and trace_id from the lines (the indexed ones); the others stay NULL.
	pgExec(t, dsn, `ALTER TABLE gatehouse_audit_records DROP COLUMN session_id, DROP COLUMN principal, DROP COLUMN tenant, DROP COLUMN server, `+
		`DROP COLUMN tool, DROP COLUMN trace_id, DROP COLUMN call_id, DROP COLUMN outcome, DROP COLUMN rec_time`)
	c := queryClient(t, openPostgres(t, dsn, 16))
	// And edited columns: they find candidates, the records decide.
	pgExec(t, dsn, `UPDATE gatehouse_audit_records SET tool = 'tool-5', principal = 'bob', trace_id = 'trace-4', session_id = 's-1' WHERE seq = 1`)
	ts := func(i int) *timestamppb.Timestamp {
		return timestamppb.New(queryBase.Add(time.Duration(i) * time.Second))
	}
	cases := []struct {
		name   string
		filter *auditv1.Filter
		want   func(i int) bool
	}{
		{"none", nil, func(int) bool { return true }},
		{"session", &auditv1.Filter{SessionId: "s-1"}, func(i int) bool { return i%3 == 1 }},
		{"principal", &auditv1.Filter{Principal: "bob"}, func(i int) bool { return i%2 == 1 }},
		{"tenant", &auditv1.Filter{Tenant: "initech"}, func(i int) bool { return i%4 == 2 }},
		{"server", &auditv1.Filter{Server: "db"}, func(i int) bool { return i%5 == 3 }},
		{"tool", &auditv1.Filter{Tool: "tool-5"}, func(i int) bool { return i%6 == 5 }},
		{"outcome", &auditv1.Filter{Outcome: auditv1.Outcome_OUTCOME_DENIED}, func(i int) bool { return i%3 == 1 }},
		{"trace", &auditv1.Filter{TraceId: "trace-4"}, func(i int) bool { return i%7 == 4 }},
		{"call", &auditv1.Filter{CallId: "call-17"}, func(i int) bool { return i == 17 }},
		{"since", &auditv1.Filter{Since: ts(50)}, func(i int) bool { return i >= 50 }},
		{"until", &auditv1.Filter{Until: ts(5)}, func(i int) bool { return i < 5 }},
		{"range", &auditv1.Filter{Since: ts(10), Until: ts(20)}, func(i int) bool { return i >= 10 && i < 20 }},
		{"combined", &auditv1.Filter{Principal: "alice", Server: "files", Since: ts(1)}, func(i int) bool { return i%2 == 0 && i%5 == 0 && i >= 1 }},
		{"no match", &auditv1.Filter{Tenant: "nobody"}, func(int) bool { return false }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want []uint64
			for i := range recs {
				if tc.want(i) {
					want = append(want, uint64(i+1))
				}
			}
			for _, size := range []uint32{1, 7, 1000} {
				if got, _ := queryAll(t, c, tc.filter, size); !slices.Equal(got, want) {
					t.Fatalf("page size %d: sequences %v, want %v", size, got, want)
				}
			}
			resp, err := c.Query(context.Background(), connect.NewRequest(&auditv1.QueryRequest{Filter: tc.filter, PageSize: 1000}))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range resp.Msg.GetEntries() {
				got := proto.CloneOf(e.GetRecord())
				got.RecordId = ""
				if !proto.Equal(got, recs[e.GetSequence()-1]) {
					t.Fatalf("entry %d is %v, appended %v", e.GetSequence(), e.GetRecord(), recs[e.GetSequence()-1])
				}
			}
		})
	}

	// Bounds: the page size, and a token is the replica's own and its filter's.
	if _, err := c.Query(context.Background(), connect.NewRequest(&auditv1.QueryRequest{PageSize: query.MaxPageSize + 1})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("page size above the maximum: %v, want InvalidArgument", err)
	}
	first, err := c.Query(context.Background(), connect.NewRequest(&auditv1.QueryRequest{Filter: &auditv1.Filter{Principal: "alice"}, PageSize: 2}))
	if err != nil || first.Msg.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, %v", first, err)
	}
	for name, q := range map[string]struct {
		c auditv1connectClient
		f *auditv1.Filter
	}{
		"another replica's": {queryClient(t, b), &auditv1.Filter{Principal: "alice"}},
		"another filter's":  {c, &auditv1.Filter{Principal: "bob"}},
	} {
		_, err := q.c.Query(context.Background(), connect.NewRequest(&auditv1.QueryRequest{Filter: q.f, PageSize: 2, PageToken: first.Msg.GetNextPageToken()}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("%s token: %v, want InvalidArgument", name, err)
		}
	}
}

type auditv1connectClient interface {
	Query(context.Context, *connect.Request[auditv1.QueryRequest]) (*connect.Response[auditv1.QueryResponse], error)
}

// TestPostgresQueryManyPages: more records than one statement reads (1000) come back whole and
// in order, pages spanning statements, whether found by the session's index or not.
func TestPostgresQueryManyPages(t *testing.T) {
	pg := pgtest.Start(t)
	svc := openPostgres(t, pg.CreateDatabase(t), 256)
	fill(t, svc, 2345)
	c := queryClient(t, svc)
	for _, q := range []struct {
		f    *auditv1.Filter
		size uint32
	}{{nil, 1000}, {nil, 333}, {&auditv1.Filter{SessionId: "s1"}, 1000}, {&auditv1.Filter{SessionId: "s1", Tool: "read"}, 777}} {
		size := q.size
		got, pages := queryAll(t, c, q.f, size)
		if len(got) != 2345 || pages < 2345/int(size) {
			t.Fatalf("page size %d: %d records in %d pages, want 2345", size, len(got), pages)
		}
		for i, seq := range got {
			if seq != uint64(i+1) {
				t.Fatalf("page size %d: record %d has sequence %d", size, i, seq)
			}
		}
	}
	got, _ := queryAll(t, c, &auditv1.Filter{TraceId: "trace-2000"}, 10)
	if len(got) != 1 {
		t.Fatalf("trace-2000: %v, want one record", got)
	}
}

// TestPostgresTail: a Tail from now on one replica gets what another replica commits (the
// poll), in order, filtered, and nothing from before it started; a Tail from a sequence
// catches up first.
func TestPostgresTail(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	a, b := openPostgres(t, dsn, 16), openPostgres(t, dsn, 16)
	recs := knownRecords(10)
	for _, r := range recs[:3] {
		if _, err := appendRecord(a, r); err != nil {
			t.Fatal(err)
		}
	}
	c := queryClient(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	got := map[string][]*auditv1.Entry{}
	tail := func(name string, req *auditv1.TailRequest) {
		go func() {
			stream, err := c.Tail(ctx, connect.NewRequest(req))
			if err != nil {
				t.Errorf("tail %s: %v", name, err)
				return
			}
			for stream.Receive() {
				mu.Lock()
				got[name] = append(got[name], stream.Msg().GetEntries()...)
				mu.Unlock()
			}
		}()
	}
	received := func(name string) []*auditv1.Entry {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got[name])
	}
	tail("now", &auditv1.TailRequest{Filter: &auditv1.Filter{Server: "files"}})
	tail("from 2", &auditv1.TailRequest{FromSequence: 2})
	// Probes through the other replica until the first arrives: the tail has started.
	probe := proto.CloneOf(recs[0])
	testsync.WaitFor(t, 30*time.Second, "the tail's first record from the other replica", func() bool {
		if _, err := appendRecord(b, probe); err != nil {
			t.Fatal(err)
		}
		return len(received("now")) > 0
	})
	other := proto.CloneOf(recs[5])
	other.Server, other.CallId = "github", "filtered-out"
	after := proto.CloneOf(recs[5])
	after.Server, after.CallId = "files", "after-the-start"
	if _, err := appendRecord(b, other); err != nil {
		t.Fatal(err)
	}
	resp, err := appendRecord(b, after)
	if err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 30*time.Second, "the record appended after the start", func() bool {
		es := received("now")
		return len(es) > 0 && es[len(es)-1].GetSequence() == resp.GetSequence()
	})
	es := received("now")
	for i, e := range es {
		if e.GetRecord().GetServer() != "files" || e.GetSequence() <= 3 || (i > 0 && e.GetSequence() <= es[i-1].GetSequence()) {
			t.Fatalf("tail from now got %v: want files records after 3, in order", es)
		}
	}
	testsync.WaitFor(t, 30*time.Second, "the tail from 2 to catch up", func() bool {
		es := received("from 2")
		return len(es) > 0 && es[len(es)-1].GetSequence() == resp.GetSequence()
	})
	for i, e := range received("from 2") {
		if e.GetSequence() != uint64(i+2) {
			t.Fatalf("tail from 2: entry %d has sequence %d", i, e.GetSequence())
		}
	}
}

// TestPostgresAlertFires: alerts follow the table, so a replica with alert rules sees the
// records every replica commits: a denial appended through another replica fires
// policy_denial_spike at the webhook.
func TestPostgresAlertFires(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	bodies := make(chan string, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		select {
		case bodies <- string(b):
		default:
		}
	}))
	t.Cleanup(hook.Close)
	cfgFile := filepath.Join(t.TempDir(), "gatehouse.yaml")
	doc := fmt.Sprintf("servers: []\nalerts:\n  webhook: {url: %q, timeout: 5s}\n  rules:\n    policy_denial_spike: {threshold: 1, cooldown: 1h}\n", hook.URL)
	if err := os.WriteFile(cfgFile, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	watcher, err := auditsvc.New(auditsvc.Config{Store: auditsvc.StorePostgres, PostgresDSN: dsn, AlertFile: cfgFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = watcher.Close(context.Background()) })
	other := openPostgres(t, dsn, 16)
	rec := record(1)
	rec.Tenant, rec.Outcome, rec.Decision = "denied-tenant", auditv1.Outcome_OUTCOME_DENIED, auditv1.PolicyDecision_POLICY_DECISION_DENY
	if _, err := appendRecord(other, rec); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-bodies:
		if !strings.Contains(b, "policy_denial_spike") || !strings.Contains(b, "denied-tenant") {
			t.Fatalf("webhook got %s; want the policy_denial_spike alert of denied-tenant", b)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no alert within 60s of a denial committed by another replica")
	}
}
