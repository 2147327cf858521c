package auditsvc

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/auditsvc/query"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Query and Tail over the PostgreSQL store. The record is the line's JSON, as with files;
// the append also writes, in the same insert, the fields a filter names as columns of the
// row, so that SQL finds candidates without decoding lines:
//
//	session_id, principal, tenant, server, tool, trace_id, call_id text; outcome integer;
//	rec_time timestamptz
//
// with indexes on (session_id, seq) and (trace_id, seq), the lookups of an investigation
// (a session's replay, a trace). Each secondary index costs every append (two more, on
// principal and tool, made BenchmarkPostgresAppendParallel about a quarter slower on a
// shared, noisy 2-core machine); the other columns narrow a bounded window of sequences instead, and
// an operator who queries one often may add its index (CREATE INDEX CONCURRENTLY … (tool,
// seq)): the statements name the columns, so PostgreSQL uses it. The columns serve the
// search only: the Engine still decodes and matches every candidate, so a row an edited
// column takes is dropped; but a row an edited column rules out is never a candidate, so
// Query, replay and Tail miss it. Verify therefore compares every row's columns with its
// line and reports column_mismatch (pgverify.go). Rows written before the columns existed
// have NULLs there (filled in for session_id and trace_id by the backfill, pgmigrate.go) and
// are always candidates.
//
// Every read is bounded: one statement reads at most pgReadPage rows, one Scan examines at
// most the Engine's max sequences (MaxScan per Query, the follow step per Tail pass), and a
// page token is the Engine's, signed. Tail polls for what other replicas commit every
// pgTailPoll, and this replica's own commits within pgTailWake (coalesced: at most one wake
// per pgTailWake, whatever the commit rate).
const (
	pgReadPage = 1000
	pgTailPoll = 500 * time.Millisecond
	// pgTailWake is how often at most the tails are woken (each wake is two statements per
	// tail on the readers' pool).
	pgTailWake = 100 * time.Millisecond
	// pgReadAcquire bounds the wait for a connection of the readers' pool.
	pgReadAcquire = 2 * time.Second
	// pgReadConns is the size of the readers' pool, apart from the writer's: a slow Query
	// never holds a connection an append waits for.
	pgReadConns = 2
)

// pgSchemaColumns adds the filter columns (to tables made before them, too); createSchema
// runs it in its transaction. Nullable without a default, the columns are added without
// rewriting the table: the lock it takes is brief. Their indexes and the rows from before
// them are the migration's, in the background (pgmigrate.go).
var pgSchemaColumns = []string{
	`ALTER TABLE ` + pgRecordsTable + ` ADD COLUMN IF NOT EXISTS session_id text, ADD COLUMN IF NOT EXISTS principal text, ` +
		`ADD COLUMN IF NOT EXISTS tenant text, ADD COLUMN IF NOT EXISTS server text, ADD COLUMN IF NOT EXISTS tool text, ` +
		`ADD COLUMN IF NOT EXISTS trace_id text, ADD COLUMN IF NOT EXISTS call_id text, ADD COLUMN IF NOT EXISTS outcome integer, ` +
		`ADD COLUMN IF NOT EXISTS rec_time timestamptz`,
}

// pgInsert is the append's insert: every row of a batch in one statement.
const pgInsert = `INSERT INTO ` + pgRecordsTable + ` (seq, line, session_id, principal, tenant, server, tool, trace_id, call_id, outcome, rec_time) ` +
	`SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::integer[], $11::timestamptz[])`

// pgColumns are a record's filter columns, taken at append (strings are the stored,
// trimmed ones).
type pgColumns struct {
	session, principal, tenant, server, tool, trace, call string
	outcome                                               int32
	time                                                  time.Time
}

func columnsOf(rec *auditv1.Record) *pgColumns {
	return &pgColumns{session: rec.GetSessionId(), principal: rec.GetPrincipal(), tenant: rec.GetTenant(), server: rec.GetServer(),
		tool: rec.GetTool(), trace: rec.GetTraceId(), call: rec.GetCallId(), outcome: int32(rec.GetOutcome()), time: rec.GetTime().AsTime()}
}

// pgBatchColumns accumulates a batch's columns for pgInsert.
type pgBatchColumns struct {
	session, principal, tenant, server, tool, trace, call []string
	outcome                                               []int32
	time                                                  []time.Time
}

func (b *pgBatchColumns) add(c *pgColumns) {
	if c == nil {
		c = &pgColumns{}
	}
	b.session = append(b.session, c.session)
	b.principal = append(b.principal, c.principal)
	b.tenant = append(b.tenant, c.tenant)
	b.server = append(b.server, c.server)
	b.tool = append(b.tool, c.tool)
	b.trace = append(b.trace, c.trace)
	b.call = append(b.call, c.call)
	b.outcome = append(b.outcome, c.outcome)
	b.time = append(b.time, c.time)
}

func (b *pgBatchColumns) args() []any {
	return []any{b.session, b.principal, b.tenant, b.server, b.tool, b.trace, b.call, b.outcome, b.time}
}

// pgSource is the records table as a query.Source.
type pgSource struct{ s *pgStore }

// Scan implements query.Source. It examines, in sequence order from pos.Seq up to the head
// (what is committed: appends commit in sequence order, under the head's lock), at most limit
// rows, pgReadPage a statement: with a session or trace id in the filter, only that
// session's (trace's) rows, found by their index; else every row. The filter's other columns
// are tested in the same statement, which returns the line of a row they do not rule out and
// NULL for the others: the rows examined are bounded, and the position moves past them
// whether they match or not.
func (p pgSource) Scan(ctx context.Context, f *auditv1.Filter, pos query.Position, limit int, visit query.Visit) (query.Position, bool, error) {
	cur := max(pos.Seq, 1)
	conn, err := p.s.reader(ctx)
	if err != nil {
		return pos, false, err
	}
	defer conn.Release()
	var head int64
	if err := conn.QueryRow(ctx, `SELECT seq FROM `+pgHeadTable+` WHERE id`).Scan(&head); err != nil {
		return pos, false, fmt.Errorf("read the audit log's head from PostgreSQL: %w", err)
	}
	if head < 0 || cur > uint64(head) {
		return query.Position{Seq: cur}, true, nil
	}
	key, cond, args := pgFilter(f)
	if key != "" && !p.s.backfilled.Load() {
		// Rows from before the columns the migration has not filled in yet.
		col := key[:strings.IndexByte(key, ' ')]
		key = "(" + col + " = $3 OR " + col + " IS NULL) AND "
	}
	examined := 0
	for {
		page := min(pgReadPage, max(limit, 1)-examined)
		rows, err := conn.Query(ctx, `SELECT seq, CASE WHEN `+cond+` THEN line END FROM `+pgRecordsTable+
			` WHERE `+key+`seq >= $1 AND seq <= $2 ORDER BY seq LIMIT `+strconv.Itoa(page), append([]any{int64(cur), head}, args...)...)
		if err != nil {
			return query.Position{Seq: cur}, false, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
		}
		n := 0
		for rows.Next() {
			var seq int64
			var line []byte
			if err := rows.Scan(&seq, &line); err != nil {
				rows.Close()
				return query.Position{Seq: cur}, false, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
			}
			n++
			cur = uint64(seq) + 1
			if line == nil {
				continue // ruled out by a column
			}
			_, rec, ok := query.ParseLine(line)
			if !ok {
				rows.Close()
				return query.Position{Seq: cur}, false, fmt.Errorf("audit record %d in PostgreSQL is not a log line", seq)
			}
			more, err := visit(uint64(seq), rec, query.Position{Seq: cur})
			if err != nil || !more {
				rows.Close()
				return query.Position{Seq: cur}, false, err
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return query.Position{Seq: cur}, false, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
		}
		examined += n
		if n < page {
			// Nothing more up to the head: the next scan starts after it.
			return query.Position{Seq: uint64(head) + 1}, true, nil
		}
		if examined >= limit {
			return query.Position{Seq: cur}, false, nil
		}
		if err := ctx.Err(); err != nil {
			return query.Position{Seq: cur}, false, err
		}
	}
}

// pgFilter turns the filter into SQL: key, the indexed column the rows are found by
// ("session_id = $3 AND " or "trace_id = $3 AND ", or empty), and cond, a condition on the
// other columns (TRUE when there is none), with their arguments from $3. A NULL column (a
// row from before the columns; session_id and trace_id are filled in by the backfill,
// pgmigrate.go) is never ruled out by cond.
func pgFilter(f *auditv1.Filter) (key, cond string, args []any) {
	var b strings.Builder
	b.WriteString("TRUE")
	add := func(col, op string, v any) {
		args = append(args, v)
		fmt.Fprintf(&b, " AND (%s %s $%d OR %s IS NULL)", col, op, len(args)+2, col)
	}
	switch {
	case f.GetSessionId() != "":
		args = append(args, f.GetSessionId())
		key = "session_id = $3 AND "
	case f.GetTraceId() != "":
		args = append(args, f.GetTraceId())
		key = "trace_id = $3 AND "
	}
	for _, c := range []struct{ col, v string }{
		{"principal", f.GetPrincipal()}, {"tenant", f.GetTenant()}, {"server", f.GetServer()},
		{"tool", f.GetTool()}, {"call_id", f.GetCallId()},
	} {
		if c.v != "" {
			add(c.col, "=", c.v)
		}
	}
	if key != "session_id = $3 AND " && f.GetSessionId() != "" {
		add("session_id", "=", f.GetSessionId())
	}
	if key != "trace_id = $3 AND " && f.GetTraceId() != "" {
		add("trace_id", "=", f.GetTraceId())
	}
	if o := f.GetOutcome(); o != 0 {
		add("outcome", "=", int32(o))
	}
	// rec_time holds microseconds and a record's time has nanoseconds: the bounds are widened
	// by a microsecond either way (whether the driver or the server truncates or rounds), so
	// that a record within a bound is never ruled out here; the Engine checks the exact time.
	if f.GetSince() != nil {
		add("rec_time", ">=", f.GetSince().AsTime().Add(-time.Microsecond))
	}
	if f.GetUntil() != nil {
		add("rec_time", "<=", f.GetUntil().AsTime().Add(time.Microsecond))
	}
	return key, b.String(), args
}

// newPgReads serves Query and Tail from the records table.
func newPgReads(s *pgStore, authorize rpcserver.Authorizer) *reads {
	return &reads{
		engine: query.NewSourceEngine(pgSource{s}),
		end: func(ctx context.Context) (query.Position, error) {
			conn, err := s.reader(ctx)
			if err != nil {
				return query.Position{}, err
			}
			defer conn.Release()
			var head int64
			if err := conn.QueryRow(ctx, `SELECT seq FROM `+pgHeadTable+` WHERE id`).Scan(&head); err != nil {
				return query.Position{}, fmt.Errorf("read the audit log's head from PostgreSQL: %w", err)
			}
			return query.Position{Seq: uint64(max(head, 0)) + 1}, nil
		},
		wait:      s.notice.wait,
		authorize: authorize,
		closing:   make(chan struct{}),
		tails:     make(map[string]int),
	}
}

// reader acquires a connection of the readers' pool, waiting at most pgReadAcquire: with
// every one busy, a Query or Tail is refused at once as Unavailable rather than waiting as
// long as its caller allows.
func (s *pgStore) reader(ctx context.Context) (*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, pgReadAcquire)
	defer cancel()
	c, err := s.readPool.Acquire(actx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: no PostgreSQL connection for reads within %v (all %d busy, or the database is unreachable)", errUnavailable, pgReadAcquire, pgReadConns)
	}
	return c, nil
}

// committed is the writer's, after a commit: the readers are woken by the poller within
// pgTailWake, not at once, so that a burst of commits makes one round of statements per Tail
// rather than one per commit.
func (s *pgStore) committed() { s.dirty.Store(true) }

// runPoller wakes the readers waiting for commits: within pgTailWake of this replica's
// commits, and every pgTailPoll for other replicas' (not announced here), until the store
// closes.
func (s *pgStore) runPoller() {
	t := time.NewTicker(pgTailWake)
	defer t.Stop()
	ticks, every := 0, int(pgTailPoll/pgTailWake)
	for {
		select {
		case <-t.C:
			ticks++
			if s.dirty.Swap(false) || ticks >= every {
				ticks = 0
				s.notice.poke()
			}
		case <-s.stopPoll:
			return
		}
	}
}
