package auditsvc

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
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
}

// VerifyDir walks every segment of the log in dir, checks every signed checkpoint and the
// anchor against the chain, and reports what does not hold (VerifyResponse.problems, the
// first broken record first). It returns an error only when it cannot read the log.
func VerifyDir(ctx context.Context, dir string, opts VerifyOptions) (*auditv1.VerifyResponse, error) {
	segs, unexpected, err := listDir(dir)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("no audit log in %s", dir)
	}
	cps, cpLines, bad, err := readCheckpoints(dir)
	if err != nil {
		return nil, err
	}
	var anchored *auditv1.Checkpoint
	if opts.Anchor != nil {
		if anchored, err = opts.Anchor.Load(ctx); err != nil {
			return nil, err
		}
	}
	type at struct {
		seg string
		seq uint64
	}
	want := make(map[at][]int, len(cps)+1) // checkpoint indexes by what they sign; -1 is the anchor
	for i, cp := range cps {
		k := at{cp.GetSegment(), cp.GetSequence()}
		want[k] = append(want[k], i)
	}
	if anchored != nil {
		k := at{anchored.GetSegment(), anchored.GetSequence()}
		want[k] = append(want[k], -1)
	}
	const (
		unseen = iota
		matched
		mismatched
	)
	state := make([]int, len(cps)+1) // last: the anchor
	type span struct{ first, last uint64 }
	live := map[string]span{} // sequences of each segment's verified lines
	var recovered []*ChainError
	resp := &auditv1.VerifyResponse{}
	w, err := walk(dir, segs, func(seg string, seq uint64, offset int64, record, hash []byte) error {
		resp.Records++
		sp, ok := live[seg]
		if !ok {
			sp.first = seq
		}
		sp.last = seq
		live[seg] = sp
		for _, i := range want[at{seg, seq}] {
			c, idx := anchored, len(cps)
			if i >= 0 {
				c, idx = cps[i], i
			}
			if string(hash) == c.GetHash() {
				state[idx] = matched
			} else {
				state[idx] = mismatched
			}
		}
		if bytes.Contains(record, breakMember) {
			var r auditv1.Record
			if protojson.Unmarshal(record, &r) == nil && r.GetServer() == breakServer && r.GetMethod() == breakMethod {
				recovered = append(recovered, &ChainError{Kind: KindRecoveredBreak, Segment: seg, Seq: seq, Line: seq - sp.first + 1,
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
	found := append(append([]*ChainError(nil), w.breaks...), recovered...)
	slices.SortStableFunc(found, func(a, b *ChainError) int { return cmp.Compare(a.Seq, b.Seq) })
	if w.torn > 0 && !opts.Live {
		found = append(found, &ChainError{Kind: KindTorn, Segment: w.last.name, Seq: w.st.seq + 1, Offset: w.st.size,
			Reason: fmt.Sprintf("the last segment ends with an incomplete line (%d bytes), a write torn by a crash; the gateway cuts it at start", w.torn)})
	}
	damagedSeg := w.damagedSegs
	segExists := map[string]bool{}
	for _, s := range segs {
		segExists[s.name] = true
	}
	// judge says what a checkpoint (or the anchor) that did not match means.
	judge := func(c *auditv1.Checkpoint, st int, mismatchKind, what string) *ChainError {
		seg, seq := c.GetSegment(), c.GetSequence()
		sp, isLive := live[seg]
		switch {
		case st == matched:
			return nil
		case st == mismatched:
			since := uint64(0)
			for i, cp := range cps {
				if state[i] == matched && cp.GetSequence() < seq {
					since = max(since, cp.GetSequence())
				}
			}
			return &ChainError{Kind: mismatchKind, Segment: seg, Seq: seq, Line: seq - sp.first + 1,
				Reason: fmt.Sprintf("%s signs hash %s for sequence %d but the log has another: a record after sequence %d, up to %d, was changed and the chain recomputed", what, c.GetHash(), seq, since, seq)}
		case damagedSeg[seg] && (!isLive || seq > sp.last):
			return nil // the damaged part of a segment, already reported as broken
		case !segExists[seg]:
			return &ChainError{Kind: KindCutOff, Segment: seg, Seq: seq,
				Reason: fmt.Sprintf("%s signs sequence %d in segment %s, which is gone: records were cut off", what, seq, seg)}
		default:
			return &ChainError{Kind: KindCutOff, Segment: seg, Seq: seq,
				Reason: fmt.Sprintf("%s signs sequence %d in %s but the segment ends at sequence %d: records were cut off", what, seq, seg, sp.last)}
		}
	}
	for i, cp := range cps {
		if err := checkSignature(cp, opts.PublicKey); err != nil {
			bad = append(bad, &ChainError{Kind: KindBadSignature, Segment: CheckpointsFileName, Seq: cp.GetSequence(), Line: cpLines[i],
				Reason: fmt.Sprintf("checkpoint of sequence %d: %v", cp.GetSequence(), err)})
			continue
		}
		if p := judge(cp, state[i], KindCheckpointMismatch, fmt.Sprintf("the checkpoint on line %d of %s", cpLines[i], CheckpointsFileName)); p != nil {
			found = append(found, p)
			continue
		}
		if state[i] == matched {
			resp.Checkpoints++
			resp.LastCheckpoint = cp
		}
	}
	if anchored != nil {
		resp.Anchor = anchored
		if err := checkSignature(anchored, opts.PublicKey); err != nil {
			found = append(found, &ChainError{Kind: KindBadSignature, Seq: anchored.GetSequence(), Reason: "the anchored head: " + err.Error()})
		} else if p := judge(anchored, state[len(cps)], KindAnchorMismatch, "the head anchored outside the log"); p != nil {
			found = append(found, p)
		}
	}
	found = append(found, bad...)
	for _, name := range unexpected {
		found = append(found, &ChainError{Kind: KindUnexpectedFile, Segment: name,
			Reason: fmt.Sprintf("%s is named like the log's files but is not one of its segments: no reader reads it; it may be a forgery", name)})
	}
	for _, p := range found {
		resp.Problems = append(resp.Problems, &auditv1.Problem{Kind: p.Kind, Segment: p.Segment, Sequence: p.Seq, Line: p.Line, Offset: p.Offset, Reason: p.Reason})
	}
	if opts.PublicKey != nil {
		resp.PublicKey = hex.EncodeToString(opts.PublicKey)
	}
	return resp, nil
}

// actionVerify is what an operator needs to run Verify.
const actionVerify = "admin/audit.verify"

// Verify implements auditv1connect.AuditServiceHandler: VerifyDir of the open log, against
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
	resp, err := VerifyDir(ctx, s.log.dir, VerifyOptions{PublicKey: s.publicKey, Anchor: s.anchor, Live: true})
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, toConnect(err)
		}
		return nil, toConnect(fmt.Errorf("%w: %w", errUnavailable, err))
	}
	return connect.NewResponse(resp), nil
}
