package auditsvc

import (
	"context"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestPgReaderAcquireBound: with every connection of the readers' pool taken, concurrent
// Queries are refused as Unavailable once the bounded wait for one ends (not when their
// callers give up), appends go on, and once connections are free again Queries answer.
func TestPgReaderAcquireBound(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	svc, err := New(Config{Store: StorePostgres, PostgresDSN: dsn, PostgresTimeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	st := svc.store.(*pgStore)
	ctx := context.Background()
	var held []*pgxpool.Conn
	for range pgReadConns {
		c, err := st.readPool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// Released before the service closes (which waits for them), also when the test fails.
	var release sync.Once
	releaseAll := func() {
		release.Do(func() {
			for _, c := range held {
				c.Release()
			}
		})
	}
	t.Cleanup(releaseAll)
	// A caller that would wait far longer than the bound.
	qctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = svc.Query(qctx, connect.NewRequest(&auditv1.QueryRequest{PageSize: 10}))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if connect.CodeOf(err) != connect.CodeUnavailable || qctx.Err() != nil {
			t.Fatalf("query %d with the readers' pool taken: %v; want Unavailable before the caller's deadline", i, err)
		}
	}
	rec := &auditv1.Record{Server: "files", Method: "tools/call", Outcome: auditv1.Outcome_OUTCOME_ALLOWED}
	if _, err := svc.Append(ctx, connect.NewRequest(&auditv1.AppendRequest{Record: rec})); err != nil {
		t.Fatalf("append with the readers' pool taken: %v", err)
	}
	releaseAll()
	resp, err := svc.Query(ctx, connect.NewRequest(&auditv1.QueryRequest{PageSize: 10}))
	if err != nil || len(resp.Msg.GetEntries()) != 1 {
		t.Fatalf("query once connections are free: %v, %v", resp, err)
	}
}
