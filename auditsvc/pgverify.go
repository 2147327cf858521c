package auditsvc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"strconv"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/jackc/pgx/v5"
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
// tables can rewrite the head too: without signed checkpoints (not yet kept for this store)
// this shows accidents and careless edits, not a chain recomputed on purpose.
func verifyPostgres(ctx context.Context, db txBeginner, opts VerifyOptions) (*auditv1.VerifyResponse, error) {
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
	h := sha256.New()
	prev := append([]byte(nil), genesis...)
	var last uint64 // the last row's sequence
	resync := false // the previous row broke: take this one's prev as given
	for {
		rows, err := tx.Query(ctx, `SELECT seq, line FROM `+pgRecordsTable+` WHERE seq > $1 ORDER BY seq LIMIT `+strconv.Itoa(pgVerifyPage), int64(last))
		if err != nil {
			return nil, fmt.Errorf("read the audit log from PostgreSQL: %w", err)
		}
		n := 0
		for rows.Next() {
			var rowSeq int64
			var line []byte
			if err := rows.Scan(&rowSeq, &line); err != nil {
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
	for _, p := range bad.list {
		resp.Problems = append(resp.Problems, &auditv1.Problem{Kind: p.Kind, Segment: p.Segment, Sequence: p.Seq, Line: p.Line, Reason: p.Reason})
	}
	if bad.dropped > 0 {
		resp.Notes = append(resp.Notes, fmt.Sprintf("%d more problems not listed", bad.dropped))
	}
	resp.Notes = append(resp.Notes, "PostgreSQL store: no signed checkpoints; the chain and the head row show accidental damage and edits that do not recompute the chain")
	return resp, nil
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
