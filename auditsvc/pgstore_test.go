package auditsvc_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

func openPostgres(t *testing.T, dsn string, maxBatch int) *auditsvc.Service {
	t.Helper()
	svc, err := auditsvc.New(auditsvc.Config{Store: auditsvc.StorePostgres, PostgresDSN: dsn, MaxBatch: maxBatch, PostgresTimeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

func verifyRPC(t *testing.T, svc *auditsvc.Service) *auditv1.VerifyResponse {
	t.Helper()
	resp, err := svc.Verify(context.Background(), connect.NewRequest(&auditv1.VerifyRequest{}))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return resp.Msg
}

// pgExec runs sql on dsn.
func pgExec(t *testing.T, dsn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestPostgresTwoReplicasOneChain: two services over one database, appended to concurrently,
// keep one chain: every acknowledged append has its own sequence, 1..N without a gap, and
// Verify (either replica's, and offline) finds nothing wrong; a record changed in the table
// is then named by its sequence.
func TestPostgresTwoReplicasOneChain(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	a, b := openPostgres(t, dsn, 16), openPostgres(t, dsn, 16)
	const callers, each = 8, 40
	var mu sync.Mutex
	seen := map[uint64]string{}
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := a
			if c%2 == 1 {
				svc = b
			}
			for i := range each {
				r, err := appendRecord(svc, record(c*each+i))
				if err != nil {
					t.Errorf("append: %v", err)
					return
				}
				mu.Lock()
				if prev, dup := seen[r.GetSequence()]; dup {
					t.Errorf("sequence %d acknowledged twice (%s, %s)", r.GetSequence(), prev, r.GetHash())
				}
				seen[r.GetSequence()] = r.GetHash()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	n := uint64(callers * each)
	for seq := uint64(1); seq <= n; seq++ {
		if _, ok := seen[seq]; !ok {
			t.Fatalf("sequence %d was not acknowledged (%d acknowledged)", seq, len(seen))
		}
	}
	for _, svc := range []*auditsvc.Service{a, b} {
		v := verifyRPC(t, svc)
		if len(v.GetProblems()) > 0 || v.GetRecords() != n {
			t.Fatalf("Verify: %d records, problems %v; want %d and none", v.GetRecords(), v.GetProblems(), n)
		}
	}
	t.Logf("%d records in %d commits", n, a.Stats().Commits+b.Stats().Commits)

	// One record's bytes changed (its tool), the chain not recomputed.
	const victim = 123
	pg.Stop(t) // not needed for the edit; shows Verify works after a restart of the database
	pg.Restart(t)
	pgExec(t, dsn, `UPDATE gatehouse_audit_records SET line = convert_to(replace(convert_from(line, 'UTF8'), '"tool":"read"', '"tool":"rm"'), 'UTF8') WHERE seq = $1`, victim)
	off, err := auditsvc.VerifyPostgres(context.Background(), dsn, auditsvc.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := off.GetProblems(); len(p) != 1 || p[0].GetSequence() != victim || p[0].GetKind() != auditsvc.KindBroken {
		t.Fatalf("offline Verify after changing record %d: %v, want one broken record at %d", victim, p, victim)
	}
	// Records cut off the end: the head row is ahead.
	pgExec(t, dsn, `DELETE FROM gatehouse_audit_records WHERE seq > $1`, n-3)
	off, err = auditsvc.VerifyPostgres(context.Background(), dsn, auditsvc.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := off.GetProblems(); len(p) != 2 || p[1].GetKind() != auditsvc.KindCutOff || p[1].GetSequence() != n-2 {
		t.Fatalf("offline Verify after cutting 3 records: %v, want the changed record and cut_off at %d", p, n-2)
	}
}

// TestPostgresCommitFailureRefusesBatch: with the database gone, an append is refused
// (Unavailable: fail closed) and nothing of it remains; once the database is back the same
// service appends again and the chain goes on without a gap.
func TestPostgresCommitFailureRefusesBatch(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	svc := openPostgres(t, dsn, 8)
	for i := range 5 {
		if _, err := appendRecord(svc, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	pg.Stop(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := appendRecord(svc, record(100+i))
			if connect.CodeOf(err) != connect.CodeUnavailable {
				t.Errorf("append with the database stopped: %v, want Unavailable", err)
			}
		}()
	}
	wg.Wait()
	pg.Restart(t)
	r, err := appendRecord(svc, record(6))
	if err != nil {
		t.Fatalf("append once the database is back: %v", err)
	}
	if r.GetSequence() != 6 {
		t.Fatalf("sequence after the refused batch: %d, want 6 (nothing of it committed)", r.GetSequence())
	}
	if v := verifyRPC(t, svc); len(v.GetProblems()) > 0 || v.GetRecords() != 6 {
		t.Fatalf("Verify: %d records, %v", v.GetRecords(), v.GetProblems())
	}
}

// TestPostgresTerminatedBackend: a backend killed under the store (an administrator's
// pg_terminate_backend, a failover) fails that commit only; the pool reconnects.
func TestPostgresTerminatedBackend(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	svc := openPostgres(t, dsn, 8)
	if _, err := appendRecord(svc, record(1)); err != nil {
		t.Fatal(err)
	}
	pgExec(t, dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gatehouse-auditsvc'`)
	// The first append after may meet the dead connection and be refused; one soon succeeds.
	var last *auditv1.AppendResponse
	for i := range 5 {
		r, err := appendRecord(svc, record(2+i))
		if err == nil {
			last = r
			break
		}
		if connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("append after the backend was terminated: %v, want success or Unavailable", err)
		}
	}
	if last == nil {
		t.Fatal("no append succeeded after the backend was terminated")
	}
	if v := verifyRPC(t, svc); len(v.GetProblems()) > 0 || v.GetRecords() != last.GetSequence() {
		t.Fatalf("Verify: %d records, %v; want %d", v.GetRecords(), v.GetProblems(), last.GetSequence())
	}
}

// TestPostgresConcurrentSchemaCreation: replicas starting at once on an empty database all
// start (the schema is created once, under an advisory lock) and share one head.
func TestPostgresConcurrentSchemaCreation(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	const replicas = 6
	svcs := make([]*auditsvc.Service, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svcs[i], errs[i] = auditsvc.New(auditsvc.Config{Store: auditsvc.StorePostgres, PostgresDSN: dsn, PostgresConns: 2}, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		t.Cleanup(func() { _ = svcs[i].Close(context.Background()) })
	}
	for i, svc := range svcs {
		r, err := appendRecord(svc, record(i))
		if err != nil {
			t.Fatal(err)
		}
		if r.GetSequence() != uint64(i+1) {
			t.Fatalf("replica %d appended at %d, want %d", i, r.GetSequence(), i+1)
		}
	}
}

// TestPostgresRefusals: a configuration the postgres store cannot serve is refused at start.
func TestPostgresRefusals(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	for _, c := range []struct {
		cfg  auditsvc.Config
		want string
	}{
		{auditsvc.Config{Store: auditsvc.StorePostgres}, "needs --postgres-dsn-file"},
		{auditsvc.Config{Store: auditsvc.StorePostgres, PostgresDSN: dsn, SigningKeyFile: "/nonexistent/key.pem"}, "read audit signing key"},
		{auditsvc.Config{Store: auditsvc.StorePostgres, PostgresDSN: dsn, AlertFile: "/nonexistent/alerts.yaml"}, "alerts.yaml"},
		{auditsvc.Config{Store: auditsvc.StorePostgres, PostgresDSN: "postgres://u:hunter2@127.0.0.1:1/x?connect_timeout=bogus"}, "does not parse"},
		{auditsvc.Config{Store: "sqlite", PostgresDSN: dsn}, `--store "sqlite"`},
	} {
		_, err := auditsvc.New(c.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v): %v, want an error containing %q", c.cfg.Store, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error repeats the DSN's password: %v", err)
		}
	}
}

// BenchmarkPostgresAppendParallel measures durable appends through the postgres store from
// 32 callers per core, with one replica and with two sharing the database (the callers
// alternate): the second adds a turn on the head's lock, not throughput. The test cluster
// runs with fsync off (pgtest).
func BenchmarkPostgresAppendParallel(b *testing.B) {
	pg := pgtest.Start(b)
	for _, replicas := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			dsn := pg.CreateDatabase(b)
			svcs := make([]*auditsvc.Service, replicas)
			for i := range svcs {
				svc, err := auditsvc.New(auditsvc.Config{Store: auditsvc.StorePostgres, PostgresDSN: dsn}, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = svc.Close(context.Background()) })
				svcs[i] = svc
			}
			var next atomic.Int64
			b.SetParallelism(32)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				svc := svcs[int(next.Add(1))%replicas]
				for pb.Next() {
					if _, err := svc.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{Record: record(1)})); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
