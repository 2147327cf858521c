package query

import (
	"context"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
)

// MaxBatch is the most entries one Follow send carries.
const MaxBatch = 100

// followScan is the most lines one pass of Follow reads before it sends what it has: a
// follow from an old sequence catches up in bounded steps.
const followScan = 4096

// Follow sends, in batches of at most MaxBatch, every record at or after pos that matches
// filter, as it is committed, until ctx ends or send fails. wake returns a channel closed
// when more may have been committed; it is taken before each pass, so that nothing committed
// during a pass is missed.
func (e *Engine) Follow(ctx context.Context, filter *auditv1.Filter, pos Position, wake func() <-chan struct{}, send func([]*auditv1.Entry) error) error {
	m, err := newMatcher(filter)
	if err != nil {
		return err
	}
	batch := make([]*auditv1.Entry, 0, MaxBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := send(batch)
		batch = make([]*auditv1.Entry, 0, MaxBatch)
		return err
	}
	for {
		more := wake()
		next, eof, err := e.r.Scan(ctx, m.f, pos, followScan, func(seq uint64, raw []byte, np Position) (bool, error) {
			rec, ok, err := m.match(raw)
			if err != nil || !ok {
				return err == nil, err
			}
			batch = append(batch, &auditv1.Entry{Sequence: seq, Record: rec})
			if len(batch) == MaxBatch {
				return true, flush()
			}
			return true, nil
		})
		if err != nil {
			return err
		}
		pos = next
		if err := flush(); err != nil {
			return err
		}
		if !eof {
			continue
		}
		select {
		case <-more:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
