package auditsvc

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"sync"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/jackc/pgx/v5"
)

// What a replica of the PostgreSQL store checks before it trusts the shared head. The head
// row is not evidence: whoever can write the tables can change records after the last
// checkpoint, recompute the chain and rewrite the head, and a writer or signer that took the
// head as given would continue from it and sign it. The file store's writer keeps its prev in
// memory; a replica here keeps what it can:
//
//   - the records it itself committed (pgMine: their sequence and hash, the last
//     checkpoint-records + max-queue of them), which must still be in the table, unchanged;
//   - the last checkpoint's signed sequence and hash (never the unsigned columns), from
//     which the chain must lead to the head it signs.
//
// The writer checks, at each batch, that the head it locks chains from the last record this
// replica committed (cheap: one comparison). The signer, off the path of appends, walks the
// records from the last checkpoint to the head and checks both. Damage found is logged at
// ERROR ("audit log damaged"), counted in Stats.Breaks (the GatehouseAuditDamaged alert),
// reported by this replica's Verify, and never signed; appends go on (fail open for
// availability, as the file store does after a break: Verify says what happened).

// pgMine is the ring of records this replica committed, in sequence order.
type pgMine struct {
	mu   sync.Mutex
	max  int
	list []pgCommitted // ascending; trimmed to max when it reaches 2*max
}

type pgCommitted struct {
	seq  uint64
	hash string
}

func (m *pgMine) setMax(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.max = max(n, 1)
}

func (m *pgMine) add(seq uint64, hash string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.list = append(m.list, pgCommitted{seq, hash})
	if len(m.list) >= 2*m.max {
		n := copy(m.list, m.list[len(m.list)-m.max:])
		clear(m.list[n:])
		m.list = m.list[:n]
	}
}

// last is the last record this replica committed.
func (m *pgMine) last() (pgCommitted, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.list) == 0 {
		return pgCommitted{}, false
	}
	return m.list[len(m.list)-1], true
}

// after copies the remembered records past seq (at most max of them).
func (m *pgMine) after(seq uint64) map[uint64]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[uint64]string)
	for i := max(len(m.list)-m.max, 0); i < len(m.list); i++ {
		if c := m.list[i]; c.seq > seq {
			out[c.seq] = c.hash
		}
	}
	return out
}

// maxPgDamage bounds the damage a replica remembers for its Verify (and counts: the same
// finding again is neither logged nor counted twice).
const maxPgDamage = 64

// damage records one finding: logged at ERROR, counted in Stats.Breaks, reported by Verify.
// A finding already recorded (the same kind at the same sequence) is ignored, so a signer
// that finds the same damage every tick, against a head that moves on, counts it once.
func (s *pgStore) damage(kind string, seq uint64, reason string) {
	s.damageMu.Lock()
	defer s.damageMu.Unlock()
	for _, d := range s.damaged {
		if d.Kind == kind && d.Seq == seq {
			return
		}
	}
	if len(s.damaged) >= maxPgDamage {
		return
	}
	s.damaged = append(s.damaged, &ChainError{Kind: kind, Segment: PostgresSegment, Seq: seq, Line: seq, Reason: reason})
	s.breaks.Add(1)
	s.logger.Error("audit log damaged", "segment", PostgresSegment, "sequence", seq, "kind", kind, "reason", reason)
}

// damageProblems are the findings, as Verify reports them.
func (s *pgStore) damageProblems() []*auditv1.Problem {
	s.damageMu.Lock()
	defer s.damageMu.Unlock()
	out := make([]*auditv1.Problem, 0, len(s.damaged))
	for _, d := range s.damaged {
		out = append(out, &auditv1.Problem{Kind: d.Kind, Segment: d.Segment, Sequence: d.Seq, Line: d.Line,
			Reason: "found by this replica while appending or signing: " + d.Reason})
	}
	return out
}

// checkHead is the writer's check of the head row it locked: it must be the last record this
// replica committed, or past it (another replica's records since). It says whether the head
// holds.
func (s *pgStore) checkHead(seq uint64, hash string) bool {
	last, ok := s.mine.last()
	switch {
	case !ok || seq > last.seq:
		return true
	case seq < last.seq:
		s.damage(KindCutOff, last.seq, fmt.Sprintf("the head row says sequence %d but this replica committed sequence %d: records were cut off and the head rewritten", seq, last.seq))
	case hash != last.hash:
		s.damage(KindAnchorMismatch, seq, fmt.Sprintf("the head row's hash at sequence %d is not the one this replica committed: the record was changed and the head rewritten", seq))
	default:
		return true
	}
	return false
}

// checkChain is the signer's walk, on the readers' pool: the records (lastSeq, headSeq] must
// be present, each chaining to the one before from lastHash (the last checkpoint's signed
// hash), ending at headHash; and each record this replica committed in that range (mine)
// must have the hash it committed. It reads a page at a time; the range is what was appended
// since the last checkpoint, about checkpoint-records plus the replicas' queues. It returns
// false (after recording the damage) when the head must not be signed.
func (s *pgStore) checkChain(ctx context.Context, lastSeq uint64, lastHash string, headSeq uint64, headHash string, mine map[uint64]string) (bool, error) {
	h := sha256.New()
	prev := []byte(lastHash)
	cur := lastSeq
	for cur < headSeq {
		rows, err := s.readPool.Query(ctx, `SELECT seq, line FROM `+pgRecordsTable+` WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT `+strconv.Itoa(pgVerifyPage),
			int64(cur), int64(headSeq))
		if err != nil {
			return false, fmt.Errorf("read the records since the last checkpoint: %w", err)
		}
		n := 0
		bad := ""
		var badSeq uint64
		kind := KindBroken
		for rows.Next() {
			var rowSeq int64
			var line []byte
			if err := rows.Scan(&rowSeq, &line); err != nil {
				rows.Close()
				return false, fmt.Errorf("read the records since the last checkpoint: %w", err)
			}
			n++
			seq := uint64(rowSeq)
			if seq != cur+1 {
				bad, badSeq = fmt.Sprintf("records %d to %d are missing below the head row (sequence %d)", cur+1, seq-1, headSeq), cur+1
				break
			}
			if len(line) > maxLineBytes {
				bad, badSeq = fmt.Sprintf("record %d is longer than %d bytes", seq, maxLineBytes), seq
				break
			}
			hash, _, reason := verifyLine(h, line, seq, prev)
			if reason != "" {
				bad, badSeq = fmt.Sprintf("record %d does not chain from the last checkpoint (sequence %d): %s", seq, lastSeq, reason), seq
				break
			}
			if want, ok := mine[seq]; ok && want != string(hash) {
				bad, badSeq = fmt.Sprintf("record %d is not the one this replica committed: it was changed and its chain recomputed", seq), seq
				kind = KindCheckpointMismatch
				break
			}
			prev, cur = append(prev[:0], hash...), seq
		}
		rows.Close()
		if bad != "" {
			s.damage(kind, badSeq, bad)
			return false, nil
		}
		if err := rows.Err(); err != nil {
			return false, fmt.Errorf("read the records since the last checkpoint: %w", err)
		}
		if n == 0 {
			s.damage(KindCutOff, cur+1, fmt.Sprintf("the head row says sequence %d but the records end at %d: records were cut off", headSeq, cur))
			return false, nil
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
	if string(prev) != headHash {
		s.damage(KindAnchorMismatch, headSeq, fmt.Sprintf("the head row's hash at sequence %d is not the chain's from the last checkpoint (sequence %d)", headSeq, lastSeq))
		return false, nil
	}
	for seq := range mine {
		if seq > headSeq {
			s.damage(KindCutOff, seq, fmt.Sprintf("this replica committed sequence %d but the head row says %d: records were cut off and the head rewritten", seq, headSeq))
			return false, nil
		}
	}
	return true, nil
}

// checkAnchor compares, at open, the anchored checkpoint with the table: it must be the
// postgres store's, at a sequence the head reaches, with the hash the record there has. A
// mismatch (the table wiped, cut or replaced, a record up to it changed) is damage: logged at
// ERROR and counted, and the service starts anyway, as the file store does.
func (s *pgStore) checkAnchor(ctx context.Context, anchor Anchor) error {
	actx, cancel := context.WithTimeout(ctx, anchorTimeout)
	anchored, err := anchor.Load(actx)
	cancel()
	if err != nil {
		return fmt.Errorf("load the audit log's anchor: %w", err)
	}
	if anchored == nil {
		return nil
	}
	ctx, cancel = context.WithTimeout(ctx, s.timeout)
	defer cancel()
	seq := anchored.GetSequence()
	if anchored.GetSegment() != PostgresSegment {
		s.damage(KindAnchorMismatch, seq, fmt.Sprintf("the anchor names sequence %d of %q, not of this store", seq, anchored.GetSegment()))
		return nil
	}
	var head int64
	if err := s.readPool.QueryRow(ctx, `SELECT seq FROM `+pgHeadTable+` WHERE id`).Scan(&head); err != nil {
		return fmt.Errorf("read the audit log's head: %w", err)
	}
	var line []byte
	err = s.readPool.QueryRow(ctx, `SELECT line FROM `+pgRecordsTable+` WHERE seq = $1 AND length(line) <= $2`, int64(seq), maxLineBytes).Scan(&line)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read the anchored record: %w", err)
	}
	switch {
	case head < 0 || seq > uint64(head):
		s.damage(KindCutOff, seq, fmt.Sprintf("the head anchored outside the log is sequence %d but the log ends at %d: records were cut off or the table replaced", seq, head))
	case line == nil:
		s.damage(KindCutOff, seq, fmt.Sprintf("the head anchored outside the log is sequence %d, which the table does not hold", seq))
	case string(storedHash(line)) != anchored.GetHash():
		s.damage(KindAnchorMismatch, seq, fmt.Sprintf("the head anchored outside the log (sequence %d, hash %s) is not in it: a record up to it was changed", seq, anchored.GetHash()))
	}
	return nil
}
