package auditsvc

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protojson"
)

// Signed checkpoints of the PostgreSQL store. As with files, whoever can write the tables
// can change a record, recompute the chain after it and rewrite the head row: only a
// signature made with a key that is not in the database shows it. Every replica signs the
// shared head with the same key (one key file, given to all of them) and appends the
// checkpoint to
//
//	gatehouse_audit_checkpoints (idx bigint PRIMARY KEY, seq, hash, checkpoint bytea)
//
// where checkpoint is the signed auditv1.Checkpoint as the file store writes a line of
// checkpoints.log (compact protojson; its segment is PostgresSegment), and idx is its index
// in the one chain of checkpoints (each names the previous one's checkpointHash as prev). seq
// and hash repeat what it signs, for SQL; Verify trusts only the signed bytes.
//
// Replicas make one chain, not one each: a replica signs in a transaction that holds an
// advisory lock (pgCheckpointLock), reads the last checkpoint and the head as committed, and
// signs only if the head moved past it. So two replicas never sign for the same index (the
// primary key would refuse the second anyway), and appends never wait for a signature: the
// head row's lock is not taken. The latest checkpoint is then stored in the anchor (etcd,
// forward-only): a replica that signed an older head after another's newer one is refused
// there, which is expected and not a failure.
const (
	pgCheckpointsTable = "gatehouse_audit_checkpoints"
	// PostgresCheckpointsSegment is the segment name Verify reports for a problem of a
	// checkpoint row (its line is the checkpoint's index).
	PostgresCheckpointsSegment = "postgres:" + pgCheckpointsTable
	// pgCheckpointLock is the advisory lock key that serializes signing among replicas.
	pgCheckpointLock = 0x6761746563707473 // "gatecpts"
	// pgCheckpointSlackReplicas is how many replicas' queues Verify allows a live log's
	// checkpoints to lag behind the head beyond CheckpointRecords: while one replica signs,
	// every other one may commit a queue of records.
	pgCheckpointSlackReplicas = 8
	// pgAnchorAheadWarn is how many checkpoints in a row the anchor must refuse as behind it
	// before that is logged at WARN rather than DEBUG.
	pgAnchorAheadWarn = 3
)

// pgCheckpointer signs the shared head every `every` records (counted on the shared
// sequence) or interval, off the path of appends. A failure is logged at ERROR and counted;
// appends go on.
type pgCheckpointer struct {
	key    ed25519.PrivateKey
	anchor Anchor // nil: none
	every  uint64
	signerLoop
	// noted is the head sequence at the last wake (or the last checkpoint seen): the writer
	// wakes the signer when a commit takes the head `every` past it.
	noted atomic.Uint64
}

// startCheckpoints signs the head as the store finds it (another replica, or this one's last
// run, may have stopped before signing its last records), then every `every` records or
// interval.
func (s *pgStore) startCheckpoints(key ed25519.PrivateKey, anchor Anchor, every uint64, interval time.Duration) {
	s.mine.setMax(int(min(every, 1<<24)) + s.maxQueue)
	s.ckpt = &pgCheckpointer{key: key, anchor: anchor, every: every, signerLoop: newSignerLoop(interval)}
	s.checkpoint()
	go s.ckpt.run(s.checkpoint)
}

// stopCheckpointer stops the signer once the writer is done and signs the final head. It is
// called once, by close, before the pool closes.
func (s *pgStore) stopCheckpointer() {
	c := s.ckpt
	if c == nil {
		return
	}
	c.end()
	s.checkpoint()
}

// noteHead is the writer's, after a commit that took the head to seq: it wakes the signer
// every `every` records of the shared sequence.
func (s *pgStore) noteHead(seq uint64) {
	c := s.ckpt
	if c == nil {
		return
	}
	if n := c.noted.Load(); seq > n && seq-n >= c.every {
		c.noted.Store(seq)
		c.poke()
	}
}

// checkpoint signs the committed head if no checkpoint (this replica's or another's) signs
// it yet, and anchors it.
func (s *pgStore) checkpoint() {
	cp, err := s.signHead()
	if err != nil {
		s.checkpointFailures.Add(1)
		s.logger.Error("audit checkpoint not written to PostgreSQL", "err", err)
		return
	}
	if cp == nil {
		return
	}
	s.checkpoints.Add(1)
	if s.ckpt.anchor == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), anchorTimeout)
	defer cancel()
	if err := s.ckpt.anchor.Store(ctx, cp); err == nil {
		s.anchorAhead.Store(0)
	} else {
		if errors.Is(err, ErrAnchorAhead) {
			// Another replica signed and anchored a later head meanwhile: expected now and
			// then. Every time in a row is not: the anchor names a head this database's
			// checkpoints do not reach (a table restored or replaced).
			if n := s.anchorAhead.Add(1); n >= pgAnchorAheadWarn {
				s.logger.Warn("audit checkpoints keep falling behind the anchor: it names a later head than this database's checkpoints reach", "sequence", cp.GetSequence(), "times", n)
			} else {
				s.logger.Debug("audit checkpoint not anchored: a later one is", "sequence", cp.GetSequence())
			}
			return
		}
		s.checkpointFailures.Add(1)
		s.logger.Error("audit checkpoint not anchored", "sequence", cp.GetSequence(), "err", err)
	}
}

// signHead signs the committed head if it holds. First, on the readers' pool and without
// any lock (the walk may be long; appends and other signers go on): the last checkpoint (its
// signed sequence and hash, never the unsigned columns) and the head, and checkChain from the
// one to the other. Then, in a short transaction under the advisory lock: if no other
// replica signed meanwhile, the new checkpoint, chained to the last. nil when there is
// nothing to sign, or when the head does not hold (recorded as damage, not signed).
func (s *pgStore) signHead() (*auditv1.Checkpoint, error) {
	c := s.ckpt
	ctx, cancel := context.WithTimeout(context.Background(), maxPostgresTimeout)
	defer cancel()
	// What this replica committed, taken before the head is read: all of it is at or below
	// that head.
	lastIdx, lastSeq, lastHash, prev, err := s.lastCheckpoint(ctx, s.readPool)
	if err != nil {
		return nil, err
	}
	mine := s.mine.after(lastSeq)
	var headSeq int64
	var headHash string
	if err := s.readPool.QueryRow(ctx, `SELECT seq, hash FROM `+pgHeadTable+` WHERE id`).Scan(&headSeq, &headHash); err != nil {
		return nil, fmt.Errorf("read the head: %w", err)
	}
	switch {
	case lastIdx < 0:
		return nil, nil // the last checkpoint does not verify: recorded as damage
	case headSeq < 0 || len(headHash) != hashHexLen:
		s.damage(KindAnchorMismatch, uint64(max(headSeq, 0)), fmt.Sprintf("the head row is malformed (sequence %d, hash of %d bytes)", headSeq, len(headHash)))
		return nil, nil
	case uint64(headSeq) < lastSeq:
		s.damage(KindCutOff, lastSeq, fmt.Sprintf("the head row says sequence %d but checkpoint %d signs sequence %d: records were cut off and the head rewritten", headSeq, lastIdx, lastSeq))
		return nil, nil
	}
	if ok, err := s.checkChain(ctx, lastSeq, lastHash, uint64(headSeq), headHash, mine); err != nil || !ok {
		return nil, err
	}
	if uint64(headSeq) == lastSeq {
		c.noted.Store(max(c.noted.Load(), lastSeq))
		return nil, nil
	}
	var cp *auditv1.Checkpoint
	tctx, tcancel := context.WithTimeout(ctx, s.timeout)
	defer tcancel()
	err = pgx.BeginFunc(tctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(tctx, `SELECT pg_advisory_xact_lock(`+strconv.FormatInt(pgCheckpointLock, 10)+`)`); err != nil {
			return fmt.Errorf("take the checkpoint lock: %w", err)
		}
		var idx int64
		if err := tx.QueryRow(tctx, `SELECT coalesce(max(idx), 0) FROM `+pgCheckpointsTable).Scan(&idx); err != nil {
			return fmt.Errorf("read the last checkpoint: %w", err)
		}
		if idx != lastIdx {
			return nil // another replica signed meanwhile, after its own checks
		}
		cp = signCheckpoint(c.key, uint64(headSeq), headHash, PostgresSegment, time.Now(), uint64(lastIdx)+1, prev)
		b, err := protojson.Marshal(cp)
		if err != nil {
			return fmt.Errorf("encode the checkpoint: %w", err)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return fmt.Errorf("encode the checkpoint: %w", err)
		}
		if _, err := tx.Exec(tctx, `INSERT INTO `+pgCheckpointsTable+` (idx, seq, hash, checkpoint) VALUES ($1, $2, $3, $4)`,
			int64(cp.GetIndex()), headSeq, headHash, buf.Bytes()); err != nil {
			return fmt.Errorf("insert checkpoint %d: %w", cp.GetIndex(), err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if cp == nil {
		c.noted.Store(max(c.noted.Load(), uint64(headSeq)))
	}
	return cp, nil
}

// lastCheckpoint reads the last checkpoint row and returns its index and what it signs (the
// sequence and hash from the signed bytes) and its checkpointHash (the next one's prev); with
// none, index 0 and the genesis. A last checkpoint that does not parse or verify against this
// replica's key is recorded as damage and returned as index -1: signing after it would cover
// whatever replaced it.
func (s *pgStore) lastCheckpoint(ctx context.Context, db interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (idx int64, seq uint64, hash, prev string, err error) {
	var last []byte
	err = db.QueryRow(ctx, `SELECT idx, CASE WHEN length(checkpoint) <= $1 THEN checkpoint END FROM `+pgCheckpointsTable+` ORDER BY idx DESC LIMIT 1`,
		maxCheckpointLine).Scan(&idx, &last)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, string(genesis), "", nil
	}
	if err != nil {
		return 0, 0, "", "", fmt.Errorf("read the last checkpoint: %w", err)
	}
	var lc auditv1.Checkpoint
	var why string
	switch {
	case last == nil:
		why = fmt.Sprintf("longer than %d bytes", maxCheckpointLine)
	case protojson.Unmarshal(last, &lc) != nil:
		why = "it does not parse"
	default:
		if err := checkSignature(&lc, s.ckpt.key.Public().(ed25519.PublicKey)); err != nil {
			why = err.Error()
		} else if lc.GetIndex() != uint64(idx) || lc.GetSegment() != PostgresSegment || len(lc.GetHash()) != hashHexLen {
			why = fmt.Sprintf("it is signed as number %d of %q", lc.GetIndex(), lc.GetSegment())
		}
	}
	if why != "" {
		s.damage(KindBadSignature, 0, fmt.Sprintf("the last checkpoint (index %d) does not verify (%s): no checkpoint is signed after it", idx, why))
		return -1, 0, "", "", nil
	}
	return idx, lc.GetSequence(), lc.GetHash(), checkpointHash(&lc), nil
}
