package auditsvc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protojson"
)

// txBeginner is what Verify needs of a database handle: a pool (the service's) or one
// connection (gatehouse audit verify offline).
type txBeginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// VerifyPostgres verifies the log a PostgreSQL store keeps in the database dsn names, as
// VerifyDir does a directory (the offline `gatehouse audit verify --postgres-dsn-file`). It
// connects with a bounded timeout and reads in one read-only snapshot.
func VerifyPostgres(ctx context.Context, dsn string, opts VerifyOptions) (*auditv1.VerifyResponse, error) {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("the PostgreSQL DSN does not parse")
	}
	cc.ConnectTimeout = defaultPostgresTimeout
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return verifyPostgres(ctx, conn, opts)
}

// verifyPostgres walks every record in sequence order, in pages, within one repeatable-read
// snapshot (appends go on meanwhile, unseen), and checks each line as the file store's
// verifyLine does: its sequence, its prev against the record before, its hash. After a
// broken record it goes on from that record's own prev and hash, so one changed record is
// reported once, by its sequence, and the records after it are still checked. At the end,
// the head row must be the last record: a head ahead of the records is cut_off (records
// removed from the end); a head that differs is anchor_mismatch. Whoever can write the
// tables can rewrite the head too: the signed checkpoints and the anchor then show what the
// chain cannot (verifyPgCheckpoints).
func verifyPostgres(ctx context.Context, db txBeginner, opts VerifyOptions) (*auditv1.VerifyResponse, error) {
	// The anchor is read before the snapshot begins: a replica anchors a checkpoint after it
	// committed, so whatever the anchor names then is in the snapshot.
	var anchored *auditv1.Checkpoint
	if opts.Anchor != nil {
		var err error
		if anchored, err = opts.Anchor.Load(ctx); err != nil {
			return nil, err
		}
	}
	tx, err := db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var headSeq int64
	var headHash string
	if err := tx.QueryRow(ctx, `SELECT seq, hash FROM `+pgHeadTable+` WHERE id`).Scan(&headSeq, &headHash); err != nil {
		return nil, fmt.Errorf("read the audit log's head from PostgreSQL: %w", err)
	}
	resp := &auditv1.VerifyResponse{Segments: []string{PostgresSegment}}
	var bad problems
	report := func(seq uint64, kind, reason string) {
		bad.add(&ChainError{Kind: kind, Segment: PostgresSegment, Seq: seq, Line: seq, Reason: reason})
	}
	// The filter columns, compared with each line (a database no replica with them opened yet
	// has none).
	var cols bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = 'rec_time')`,
		pgRecordsTable).Scan(&cols); err != nil {
		return nil, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
	}
	selectCols := `NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::integer, NULL::timestamptz`
	if cols {
		selectCols = `session_id, principal, tenant, server, tool, trace_id, call_id, outcome, rec_time`
	}
	h := sha256.New()
	prev := append([]byte(nil), genesis...)
	var last uint64 // the last row's sequence
	resync := false // the previous row broke: take this one's prev as given
	for {
		rows, err := tx.Query(ctx, `SELECT seq, line, `+selectCols+` FROM `+pgRecordsTable+` WHERE seq > $1 ORDER BY seq LIMIT `+strconv.Itoa(pgVerifyPage), int64(last))
		if err != nil {
			return nil, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
		}
		n := 0
		for rows.Next() {
			var rowSeq int64
			var line []byte
			var c pgNullColumns
			if err := rows.Scan(&rowSeq, &line, &c.session, &c.principal, &c.tenant, &c.server, &c.tool, &c.trace, &c.call, &c.outcome, &c.time); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
			}
			n++
			seq := uint64(rowSeq)
			if seq != last+1 {
				report(last+1, KindBroken, fmt.Sprintf("records %d to %d are missing", last+1, seq-1))
				resync = true
			}
			last = seq
			if len(line) > maxLineBytes {
				report(seq, KindBroken, fmt.Sprintf("line longer than %d bytes", maxLineBytes))
				resync, prev = true, nil
				continue
			}
			want := prev
			if resync {
				if p, ok := linePrev(line); ok {
					want = p
				}
			}
			hash, _, reason := verifyLine(h, line, seq, want)
			if reason != "" {
				report(seq, KindBroken, reason)
				// Go on from what the line says its hash is, if it says.
				resync, prev = true, storedHash(line)
				continue
			}
			resync, prev = false, hash
			resp.Records++
			if col := c.mismatch(line); col != "" {
				report(seq, KindColumnMismatch, fmt.Sprintf("record %d's %s column is not what its line says: the column was edited, so filters by it may miss or take the record", seq, col))
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
		}
		if n < pgVerifyPage {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	switch {
	case uint64(headSeq) > last:
		report(last+1, KindCutOff, fmt.Sprintf("the head row says the log ends at sequence %d but the last record is %d: records were cut off", headSeq, last))
	case uint64(headSeq) < last:
		report(uint64(headSeq)+1, KindAnchorMismatch, fmt.Sprintf("the head row says the log ends at sequence %d but records go on to %d", headSeq, last))
	case last > 0 && !bytes.Equal(prev, []byte(headHash)):
		report(last, KindAnchorMismatch, "the head row's hash is not the last record's")
	}
	if err := verifyPgCheckpoints(ctx, tx, opts, anchored, last, resp, &bad); err != nil {
		return nil, err
	}
	for _, p := range bad.list {
		resp.Problems = append(resp.Problems, &auditv1.Problem{Kind: p.Kind, Segment: p.Segment, Sequence: p.Seq, Line: p.Line, Reason: p.Reason})
	}
	if bad.dropped > 0 {
		resp.Notes = append(resp.Notes, fmt.Sprintf("%d more problems not listed", bad.dropped))
	}
	if opts.PublicKey != nil {
		resp.PublicKey = hex.EncodeToString(opts.PublicKey)
	} else {
		resp.Notes = append(resp.Notes, "no trusted public key: checkpoints were checked against the key each names, which shows accidental damage, not an edit that recomputes the chain and signs with another key")
	}
	return resp, nil
}

// verifyPgCheckpoints checks, in the snapshot, every checkpoint row in index order (in pages)
// and the anchored checkpoint against the records: each must verify (against
// opts.PublicKey), follow the one before it in the chain of checkpoints, and sign the hash
// the record at its sequence has. The record's own stored hash is what the walk verified
// where its line is intact (a damaged line is already reported as broken). A checkpoint that
// signs another hash shows a record up to its sequence changed with its chain recomputed; one
// past the last record shows records cut off (even if the head row was rewritten to match).
// With a PublicKey and CheckpointRecords, too many records after the last matching
// checkpoint is unsigned_tail (missing_checkpoints without any): checkpoints were removed.
func verifyPgCheckpoints(ctx context.Context, tx pgx.Tx, opts VerifyOptions, anchored *auditv1.Checkpoint, last uint64, resp *auditv1.VerifyResponse, bad *problems) error {
	var (
		chainIndex  uint64 // the last valid checkpoint's index and hash
		chainHash   string
		lastMatched uint64
		after       int64 // the page's last row
		exists      bool
	)
	// A database a replica of before checkpoints has not opened since has no such table.
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, pgCheckpointsTable).Scan(&exists); err != nil {
		return fmt.Errorf("read the audit checkpoints from PostgreSQL: %w", err)
	}
	// judge says what checkpoint c (a row's, or the anchor) says of the records.
	judge := func(c *auditv1.Checkpoint, what string, line []byte, found bool) (kind, reason string) {
		seq := c.GetSequence()
		switch {
		case c.GetSegment() != PostgresSegment:
			return KindCheckpointMismatch, fmt.Sprintf("%s signs sequence %d of %q, not of this store", what, seq, c.GetSegment())
		case !found && seq > last:
			return KindCutOff, fmt.Sprintf("%s signs sequence %d but the last record is %d: records were cut off", what, seq, last)
		case !found:
			return "", "" // a missing record, already reported as broken
		case string(storedHash(line)) != c.GetHash():
			return KindCheckpointMismatch, fmt.Sprintf("%s signs hash %s for sequence %d but the log has another: a record after sequence %d, up to %d, was changed and the chain recomputed", what, c.GetHash(), seq, lastMatched, seq)
		}
		lastMatched = max(lastMatched, seq)
		return "", ""
	}
	for exists {
		type row struct {
			idx int64
			cp  []byte // nil: longer than maxCheckpointLine
		}
		rows, err := tx.Query(ctx, `SELECT idx, CASE WHEN length(checkpoint) <= $1 THEN checkpoint END FROM `+pgCheckpointsTable+` WHERE idx > $2 ORDER BY idx LIMIT `+strconv.Itoa(pgVerifyPage),
			maxCheckpointLine, after)
		if err != nil {
			return fmt.Errorf("read the audit checkpoints from PostgreSQL: %w", err)
		}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			return x, r.Scan(&x.idx, &x.cp)
		})
		if err != nil {
			return fmt.Errorf("read the audit checkpoints from PostgreSQL: %w", err)
		}
		cps := make([]*auditv1.Checkpoint, len(page))
		var seqs []int64
		for i, r := range page {
			after = r.idx
			what := fmt.Sprintf("checkpoint %d", r.idx)
			if r.cp == nil {
				bad.add(&ChainError{Kind: KindBadSignature, Segment: PostgresCheckpointsSegment, Line: uint64(r.idx),
					Reason: fmt.Sprintf("%s is longer than %d bytes", what, maxCheckpointLine)})
				continue
			}
			var c auditv1.Checkpoint
			if err := protojson.Unmarshal(r.cp, &c); err != nil {
				bad.add(&ChainError{Kind: KindBadSignature, Segment: PostgresCheckpointsSegment, Line: uint64(r.idx),
					Reason: fmt.Sprintf("%s does not parse: %v", what, err)})
				continue
			}
			if err := checkSignature(&c, opts.PublicKey); err != nil {
				bad.add(&ChainError{Kind: KindBadSignature, Segment: PostgresCheckpointsSegment, Seq: c.GetSequence(), Line: uint64(r.idx),
					Reason: fmt.Sprintf("%s of sequence %d: %v", what, c.GetSequence(), err)})
				continue
			}
			switch {
			case c.GetIndex() != uint64(r.idx) || c.GetIndex() != chainIndex+1:
				bad.add(&ChainError{Kind: KindMissingCheckpoints, Segment: PostgresCheckpointsSegment, Seq: c.GetSequence(), Line: uint64(r.idx),
					Reason: fmt.Sprintf("%s is signed as number %d of the chain but follows number %d: checkpoints were removed or moved", what, c.GetIndex(), chainIndex)})
			case c.GetPrev() != chainHash:
				bad.add(&ChainError{Kind: KindMissingCheckpoints, Segment: PostgresCheckpointsSegment, Seq: c.GetSequence(), Line: uint64(r.idx),
					Reason: fmt.Sprintf("%s does not follow the one before it: checkpoints were removed or replaced", what)})
			}
			chainIndex, chainHash = c.GetIndex(), checkpointHash(&c)
			cps[i] = &c
			seqs = append(seqs, int64(c.GetSequence()))
		}
		lines, err := pgLines(ctx, tx, seqs)
		if err != nil {
			return err
		}
		for i, c := range cps {
			if c == nil {
				continue
			}
			line, found := lines[c.GetSequence()]
			if kind, reason := judge(c, fmt.Sprintf("checkpoint %d", page[i].idx), line, found); kind != "" {
				bad.add(&ChainError{Kind: kind, Segment: PostgresSegment, Seq: c.GetSequence(), Line: c.GetSequence(), Reason: reason})
				continue
			} else if found {
				resp.Checkpoints++
				resp.LastCheckpoint = c
			}
		}
		if len(page) < pgVerifyPage {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if anchored != nil {
		resp.Anchor = anchored
		const what = "the head anchored outside the log"
		if err := checkSignature(anchored, opts.PublicKey); err != nil {
			bad.add(&ChainError{Kind: KindBadSignature, Seq: anchored.GetSequence(), Reason: what + ": " + err.Error()})
		} else {
			lines, err := pgLines(ctx, tx, []int64{int64(anchored.GetSequence())})
			if err != nil {
				return err
			}
			line, found := lines[anchored.GetSequence()]
			// The anchor does not stand for the checkpoints: removed ones still show below.
			matched := lastMatched
			kind, reason := judge(anchored, what, line, found)
			lastMatched = matched
			if kind != "" {
				if kind == KindCheckpointMismatch {
					kind = KindAnchorMismatch
				}
				bad.add(&ChainError{Kind: kind, Segment: PostgresSegment, Seq: anchored.GetSequence(), Line: anchored.GetSequence(), Reason: reason})
			}
		}
	}
	if opts.PublicKey != nil && opts.CheckpointRecords > 0 {
		bound := uint64(opts.CheckpointRecords) + uint64(max(opts.Slack, 0))
		switch tail := last - min(lastMatched, last); {
		case lastMatched == 0 && tail > bound:
			bad.add(&ChainError{Kind: KindMissingCheckpoints, Segment: PostgresCheckpointsSegment, Seq: last,
				Reason: fmt.Sprintf("the log has %d records and no valid checkpoint, though one is signed every %d records: the checkpoints were removed, and an edit with its chain recomputed would not show", last, opts.CheckpointRecords)})
		case tail > bound:
			bad.add(&ChainError{Kind: KindUnsignedTail, Segment: PostgresCheckpointsSegment, Seq: lastMatched + 1,
				Reason: fmt.Sprintf("%d records follow the last valid checkpoint (sequence %d), more than the %d (plus %d) between checkpoints: checkpoints were removed, and an edit after sequence %d with its chain recomputed would not show", tail, lastMatched, opts.CheckpointRecords, opts.Slack, lastMatched)})
		}
	}
	return nil
}

// pgLines reads the lines of the records at seqs (at most a page), by sequence.
func pgLines(ctx context.Context, tx pgx.Tx, seqs []int64) (map[uint64][]byte, error) {
	out := make(map[uint64][]byte, len(seqs))
	if len(seqs) == 0 {
		return out, nil
	}
	rows, err := tx.Query(ctx, `SELECT seq, line FROM `+pgRecordsTable+` WHERE seq = ANY($1) AND length(line) <= $2`, seqs, maxLineBytes)
	if err != nil {
		return nil, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var line []byte
		if err := rows.Scan(&seq, &line); err != nil {
			return nil, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
		}
		out[uint64(seq)] = line
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
	}
	return out, nil
}

// linePrev is the prev a well-formed line names, or false.
func linePrev(line []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(seqPrefix))
	if !ok {
		return nil, false
	}
	i := bytes.IndexByte(rest, ',')
	if i < 0 {
		return nil, false
	}
	rest, ok = bytes.CutPrefix(rest[i:], []byte(prevPrefix))
	if !ok || len(rest) < hashHexLen {
		return nil, false
	}
	return rest[:hashHexLen], true
}

// storedHash is the hash a line ends with, or nil when it has none.
func storedHash(line []byte) []byte {
	if len(line) < tailLen || !bytes.HasSuffix(line, []byte(`"}`)) ||
		!bytes.Equal(line[len(line)-tailLen:len(line)-tailLen+len(hashSuffix)], []byte(hashSuffix)) {
		return nil
	}
	return append([]byte(nil), line[len(line)-tailLen+len(hashSuffix):len(line)-2]...)
}

// pgNullColumns are a row's filter columns as stored (nil: NULL, as rows from before the
// columns have until the backfill, which Verify accepts).
type pgNullColumns struct {
	session, principal, tenant, server, tool, trace, call *string
	outcome                                               *int32
	time                                                  *time.Time
}

// mismatch names the first column that says other than line, or "". A line that does not
// decode is left to the chain's checks. rec_time is compared at the column's microsecond
// precision.
func (c *pgNullColumns) mismatch(line []byte) string {
	rec, ok := lineRecord(line)
	if !ok {
		return ""
	}
	want := columnsOf(rec)
	for _, x := range []struct {
		name string
		got  *string
		want string
	}{
		{"session_id", c.session, want.session}, {"principal", c.principal, want.principal}, {"tenant", c.tenant, want.tenant},
		{"server", c.server, want.server}, {"tool", c.tool, want.tool}, {"trace_id", c.trace, want.trace}, {"call_id", c.call, want.call},
	} {
		if x.got != nil && *x.got != x.want {
			return x.name
		}
	}
	if c.outcome != nil && *c.outcome != want.outcome {
		return "outcome"
	}
	if c.time != nil {
		if d := c.time.Sub(want.time); d <= -time.Microsecond || d >= time.Microsecond {
			return "rec_time"
		}
	}
	return ""
}
