package auditsvc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/pgtest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/jackc/pgx/v5"
)

// pgInt is one integer SQL reads from dsn.
func pgInt(t *testing.T, dsn, sql string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int64
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestPostgresForgedHeadNotSigned: records this replica committed after the last checkpoint
// are changed with SQL, their chain recomputed and the head row rewritten (what the chain and
// the head alone cannot show). Appends go on through the store; the writer finds the head is
// not the one it left, the signer finds a record it committed changed: both are counted in
// Breaks, no checkpoint signs the forged head (not even the one close signs), and the
// replica's Verify names them.
func TestPostgresForgedHeadNotSigned(t *testing.T) {
	pg := pgtest.Start(t)
	s := newPgSigned(t, pg, 10)
	s.cfg.CheckpointInterval = time.Hour // signing is woken by records only
	svc := s.open(t)
	for i := range 20 {
		if _, err := appendRecord(svc, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	testsync.WaitFor(t, 30*time.Second, "the head at 20 signed", func() bool {
		return pgInt(t, s.dsn, `SELECT coalesce(max(seq), 0) FROM gatehouse_audit_checkpoints`) == 20
	})
	// Five more: fewer than --checkpoint-records, so nothing signs them.
	for i := 20; i < 25; i++ {
		if _, err := appendRecord(svc, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if b := svc.Stats().Breaks; b != 0 {
		t.Fatalf("Breaks %d before tampering", b)
	}
	l := pgLines(t, s.dsn)
	l[21] = strings.Replace(l[21], `"principal":"alice"`, `"principal":"mallory"`, 1)
	l = rechain(l, 21)
	for i := 21; i < len(l); i++ {
		pgExec(t, s.dsn, `UPDATE gatehouse_audit_records SET line = convert_to($1, 'UTF8') WHERE seq = $2`, l[i], i+1)
	}
	last := l[len(l)-1]
	pgExec(t, s.dsn, `UPDATE gatehouse_audit_head SET hash = $1`, last[len(last)-66:len(last)-2])

	for i := 25; i < 40; i++ {
		if _, err := appendRecord(svc, record(i)); err != nil {
			t.Fatalf("append after the forgery: %v", err)
		}
	}
	testsync.WaitFor(t, 30*time.Second, "the writer's and the signer's findings", func() bool {
		return svc.Stats().Breaks >= 2
	})
	var seqs []uint64
	for _, p := range verifyRPC(t, svc).GetProblems() {
		seqs = append(seqs, p.GetSequence())
	}
	if !containsSeq(seqs, 25) || !containsSeq(seqs, 22) {
		t.Fatalf("Verify's problems at sequences %v; want the rewritten head (25) and the changed record (22)", seqs)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := pgInt(t, s.dsn, `SELECT coalesce(max(seq), 0) FROM gatehouse_audit_checkpoints`); n != 20 {
		t.Fatalf("the last checkpoint signs sequence %d; want 20: nothing after the forgery may be signed", n)
	}
}

func containsSeq(seqs []uint64, seq uint64) bool {
	for _, s := range seqs {
		if s == seq {
			return true
		}
	}
	return false
}

// TestPostgresAnchorCheckedAtOpen: the table wiped (records, checkpoints and the head reset)
// while the anchor still names sequence 15: the next open logs and counts the break, and the
// service starts anyway and appends. The postgres store's anchor has a key of its own.
func TestPostgresAnchorCheckedAtOpen(t *testing.T) {
	if got := auditsvc.AnchorKeyFor("/p/", auditsvc.StorePostgres); got != "/p/audit/anchor-postgres" {
		t.Fatalf("AnchorKeyFor postgres = %q", got)
	}
	if got := auditsvc.AnchorKeyFor("/p/", auditsvc.StoreFile); got != "/p/audit/anchor" {
		t.Fatalf("AnchorKeyFor file = %q", got)
	}
	pg := pgtest.Start(t)
	s := newPgSigned(t, pg, 10)
	svc := s.open(t)
	for i := range 15 {
		if _, err := appendRecord(svc, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	reopened := s.open(t)
	if b := reopened.Stats().Breaks; b != 0 {
		t.Fatalf("Breaks %d on an intact log", b)
	}
	if err := reopened.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	pgExec(t, s.dsn, `TRUNCATE gatehouse_audit_records, gatehouse_audit_checkpoints`)
	pgExec(t, s.dsn, `UPDATE gatehouse_audit_head SET seq = 0, hash = $1`, strings.Repeat("0", 64))
	wiped := s.open(t)
	if b := wiped.Stats().Breaks; b != 1 {
		t.Fatalf("Breaks %d after opening a wiped table with the anchor at 15; want 1", b)
	}
	if _, err := appendRecord(wiped, record(0)); err != nil {
		t.Fatalf("append after the break: %v", err)
	}
	var found bool
	for _, p := range verifyRPC(t, wiped).GetProblems() {
		found = found || (p.GetKind() == auditsvc.KindCutOff && p.GetSequence() == 15 && strings.Contains(p.GetReason(), "found by this replica"))
	}
	if !found {
		t.Fatalf("Verify does not report the break found at open: %v", verifyRPC(t, wiped).GetProblems())
	}
}

// TestPostgresVerifyLeavesWriterPool: with --postgres-conns 1, a Verify held inside its
// snapshot (here by a lock on the checkpoints table it reads last) does not hold the writer's
// only connection: appends commit meanwhile; a second Verify is refused; the first completes
// once the lock goes.
func TestPostgresVerifyLeavesWriterPool(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	svc, err := auditsvc.New(auditsvc.Config{Store: auditsvc.StorePostgres, PostgresDSN: dsn, PostgresConns: 1, PostgresTimeout: 60 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	for i := range 5 {
		if _, err := appendRecord(svc, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	locker, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(ctx)
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE gatehouse_audit_checkpoints IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		resp *auditv1.VerifyResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := svc.Verify(ctx, connect.NewRequest(&auditv1.VerifyRequest{}))
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{resp: resp.Msg}
	}()
	testsync.WaitFor(t, 30*time.Second, "Verify waiting inside its snapshot", func() bool {
		return pgInt(t, dsn, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) >= 1
	})
	if _, err := svc.Verify(ctx, connect.NewRequest(&auditv1.VerifyRequest{})); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("a second Verify while one runs: %v; want Unavailable", err)
	}
	// Far less than the store's timeout, which is what an append would wait for the writer's
	// one connection if Verify held it.
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for i := 5; i < 10; i++ {
		if _, err := svc.Append(actx, connect.NewRequest(&auditv1.AppendRequest{Record: record(i)})); err != nil {
			t.Fatalf("append while Verify holds its snapshot: %v", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The snapshot began before the appends: it saw the first five.
	if r.resp.GetRecords() != 5 || len(r.resp.GetProblems()) != 0 {
		t.Fatalf("Verify: %d records, problems %v; want 5, none", r.resp.GetRecords(), r.resp.GetProblems())
	}
}

// TestPostgresHeadBelowCheckpointNotSigned: the signer's own check, on a replica that
// committed nothing (so only the last checkpoint's signed sequence and hash speak): records
// after sequence 15 deleted and the head row moved back to 15, under a checkpoint that signs
// 20. The head below the checkpoint is damage at the first signing; appending on goes on,
// and the chain from the signed hash at 20 does not hold, so nothing after 20 is signed.
func TestPostgresHeadBelowCheckpointNotSigned(t *testing.T) {
	pg := pgtest.Start(t)
	s := newPgSigned(t, pg, 10)
	s.cfg.CheckpointInterval = time.Hour
	first := s.open(t)
	for i := range 20 {
		if _, err := appendRecord(first, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := pgInt(t, s.dsn, `SELECT max(seq) FROM gatehouse_audit_checkpoints`); n != 20 {
		t.Fatalf("last checkpoint at %d; want 20", n)
	}
	l := pgLines(t, s.dsn)
	pgExec(t, s.dsn, `DELETE FROM gatehouse_audit_records WHERE seq > 15`)
	pgExec(t, s.dsn, `UPDATE gatehouse_audit_head SET seq = 15, hash = $1`, l[14][len(l[14])-66:len(l[14])-2])
	// No anchor: the table alone against the signed checkpoint.
	svc, err := auditsvc.New(s.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	if b := svc.Stats().Breaks; b != 1 {
		t.Fatalf("Breaks %d after the first signing over a head below the checkpoint; want 1", b)
	}
	for i := 15; i < 30; i++ {
		if _, err := appendRecord(svc, record(i)); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	if b := svc.Stats().Breaks; b != 2 {
		t.Fatalf("Breaks %d; want 2 (the head below the checkpoint, then a chain that does not lead from it)", b)
	}
	if n := pgInt(t, s.dsn, `SELECT max(seq) FROM gatehouse_audit_checkpoints`); n != 20 {
		t.Fatalf("the last checkpoint signs %d; want 20: nothing after the cut may be signed", n)
	}
}
