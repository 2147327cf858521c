package auditsvc

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The PostgreSQL store keeps the log in two tables that several auditsvc replicas share:
//
//	gatehouse_audit_records (seq bigint PRIMARY KEY, line bytea)  one row per record
//	gatehouse_audit_head    (id boolean PRIMARY KEY, seq, hash)   one row: the chain's head
//
// line is exactly the file store's line without its newline (appendLine): the same canonical
// encoding and chain hash, so a record reads and verifies the same from either store. An
// append transaction locks the head row (SELECT … FOR UPDATE): replicas take turns, each
// chaining its batch to the head the previous one left, so there is one chain and one
// sequence. Each replica commits what queued while it waited as one transaction (group
// commit); a failed transaction rolls back and refuses the whole batch (fail closed).
const (
	pgRecordsTable = "gatehouse_audit_records"
	pgHeadTable    = "gatehouse_audit_head"
	// pgSchemaLock is the advisory lock key that serializes schema creation: CREATE TABLE IF
	// NOT EXISTS run by two first starts at once can fail on the catalog's unique index.
	pgSchemaLock = 0x6761746568617564 // "gatehaud"
	// PostgresSegment is the segment name Verify reports for the PostgreSQL store: problems
	// name the record's sequence (also in the line field).
	PostgresSegment = "postgres:" + pgRecordsTable
	// pgVerifyPage is how many rows Verify reads per query.
	pgVerifyPage = 1000
)

// Defaults and bounds of the PostgreSQL store.
const (
	defaultPostgresConns   = 4
	maxPostgresConns       = 256
	defaultPostgresTimeout = 10 * time.Second
	maxPostgresTimeout     = 5 * time.Minute
)

// The stores Config.Store names.
const (
	StoreFile     = "file"
	StorePostgres = "postgres"
)

// pgStore is the PostgreSQL store: a bounded queue (the file store's limits) and one writer
// goroutine that commits up to maxBatch queued records per transaction.
type pgStore struct {
	pool     *pgxpool.Pool
	readPool *pgxpool.Pool // Query and Tail's (pgread.go)
	notice   commitNotice  // poked by the poller: after commits (coalesced), and every pgTailPoll
	dirty    atomic.Bool   // a commit since the poller's last poke
	stopPoll chan struct{}
	logger   *slog.Logger
	timeout  time.Duration // one commit, start to end

	maxBatch, maxQueue, maxQueueBytes int

	idPrefix  string
	idCounter atomic.Uint64

	mu          sync.Mutex
	closed      bool
	queue       []*pending
	queued      int // records queued or in the batch being committed
	queuedBytes int
	waiting     int           // appends waiting for room
	room        chan struct{} // closed (and replaced) when a commit frees room while appends wait
	wake        chan struct{} // capacity 1: something was queued, or the store closed
	done        chan struct{} // closed when the writer has exited

	commits      atomic.Uint64
	lostDeferred atomic.Uint64
	// ckpt signs the head (pgcheckpoint.go); nil without a signing key.
	ckpt                            *pgCheckpointer
	checkpoints, checkpointFailures atomic.Uint64
	writeFault                      atomic.Pointer[error]
	// mine is what this replica committed, damaged what it found wrong with the shared log
	// (pgdamage.go); breaks counts the findings, anchorAhead the anchor's refusals in a row.
	mine        pgMine
	damageMu    sync.Mutex
	damaged     []*ChainError
	breaks      atomic.Uint64
	anchorAhead atomic.Uint64
	// backfilled: the filter columns' migration is done (pgmigrate.go); migrated is closed
	// when its goroutine exits.
	backfilled atomic.Bool
	migrated   chan struct{}
	metrics    *telemetry.AuditMetrics

	// The writer's.
	h   hashWriter
	buf []byte
}

// pgPoolConfig parses dsn and applies the store's bounds: the pool size, and per-session
// statement and idle-in-transaction timeouts so that no statement or abandoned transaction
// (the head's lock held) outlives timeout. Commits are synchronous: acknowledged records are
// durable on the server.
func pgPoolConfig(dsn string, conns int, timeout time.Duration) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN is a secret: pgx's message does not repeat it, but say no more than that.
		return nil, errors.New("the PostgreSQL DSN does not parse")
	}
	pc.MaxConns = int32(conns)
	pc.ConnConfig.ConnectTimeout = timeout
	ms := strconv.FormatInt(timeout.Milliseconds(), 10)
	rp := pc.ConnConfig.RuntimeParams
	rp["statement_timeout"] = ms
	rp["lock_timeout"] = ms
	rp["idle_in_transaction_session_timeout"] = ms
	rp["synchronous_commit"] = "on"
	rp["application_name"] = "gatehouse-auditsvc"
	return pc, nil
}

// openPostgres connects, creates the schema if absent and returns the store, not started.
func openPostgres(ctx context.Context, dsn string, conns int, timeout time.Duration, lim limits, logger *slog.Logger) (*pgStore, error) {
	pc, err := pgPoolConfig(dsn, conns, timeout)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	rc, err := pgPoolConfig(dsn, pgReadConns, timeout)
	if err != nil {
		pool.Close()
		return nil, err
	}
	rc.ConnConfig.RuntimeParams["application_name"] = "gatehouse-auditsvc-reads"
	readPool, err := pgxpool.NewWithConfig(ctx, rc)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := createSchema(ctx, pool); err != nil {
		pool.Close()
		readPool.Close()
		return nil, err
	}
	s := &pgStore{
		pool: pool, readPool: readPool, stopPoll: make(chan struct{}), logger: logger, timeout: timeout,
		maxBatch: lim.maxBatch, maxQueue: lim.maxQueue, maxQueueBytes: lim.maxQueueBytes,
		idPrefix: newIDPrefix(),
		room:     make(chan struct{}),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		h:        sha256.New(),
		migrated: make(chan struct{}),
	}
	s.mine.setMax(lim.maxQueue + 1)
	return s, nil
}

// createSchema creates the tables and the head row if absent, in one transaction under an
// advisory lock, so that replicas starting together do not race on the catalog.
func createSchema(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			`SELECT pg_advisory_xact_lock(` + strconv.FormatInt(pgSchemaLock, 10) + `)`,
			`CREATE TABLE IF NOT EXISTS ` + pgRecordsTable + ` (seq bigint PRIMARY KEY CHECK (seq > 0), line bytea NOT NULL)`,
			`CREATE TABLE IF NOT EXISTS ` + pgHeadTable + ` (id boolean PRIMARY KEY DEFAULT true CHECK (id), seq bigint NOT NULL, hash text NOT NULL)`,
			`INSERT INTO ` + pgHeadTable + ` (id, seq, hash) VALUES (true, 0, '` + string(genesis) + `') ON CONFLICT (id) DO NOTHING`,
			`CREATE TABLE IF NOT EXISTS ` + pgCheckpointsTable + ` (idx bigint PRIMARY KEY CHECK (idx > 0), seq bigint NOT NULL, hash text NOT NULL, checkpoint bytea NOT NULL)`,
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		// The filter columns (pgread.go), added once: ALTER TABLE and CREATE INDEX lock the
		// table against appends (and wait for a running Verify) even when there is nothing
		// to do, so they run only when the columns are missing.
		var have bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = 'rec_time')`,
			pgRecordsTable).Scan(&have); err != nil {
			return err
		}
		if have {
			return nil
		}
		for _, stmt := range pgSchemaColumns {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create the audit tables in PostgreSQL: %w", err)
	}
	return nil
}

// nextID is a record id, as the file store's (chainLog.nextID): this open's random prefix,
// then a counter.
func (s *pgStore) nextID() string {
	var b [32]byte
	n := s.idCounter.Add(1)
	const digits = "0123456789abcdef"
	for i := 31; i >= 16; i-- {
		b[i] = digits[n&0xf]
		n >>= 4
	}
	copy(b[:16], s.idPrefix)
	return string(b[:])
}

func (s *pgStore) start() {
	go s.run()
	go s.runPoller()
	go s.migrate()
}

// append queues record; unless deferred it waits until its transaction committed and returns
// its sequence and hash. As chainLog.append.
func (s *pgStore) append(ctx context.Context, record []byte, rec *auditv1.Record, deferred bool) (uint64, string, error) {
	p := &pending{record: record, callID: rec.GetCallId(), deferred: deferred, cols: columnsOf(rec)}
	if !deferred {
		p.done = make(chan struct{})
	}
	if err := s.enqueue(ctx, p); err != nil {
		return 0, "", err
	}
	if deferred {
		return 0, "", nil
	}
	select {
	case <-p.done:
		return p.seq, p.hash, p.err
	case <-ctx.Done():
		return 0, "", ctx.Err()
	}
}

// sync waits until everything queued before it is committed.
func (s *pgStore) sync(ctx context.Context) error {
	p := &pending{done: make(chan struct{})}
	if err := s.enqueue(ctx, p); err != nil {
		return err
	}
	return p.synced(ctx, &s.lostDeferred)
}

// enqueue adds p once there is room (the queue's bounds in records and bytes), or fails when
// the store is closed or ctx ends.
func (s *pgStore) enqueue(ctx context.Context, p *pending) error {
	p.queued = time.Now()
	s.mu.Lock()
	for {
		if s.closed {
			s.mu.Unlock()
			return errClosed
		}
		if s.queued == 0 || (s.queued < s.maxQueue && s.queuedBytes+len(p.record) <= s.maxQueueBytes) {
			break
		}
		room := s.room
		s.waiting++
		s.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			s.mu.Lock()
			s.waiting--
			s.mu.Unlock()
			return fmt.Errorf("wait for room in the audit queue: %w", ctx.Err())
		}
		s.mu.Lock()
		s.waiting--
	}
	s.queue = append(s.queue, p)
	s.queued++
	s.queuedBytes += len(p.record)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// run is the writer: it commits whatever queued, up to maxBatch records a transaction, while
// the previous transaction ran (group commit: under load, one transaction and one lock of
// the head carry many records). It exits once the store is closed and the queue is empty.
func (s *pgStore) run() {
	defer close(s.done)
	batch := make([]*pending, 0, s.maxBatch)
	for {
		s.mu.Lock()
		for len(s.queue) == 0 {
			if s.closed {
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			<-s.wake
			s.mu.Lock()
		}
		n := min(len(s.queue), s.maxBatch)
		batch = append(batch[:0], s.queue[:n]...)
		rest := copy(s.queue, s.queue[n:])
		clear(s.queue[rest:])
		s.queue = s.queue[:rest]
		s.mu.Unlock()

		s.metrics.Batch(n)
		bytes := 0
		for _, p := range batch {
			bytes += len(p.record)
		}
		s.commit(batch)
		clear(batch)

		s.mu.Lock()
		s.queued -= n
		s.queuedBytes -= bytes
		if s.waiting > 0 {
			close(s.room)
			s.room = make(chan struct{})
		}
		s.mu.Unlock()
	}
}

// commit writes batch in one transaction: lock the head, chain each record to it, insert
// them, move the head. On success each is acknowledged with its sequence and hash; on any
// failure the transaction rolls back (nothing of the batch remains), every waiter gets
// errUnavailable and every deferred record is counted and logged as lost. The store stays
// usable: the next batch starts from the head in the database.
func (s *pgStore) commit(batch []*pending) {
	records := 0
	for _, p := range batch {
		if p.record != nil {
			records++
		}
	}
	var err error
	if records > 0 {
		err = s.write(batch, records)
	}
	if err != nil {
		s.logger.Error("audit commit to PostgreSQL failed; the batch is refused", "records", records, "err", err)
		err = fmt.Errorf("%w: commit to PostgreSQL: %w", errUnavailable, err)
		var lost []string
		for _, p := range batch {
			if p.deferred {
				lost = append(lost, p.callID)
			}
		}
		if len(lost) > 0 {
			s.lostDeferred.Add(uint64(len(lost)))
			s.logger.Error("deferred audit records lost: their callers were answered before the commit failed", "records", len(lost), "call_ids", lost, "err", err)
		}
	} else if records > 0 {
		s.commits.Add(1)
		var head uint64 // the last record's sequence: the head this commit left
		for _, p := range batch {
			if p.record != nil {
				head = p.seq
			}
		}
		for _, p := range batch {
			if p.record != nil {
				s.mine.add(p.seq, p.hash)
			}
		}
		s.noteHead(head)
		s.committed()
	}
	for _, p := range batch {
		if err != nil {
			p.err, p.seq, p.hash = err, 0, ""
		}
		if !p.deferred {
			close(p.done)
		}
	}
}

// write is commit's transaction.
func (s *pgStore) write(batch []*pending, records int) error {
	if f := s.writeFault.Load(); f != nil {
		return *f
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var head int64
		var prevHash string
		if err := tx.QueryRow(ctx, `SELECT seq, hash FROM `+pgHeadTable+` WHERE id FOR UPDATE`).Scan(&head, &prevHash); err != nil {
			return fmt.Errorf("lock the head: %w", err)
		}
		if head < 0 || len(prevHash) != hashHexLen {
			return fmt.Errorf("the head row is malformed (sequence %d, hash of %d bytes)", head, len(prevHash))
		}
		// A head that does not follow from this replica's last record is damage: recorded,
		// and the batch goes on from the head as it is (the gateway keeps serving; Verify
		// and the unsigned checkpoints say what happened).
		s.checkHead(uint64(head), prevHash)
		seqs := make([]int64, 0, records)
		lines := make([][]byte, 0, records)
		var cols pgBatchColumns
		buf := s.buf[:0]
		prev := []byte(prevHash)
		seq := uint64(head)
		for _, p := range batch {
			if p.record == nil {
				continue
			}
			seq++
			start := len(buf)
			buf, prev = appendLine(s.h, buf, seq, prev, p.record)
			seqs = append(seqs, int64(seq))
			cols.add(p.cols)
			lines = append(lines, buf[start:len(buf)-1:len(buf)-1]) // without the newline
			p.seq, p.hash = seq, string(prev)
		}
		if cap(buf) <= maxKeptBuffer {
			s.buf = buf
		}
		if _, err := tx.Exec(ctx, pgInsert, append([]any{seqs, lines}, cols.args()...)...); err != nil {
			return fmt.Errorf("insert %d records: %w", records, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE `+pgHeadTable+` SET seq = $1, hash = $2 WHERE id`, int64(seq), string(prev)); err != nil {
			return fmt.Errorf("move the head: %w", err)
		}
		return nil
	})
}

// close stops accepting records, commits those queued, and closes the pool.
func (s *pgStore) close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		go func() { <-s.done; s.stopCheckpointer(); s.closePools() }()
		return fmt.Errorf("close audit log: %w", ctx.Err())
	}
	s.stopCheckpointer()
	s.closePools()
	return nil
}

// abort closes a store whose writer never started.
func (s *pgStore) abort() {
	s.pool.Close()
	s.readPool.Close()
}

// closePools stops the poller and closes the pools (the writer is done).
func (s *pgStore) closePools() {
	close(s.stopPoll)
	<-s.migrated
	s.pool.Close()
	s.readPool.Close()
}

func (s *pgStore) queuedRecords() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued
}

func (s *pgStore) stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{LostDeferred: s.lostDeferred.Load(), Commits: s.commits.Load(), Queued: s.queued, QueuedBytes: s.queuedBytes, Breaks: s.breaks.Load(),
		Checkpoints: s.checkpoints.Load(), CheckpointFailures: s.checkpointFailures.Load()}
}

func (s *pgStore) failWrites(err error) {
	if err == nil {
		s.writeFault.Store(nil)
		return
	}
	s.writeFault.Store(&err)
}

// verify is verifyPostgres of the tables, plus the damage this replica found (which the
// tables alone may no longer show: a chain recomputed after the last checkpoint).
func (s *pgStore) verify(ctx context.Context, opts VerifyOptions) (*auditv1.VerifyResponse, error) {
	// A connection of its own, in neither pool: the walk holds one repeatable-read snapshot
	// for as long as it reads the whole log, which must not take a connection an append (even
	// with --postgres-conns 1) or a Query waits for. Service.Verify runs one at a time.
	cc := s.pool.Config().ConnConfig.Copy()
	cc.RuntimeParams["application_name"] = "gatehouse-auditsvc-verify"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	resp, err := verifyPostgres(ctx, conn, opts)
	if err != nil {
		return nil, err
	}
	resp.Problems = append(resp.Problems, s.damageProblems()...)
	return resp, nil
}
