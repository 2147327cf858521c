package auditsvc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/pgtest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestPostgresMigrationBadLine: a records table of the shape before the filter columns, one
// of whose lines is not JSON at all. A replica starts on it (the line does not stop the
// migration), appends, and the background backfill fills the columns of the good rows (the
// bad one's with empty ones); the indexes are built, and one an interrupted build left
// INVALID is built again at the next start.
func TestPostgresMigrationBadLine(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	first := openPostgres(t, dsn, 16)
	for i := range 5 {
		if _, err := appendRecord(first, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	pgExec(t, dsn, `ALTER TABLE gatehouse_audit_records DROP COLUMN session_id, DROP COLUMN principal, DROP COLUMN tenant, DROP COLUMN server, `+
		`DROP COLUMN tool, DROP COLUMN trace_id, DROP COLUMN call_id, DROP COLUMN outcome, DROP COLUMN rec_time`)
	pgExec(t, dsn, `INSERT INTO gatehouse_audit_records (seq, line) VALUES (6, convert_to('not json {', 'UTF8'))`)
	pgExec(t, dsn, `UPDATE gatehouse_audit_head SET seq = 6, hash = $1`, strings.Repeat("a", 64))

	svc := openPostgres(t, dsn, 16)
	if _, err := appendRecord(svc, record(6)); err != nil {
		t.Fatalf("append on the migrated table: %v", err)
	}
	const validIndexes = `SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname IN ('gatehouse_audit_records_session', 'gatehouse_audit_records_trace') AND i.indisvalid`
	testsync.WaitFor(t, 60*time.Second, "the indexes built and the rows filled in", func() bool {
		return pgInt(t, dsn, validIndexes) == 2 && pgInt(t, dsn, `SELECT count(*) FROM gatehouse_audit_records WHERE session_id IS NULL`) == 0
	})
	if n := pgInt(t, dsn, `SELECT count(*) FROM gatehouse_audit_records WHERE session_id = 's1'`); n != 6 {
		t.Fatalf("%d rows of session s1; want 6 (five filled in, one appended)", n)
	}
	if n := pgInt(t, dsn, `SELECT count(*) FROM gatehouse_audit_records WHERE trace_id = 'trace-3' AND seq = 4`); n != 1 {
		t.Fatal("record 4's trace id not filled in")
	}
	if n := pgInt(t, dsn, `SELECT count(*) FROM gatehouse_audit_records WHERE seq = 6 AND session_id = '' AND trace_id = ''`); n != 1 {
		t.Fatal("the line that is not JSON did not get empty columns")
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// As an interrupted CREATE INDEX CONCURRENTLY leaves it.
	pgExec(t, dsn, `UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'gatehouse_audit_records_session'::regclass`)
	if n := pgInt(t, dsn, validIndexes); n != 1 {
		t.Fatalf("%d valid indexes after marking one invalid", n)
	}
	openPostgres(t, dsn, 16)
	testsync.WaitFor(t, 60*time.Second, "the invalid index built again", func() bool {
		return pgInt(t, dsn, validIndexes) == 2
	})
}

// TestPostgresVerifyColumns: a filter column edited (the row then hidden from a filter by
// it) is named by Verify as column_mismatch at its sequence; a NULL column (a row from
// before the columns) is not a problem.
func TestPostgresVerifyColumns(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	svc := openPostgres(t, dsn, 16)
	for i := range 5 {
		if _, err := appendRecord(svc, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if ps := verifyRPC(t, svc).GetProblems(); len(ps) != 0 {
		t.Fatalf("problems before the edit: %v", ps)
	}
	pgExec(t, dsn, `UPDATE gatehouse_audit_records SET principal = 'mallory' WHERE seq = 3`)
	pgExec(t, dsn, `UPDATE gatehouse_audit_records SET rec_time = rec_time + interval '1 hour' WHERE seq = 5`)
	pgExec(t, dsn, `UPDATE gatehouse_audit_records SET tool = NULL, trace_id = NULL WHERE seq = 4`)
	ps := verifyRPC(t, svc).GetProblems()
	if len(ps) != 2 || ps[0].GetKind() != auditsvc.KindColumnMismatch || ps[0].GetSequence() != 3 || !strings.Contains(ps[0].GetReason(), "principal") ||
		ps[1].GetKind() != auditsvc.KindColumnMismatch || ps[1].GetSequence() != 5 || !strings.Contains(ps[1].GetReason(), "rec_time") {
		t.Fatalf("problems %v; want column_mismatch of principal at 3 and of rec_time at 5", ps)
	}
}

// TestPostgresQueryTimeSubMicrosecond: rec_time keeps microseconds, a record's time
// nanoseconds; a record whose own time is within a filter's bounds by less than a
// microsecond is still found.
func TestPostgresQueryTimeSubMicrosecond(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	svc := openPostgres(t, dsn, 16)
	rec := record(0)
	rec.Time = timestamppb.New(time.Unix(1_700_000_000, 1500))
	if _, err := appendRecord(svc, rec); err != nil {
		t.Fatal(err)
	}
	c := queryClient(t, svc)
	for _, f := range []*auditv1.Filter{
		{Until: timestamppb.New(time.Unix(1_700_000_000, 1800))},
		{Since: timestamppb.New(time.Unix(1_700_000_000, 1200)), Until: timestamppb.New(time.Unix(1_700_000_000, 1501))},
		{Since: timestamppb.New(time.Unix(1_700_000_000, 1500))},
	} {
		if got, _ := queryAll(t, c, f, 10); len(got) != 1 {
			t.Fatalf("filter %v found %v; want the record", f, got)
		}
	}
	if got, _ := queryAll(t, c, &auditv1.Filter{Until: timestamppb.New(time.Unix(1_700_000_000, 1500))}, 10); len(got) != 0 {
		t.Fatalf("until the record's own time found %v; want nothing", got)
	}
}
