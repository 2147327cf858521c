package auditsvc

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"sync"
	"testing"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestPgCheckpointLockOneChain: two stores on one database, each signing from eight
// goroutines at once after every few appends (far more signers than the service runs), make
// exactly one checkpoint per new head: no failure (a second checkpoint for an index would be
// refused by the primary key and counted), indexes 1..N, each signing the head of its round.
func TestPgCheckpointLockOneChain(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	stores := make([]*pgStore, 2)
	for i := range stores {
		s, err := openPostgres(context.Background(), dsn, 4, 5*time.Second, limits{maxBatch: 16, maxQueue: 64, maxQueueBytes: 16 << 20},
			slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		// Signing is driven by the test alone: no goroutine, no wake by records.
		loop := newSignerLoop(time.Hour)
		close(loop.done) // no goroutine: end returns at once
		s.ckpt = &pgCheckpointer{key: key, every: 1 << 62, signerLoop: loop}
		s.start()
		t.Cleanup(func() { _ = s.close(context.Background()) })
		stores[i] = s
	}
	const rounds, each = 12, 3
	for r := range rounds {
		for i := range each {
			rec := &auditv1.Record{Time: timestamppb.Now(), Server: "files", Method: "tools/call", Outcome: auditv1.Outcome_OUTCOME_ALLOWED}
			s := stores[(r+i)%2]
			b, err := marshalRecord(s.nextID(), rec)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.append(context.Background(), b, rec, false); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() { stores[g%2].checkpoint() })
		}
		wg.Wait()
	}
	var signed uint64
	for _, s := range stores {
		if f := s.checkpointFailures.Load(); f != 0 {
			t.Fatalf("%d checkpoint failures", f)
		}
		signed += s.checkpoints.Load()
	}
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	rows, err := c.Query(context.Background(), `SELECT idx, seq FROM `+pgCheckpointsTable+` ORDER BY idx`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Idx, Seq int64 }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != rounds || signed != rounds {
		t.Fatalf("%d checkpoint rows, %d signed; want one per round, %d", len(got), signed, rounds)
	}
	for i, r := range got {
		if r.Idx != int64(i+1) || r.Seq != int64((i+1)*each) {
			t.Fatalf("checkpoint row %d is (idx %d, seq %d); want (%d, %d)", i, r.Idx, r.Seq, i+1, (i+1)*each)
		}
	}
	resp, err := VerifyPostgres(context.Background(), dsn, VerifyOptions{PublicKey: key.Public().(ed25519.PublicKey)})
	if err != nil || len(resp.GetProblems()) != 0 || resp.GetCheckpoints() != rounds {
		t.Fatalf("Verify: %v, %d checkpoints, problems %v", err, resp.GetCheckpoints(), resp.GetProblems())
	}
}
