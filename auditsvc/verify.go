package auditsvc

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"google.golang.org/protobuf/encoding/protojson"
)

// VerifyOptions say what VerifyDir trusts beyond the files.
type VerifyOptions struct {
	// PublicKey is the key checkpoints must be signed with. Nil: each checkpoint is checked
	// against the key it names, which shows accidental damage only (whoever edits the files
	// can sign with a key of their own); the response then names no trusted key.
	PublicKey ed25519.PublicKey
	// Anchor, when set, holds the head the log must still have.
	Anchor Anchor
	// Live says the log is open for appends: an incomplete last line is a write in
	// progress, not damage.
	Live bool
	// CheckpointRecords is how often the log signs its head (--checkpoint-records). With a
	// PublicKey, more records than CheckpointRecords+Slack after the last valid checkpoint
	// (unsigned_tail), or without any (missing_checkpoints), is a problem: checkpoints were
	// removed, which would hide a record changed with its chain recomputed. 0: not checked.
	CheckpointRecords int
	// Slack is how many records beyond CheckpointRecords the signer may lag: those committed
	// while it signs, and a batch; a live log's queue.
	Slack int
}

// Offline defaults of VerifyOptions: the service's own defaults (--checkpoint-records, and its
// queue of records not yet durable, which may commit while the signer signs).
const (
	DefaultCheckpointRecords = defaultCheckpointRecords
	DefaultCheckpointSlack   = defaultQueueBatches * defaultMaxBatch
)

// maxDeferred bounds the checkpoints Verify holds because the walk passed what they sign
// without meeting it (the damaged part of a segment, records cut off); beyond, they are
// counted.
const maxDeferred = 4096

// segKey orders what a checkpoint signs as the log is walked: segment, then sequence.
type segKey struct {
	seg int
	seq uint64
}

func (a segKey) less(b segKey) bool { return a.seg < b.seg || (a.seg == b.seg && a.seq < b.seq) }

func keyOf(c *auditv1.Checkpoint) segKey {
	i, ok := parseSegment(c.GetSegment())
	if !ok {
		i = maxSegments + 1 // no segment: never met, judged after the walk
	}
	return segKey{i, c.GetSequence()}
}

// problems collects what Verify reports, at most maxProblems of each origin; the rest are
// counted.
type problems struct {
	list    []*ChainError
	dropped int
}

func (p *problems) add(e *ChainError) {
	if len(p.list) >= maxProblems {
		p.dropped++
		return
	}
	p.list = append(p.list, e)
}

// VerifyDir walks every segment of the log in dir, checks every signed checkpoint and the
// anchor against the chain as it goes (the checkpoints file is in log order; none is held
// once passed), and reports what does not hold (VerifyResponse.problems, the first broken
// record first; at most maxProblems, the rest counted in notes). It returns an error only
// when it cannot read the log.
func VerifyDir(ctx context.Context, dir string, opts VerifyOptions) (*auditv1.VerifyResponse, error) {
	segs, unexpected, err := listDir(dir)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("no audit log in %s", dir)
	}
	cr, err := openCheckpointReader(dir)
	if err != nil {
		return nil, err
	}
	defer cr.close()
	var anchored *auditv1.Checkpoint
	if opts.Anchor != nil {
		if anchored, err = opts.Anchor.Load(ctx); err != nil {
			return nil, err
		}
	}
	type span struct{ first, last uint64 }
	live := map[string]span{} // sequences of each segment's verified lines
	var (
		recovered, cpFound, bad problems
		deferred                []*auditv1.Checkpoint // passed by the walk unmet
		deferredLines           []uint64
		deferredDropped         int
		legacy                  int    // checkpoints from before they were chained
		chainIndex              uint64 // the last valid checkpoint's index and hash
		chainHash               string
		lastMatched             uint64 // sequence of the last checkpoint that matched
		cur                     *auditv1.Checkpoint
		curLine                 uint64
		anchorState             = unseen
	)
	resp := &auditv1.VerifyResponse{}
	// advance reads the next checkpoint whose signature verifies into cur (nil at the end),
	// reporting lines that do not parse or verify and breaks in the chain of checkpoints.
	advance := func() error {
		for {
			c, line, b, err := cr.next()
			if errors.Is(err, io.EOF) {
				cur = nil
				return nil
			}
			if err != nil {
				return err
			}
			if b != nil {
				bad.add(b)
				continue
			}
			if err := checkSignature(c, opts.PublicKey); err != nil {
				bad.add(&ChainError{Kind: KindBadSignature, Segment: CheckpointsFileName, Seq: c.GetSequence(), Line: line,
					Reason: fmt.Sprintf("checkpoint of sequence %d: %v", c.GetSequence(), err)})
				continue
			}
			switch {
			case c.GetIndex() == 0:
				legacy++
			case c.GetIndex() != chainIndex+1:
				bad.add(&ChainError{Kind: KindMissingCheckpoints, Segment: CheckpointsFileName, Seq: c.GetSequence(), Line: line,
					Reason: fmt.Sprintf("the checkpoint on line %d is number %d of the file's chain but follows number %d: checkpoints were removed", line, c.GetIndex(), chainIndex)})
			case c.GetPrev() != chainHash:
				bad.add(&ChainError{Kind: KindMissingCheckpoints, Segment: CheckpointsFileName, Seq: c.GetSequence(), Line: line,
					Reason: fmt.Sprintf("the checkpoint on line %d does not follow the one before it: checkpoints were removed or replaced", line)})
			}
			// An old checkpoint (index 0) is chained to as well: the first chained one
			// after them names it.
			chainIndex, chainHash = c.GetIndex(), checkpointHash(c)
			cur, curLine = c, line
			return nil
		}
	}
	// settle records what cur says of the record it signs, met with the given hash.
	settle := func(seg string, hash []byte) {
		what := fmt.Sprintf("the checkpoint on line %d of %s", curLine, CheckpointsFileName)
		if string(hash) != cur.GetHash() {
			seq := cur.GetSequence()
			cpFound.add(&ChainError{Kind: KindCheckpointMismatch, Segment: seg, Seq: seq, Line: seq - live[seg].first + 1,
				Reason: fmt.Sprintf("%s signs hash %s for sequence %d but the log has another: a record after sequence %d, up to %d, was changed and the chain recomputed", what, cur.GetHash(), seq, lastMatched, seq)})
			return
		}
		lastMatched = max(lastMatched, cur.GetSequence())
		resp.Checkpoints++
		resp.LastCheckpoint = cur
	}
	if err := advance(); err != nil {
		return nil, err
	}
	w, err := walk(dir, segs, func(seg string, seq uint64, offset int64, record, hash []byte) error {
		resp.Records++
		sp, ok := live[seg]
		if !ok {
			sp.first = seq
		}
		sp.last = seq
		live[seg] = sp
		idx, _ := parseSegment(seg)
		at := segKey{idx, seq}
		for cur != nil && keyOf(cur).less(at) {
			if len(deferred) < maxDeferred {
				deferred, deferredLines = append(deferred, cur), append(deferredLines, curLine)
			} else {
				deferredDropped++
			}
			if err := advance(); err != nil {
				return err
			}
		}
		for cur != nil && keyOf(cur) == at {
			settle(seg, hash)
			if err := advance(); err != nil {
				return err
			}
		}
		if anchored != nil && anchored.GetSequence() == seq && anchored.GetSegment() == seg {
			anchorState = mismatched
			if string(hash) == anchored.GetHash() {
				anchorState = matched
			}
		}
		if bytes.Contains(record, breakMember) {
			var r auditv1.Record
			if protojson.Unmarshal(record, &r) == nil && r.GetServer() == breakServer && r.GetMethod() == breakMethod {
				recovered.add(&ChainError{Kind: KindRecoveredBreak, Segment: seg, Seq: seq, Line: seq - sp.first + 1,
					Offset: offset, Reason: r.GetError()})
			}
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	for _, s := range segs {
		resp.Segments = append(resp.Segments, s.name)
	}
	var found problems
	for _, b := range w.breaks {
		found.add(b)
	}
	for _, r := range recovered.list {
		found.add(r)
	}
	slices.SortStableFunc(found.list, func(a, b *ChainError) int { return cmp.Compare(a.Seq, b.Seq) })
	found.dropped += recovered.dropped
	if w.torn > 0 && !opts.Live {
		found.add(&ChainError{Kind: KindTorn, Segment: w.last.name, Seq: w.st.seq + 1, Offset: w.st.size,
			Reason: fmt.Sprintf("the last segment ends with an incomplete line (%d bytes), a write torn by a crash; the gateway cuts it at start", w.torn)})
	}
	segExists := map[string]bool{}
	for _, s := range segs {
		segExists[s.name] = true
	}
	// unmet says what a checkpoint (or the anchor) whose record the walk did not meet means.
	unmet := func(c *auditv1.Checkpoint, what string) *ChainError {
		seg, seq := c.GetSegment(), c.GetSequence()
		sp, isLive := live[seg]
		switch {
		case w.damagedSegs[seg] && (!isLive || seq > sp.last):
			return nil // the damaged part of a segment, already reported as broken
		case !segExists[seg]:
			return &ChainError{Kind: KindCutOff, Segment: seg, Seq: seq,
				Reason: fmt.Sprintf("%s signs sequence %d in segment %s, which is gone: records were cut off", what, seq, seg)}
		default:
			return &ChainError{Kind: KindCutOff, Segment: seg, Seq: seq,
				Reason: fmt.Sprintf("%s signs sequence %d in %s but the segment ends at sequence %d: records were cut off", what, seq, seg, sp.last)}
		}
	}
	lineWhat := func(line uint64) string {
		return fmt.Sprintf("the checkpoint on line %d of %s", line, CheckpointsFileName)
	}
	for i, c := range deferred {
		if p := unmet(c, lineWhat(deferredLines[i])); p != nil {
			cpFound.add(p)
		}
	}
	for cur != nil {
		if p := unmet(cur, lineWhat(curLine)); p != nil {
			cpFound.add(p)
		}
		if err := advance(); err != nil {
			return nil, err
		}
	}
	for _, p := range cpFound.list {
		found.add(p)
	}
	found.dropped += cpFound.dropped
	if anchored != nil {
		resp.Anchor = anchored
		what := "the head anchored outside the log"
		switch err := checkSignature(anchored, opts.PublicKey); {
		case err != nil:
			found.add(&ChainError{Kind: KindBadSignature, Seq: anchored.GetSequence(), Reason: "the anchored head: " + err.Error()})
		case anchorState == mismatched:
			seq := anchored.GetSequence()
			found.add(&ChainError{Kind: KindAnchorMismatch, Segment: anchored.GetSegment(), Seq: seq,
				Reason: fmt.Sprintf("%s signs hash %s for sequence %d but the log has another: a record after sequence %d, up to %d, was changed and the chain recomputed", what, anchored.GetHash(), seq, lastMatched, seq)})
		case anchorState == unseen:
			if p := unmet(anchored, what); p != nil {
				found.add(p)
			}
		}
	}
	if opts.PublicKey != nil && opts.CheckpointRecords > 0 {
		bound := uint64(opts.CheckpointRecords) + uint64(max(opts.Slack, 0))
		switch tail := w.st.seq - min(lastMatched, w.st.seq); {
		case lastMatched == 0 && tail > bound:
			found.add(&ChainError{Kind: KindMissingCheckpoints, Segment: CheckpointsFileName, Seq: w.st.seq,
				Reason: fmt.Sprintf("the log has %d records and no valid checkpoint, though one is signed every %d records: the checkpoints were removed, and an edit with its chain recomputed would not show", w.st.seq, opts.CheckpointRecords)})
		case tail > bound:
			found.add(&ChainError{Kind: KindUnsignedTail, Segment: CheckpointsFileName, Seq: lastMatched + 1,
				Reason: fmt.Sprintf("%d records follow the last valid checkpoint (sequence %d), more than the %d (plus %d) between checkpoints: checkpoints were removed, and an edit after sequence %d with its chain recomputed would not show", tail, lastMatched, opts.CheckpointRecords, opts.Slack, lastMatched)})
		}
	}
	for _, p := range bad.list {
		found.add(p)
	}
	found.dropped += bad.dropped
	for _, name := range unexpected {
		found.add(&ChainError{Kind: KindUnexpectedFile, Segment: name,
			Reason: fmt.Sprintf("%s is named like the log's files but is not one of its segments: no reader reads it; it may be a forgery", name)})
	}
	for _, p := range found.list {
		resp.Problems = append(resp.Problems, &auditv1.Problem{Kind: p.Kind, Segment: p.Segment, Sequence: p.Seq, Line: p.Line, Offset: p.Offset, Reason: p.Reason})
	}
	if found.dropped > 0 {
		resp.Notes = append(resp.Notes, fmt.Sprintf("%d more problems were found and are not listed", found.dropped))
	}
	if deferredDropped > 0 {
		resp.Notes = append(resp.Notes, fmt.Sprintf("%d checkpoints of records the walk did not meet were not judged", deferredDropped))
	}
	if legacy > 0 {
		resp.Notes = append(resp.Notes, fmt.Sprintf("%d checkpoints are from before checkpoints were chained: one removed among them does not show", legacy))
	}
	if opts.PublicKey != nil {
		resp.PublicKey = hex.EncodeToString(opts.PublicKey)
	}
	return resp, nil
}

// States of a checkpoint (the anchor) against the walk.
const (
	unseen = iota
	matched
	mismatched
)

// actionVerify is what an operator needs to run Verify.
const actionVerify = "admin/audit.verify"

// verify is VerifyDir of the file store's directory.
func (l *chainLog) verify(ctx context.Context, opts VerifyOptions) (*auditv1.VerifyResponse, error) {
	return VerifyDir(ctx, l.dir, opts)
}

// Verify implements auditv1connect.AuditServiceHandler: VerifyDir of the open log (or
// VerifyPostgres of the postgres store's tables), against
// the service's own public key and anchor. One runs at a time (it reads the whole log); a
// second is refused with Unavailable. The internal token (and a call within the process)
// may verify; an operator's credential needs admin/audit.verify.
func (s *Service) Verify(ctx context.Context, _ *connect.Request[auditv1.VerifyRequest]) (*connect.Response[auditv1.VerifyResponse], error) {
	if c, ok := rpcserver.CallerFrom(ctx); ok && c.Principal != nil {
		if s.authorize == nil {
			return nil, toConnect(fmt.Errorf("%w: this audit service decides no operators", errDenied))
		}
		if err := s.authorize(ctx, c.Principal, actionVerify, ""); err != nil {
			return nil, toConnect(fmt.Errorf("%w: %w", errDenied, err))
		}
	}
	if !s.verifying.CompareAndSwap(false, true) {
		return nil, toConnect(fmt.Errorf("%w: a verification is already running", errUnavailable))
	}
	defer s.verifying.Store(false)
	resp, err := s.store.verify(ctx, VerifyOptions{PublicKey: s.publicKey, Anchor: s.anchor, Live: true,
		CheckpointRecords: s.checkpointRecords, Slack: s.checkpointSlack})
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, toConnect(err)
		}
		return nil, toConnect(fmt.Errorf("%w: %w", errUnavailable, err))
	}
	return connect.NewResponse(resp), nil
}
