package auditsvc

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/gatehouse-mcp/gatehouse/auditsvc/query"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protojson"
)

// The filter columns' migration, after createSchema added them (nullable, so at once): their
// indexes, built with CREATE INDEX CONCURRENTLY (appends go on; an INVALID index an
// interrupted build left is dropped and built again), then the rows from before the columns
// filled in from their lines, pgBackfillBatch rows a transaction. It runs in the background
// on a connection of its own, so the store starts (and appends) whatever the table's size; a
// line that does not parse gets empty columns (it cannot match a filter anyway) and the
// backfill goes on. Every replica runs it at start; the index statements are idempotent and
// the backfill takes only rows still NULL, so replicas doing it at once only repeat work.
// Until it is done, a session or trace filter also takes the rows not yet filled in.
const (
	pgBackfillBatch = 500
	// pgIndexTimeout bounds one CREATE INDEX CONCURRENTLY: it reads the whole table.
	pgIndexTimeout = time.Hour
)

// pgIndexes are the filter columns' indexes, by name.
var pgIndexes = []struct{ name, cols string }{
	{pgRecordsTable + "_session", "(session_id, seq)"},
	{pgRecordsTable + "_trace", "(trace_id, seq)"},
}

// migrate is the migration's goroutine. A failure is logged; the next start tries again.
func (s *pgStore) migrate() {
	defer close(s.migrated)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stopPoll:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := s.migrateColumns(ctx); err != nil {
		if ctx.Err() == nil {
			s.logger.Error("audit filter columns not migrated; queries by session or trace read more rows until a start completes it", "err", err)
		}
		return
	}
}

func (s *pgStore) migrateColumns(ctx context.Context) error {
	cc := s.pool.Config().ConnConfig.Copy()
	cc.RuntimeParams["application_name"] = "gatehouse-auditsvc-migrate"
	// CREATE INDEX CONCURRENTLY waits for every transaction older than it (a long Verify's
	// snapshot, too): a lock_timeout of --postgres-timeout would leave an INVALID index.
	ms := strconv.FormatInt(pgIndexTimeout.Milliseconds(), 10)
	cc.RuntimeParams["statement_timeout"] = ms
	cc.RuntimeParams["lock_timeout"] = ms
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ix := range pgIndexes {
		var valid *bool
		err := conn.QueryRow(ctx, `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace`, ix.name).Scan(&valid)
		if err != nil && err != pgx.ErrNoRows {
			return fmt.Errorf("look up index %s: %w", ix.name, err)
		}
		if valid != nil && *valid {
			continue
		}
		if valid != nil {
			s.logger.Warn("audit index left invalid by an interrupted build; building it again", "index", ix.name)
			if _, err := conn.Exec(ctx, `DROP INDEX CONCURRENTLY IF EXISTS `+ix.name); err != nil {
				return fmt.Errorf("drop invalid index %s: %w", ix.name, err)
			}
		}
		if _, err := conn.Exec(ctx, `CREATE INDEX CONCURRENTLY IF NOT EXISTS `+ix.name+` ON `+pgRecordsTable+` `+ix.cols); err != nil {
			return fmt.Errorf("create index %s: %w", ix.name, err)
		}
	}
	filled := 0
	for {
		n, err := s.backfill(ctx, conn)
		if err != nil {
			return err
		}
		filled += n
		if n < pgBackfillBatch {
			break
		}
	}
	s.backfilled.Store(true)
	if filled > 0 {
		s.logger.Info("audit filter columns filled in for rows from before them", "rows", filled)
	}
	return nil
}

// backfill fills in one batch of rows whose columns are NULL, from their lines.
func (s *pgStore) backfill(ctx context.Context, conn *pgx.Conn) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT seq, line FROM `+pgRecordsTable+` WHERE session_id IS NULL ORDER BY session_id, seq LIMIT `+strconv.Itoa(pgBackfillBatch))
	if err != nil {
		return 0, fmt.Errorf("read rows to fill in: %w", err)
	}
	var seqs []int64
	var cols pgBatchColumns
	for rows.Next() {
		var seq int64
		var line []byte
		if err := rows.Scan(&seq, &line); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read rows to fill in: %w", err)
		}
		seqs = append(seqs, seq)
		cols.add(lineColumns(line))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read rows to fill in: %w", err)
	}
	if len(seqs) == 0 {
		return 0, nil
	}
	// Only session_id and trace_id: the others may stay NULL (never ruled out by a filter).
	if _, err := conn.Exec(ctx, `UPDATE `+pgRecordsTable+` r SET session_id = u.s, trace_id = u.t FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(seq, s, t) WHERE r.seq = u.seq AND r.session_id IS NULL`,
		seqs, cols.session, cols.trace); err != nil {
		return 0, fmt.Errorf("fill in %d rows: %w", len(seqs), err)
	}
	return len(seqs), nil
}

// lineColumns are the filter columns of a stored line; empty ones for a line that does not
// parse.
func lineColumns(line []byte) *pgColumns {
	rec, ok := lineRecord(line)
	if !ok {
		return &pgColumns{}
	}
	return columnsOf(rec)
}

// lineRecord decodes a stored line's record.
func lineRecord(line []byte) (*auditv1.Record, bool) {
	if len(line) > maxLineBytes {
		return nil, false
	}
	_, raw, ok := query.ParseLine(line)
	if !ok {
		return nil, false
	}
	var rec auditv1.Record
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &rec); err != nil {
		return nil, false
	}
	return &rec, true
}
