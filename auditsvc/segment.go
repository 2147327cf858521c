package auditsvc

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gatehouse-mcp/gatehouse/auditsvc/query"
)

// The log is a sequence of segment files in its directory: FileName (audit.log, index 0, the
// one file of logs written before segments existed) and then audit-00000001.log,
// audit-00000002.log, … The chain runs through them: a segment's first record is chained to
// the previous segment's last (sequence and prev continue), so a segment removed, reordered
// or cut shows as a break where the next one begins.
const (
	segmentPrefix = "audit-"
	segmentSuffix = ".log"
	// maxSegments bounds the segment files a walk accepts in one directory.
	maxSegments = 1 << 20
	// maxProblems bounds the problems of each kind a verification reports; beyond, they are
	// counted.
	maxProblems = 100
)

// segment is one file of the log.
type segment struct {
	index int
	name  string
}

func segmentName(index int) string {
	if index == 0 {
		return FileName
	}
	return fmt.Sprintf("%s%08d%s", segmentPrefix, index, segmentSuffix)
}

// parseSegment reads a segment's index from its file name.
func parseSegment(name string) (int, bool) {
	if name == FileName {
		return 0, true
	}
	digits, ok := strings.CutPrefix(name, segmentPrefix)
	if !ok {
		return 0, false
	}
	if digits, ok = strings.CutSuffix(digits, segmentSuffix); !ok || len(digits) < 8 {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n <= 0 || segmentName(n) != name {
		return 0, false
	}
	return n, true
}

// listSegments returns the segment files of dir in order.
func listSegments(dir string) ([]segment, error) {
	segs, _, err := listDir(dir)
	return segs, err
}

// listDir returns the segment files of dir in order, and the names of files that look like
// the log's but are not its segments (audit-0.log, a directory named like a segment):
// readers ignore them, and Verify reports them, since one may be a forgery meant to be read
// in place of a segment.
func listDir(dir string) ([]segment, []string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("list audit segments: %w", err)
	}
	var segs []segment
	var unexpected []string
	for _, e := range entries {
		i, ok := parseSegment(e.Name())
		switch {
		case ok && e.Type().IsRegular():
			segs = append(segs, segment{index: i, name: e.Name()})
		case ok || (strings.HasPrefix(e.Name(), "audit") && strings.HasSuffix(e.Name(), segmentSuffix)):
			if len(unexpected) < maxProblems {
				unexpected = append(unexpected, e.Name())
			}
		}
	}
	if len(segs) > maxSegments {
		return nil, nil, fmt.Errorf("list audit segments: %d segment files, more than %d", len(segs), maxSegments)
	}
	slices.SortFunc(segs, func(a, b segment) int { return a.index - b.index })
	return segs, unexpected, nil
}

// SegmentFiles lists the log's segment files in dir, in order, as Verify and recovery see
// them: the readers (Query, Tail, alerts, the offline CLI) read exactly the files whose chain
// is verified, and nothing else that happens to be named like them.
func SegmentFiles(dir string) query.Files {
	return func() ([]string, error) {
		segs, err := listSegments(dir)
		if err != nil {
			return nil, err
		}
		paths := make([]string, len(segs))
		for i, s := range segs {
			paths[i] = filepath.Join(dir, s.name)
		}
		return paths, nil
	}
}

// Problem kinds, as VerifyResponse's problems name them.
const (
	KindBroken             = "broken"
	KindTorn               = "torn"
	KindMissingSegment     = "missing_segment"
	KindRecoveredBreak     = "recovered_break"
	KindContinuation       = "continuation"
	KindCheckpointMismatch = "checkpoint_mismatch"
	KindBadSignature       = "bad_signature"
	KindAnchorMismatch     = "anchor_mismatch"
	KindCutOff             = "cut_off"
	KindUnexpectedFile     = "unexpected_file"
	KindMissingCheckpoints = "missing_checkpoints"
	KindUnsignedTail       = "unsigned_tail"
	// KindColumnMismatch: a postgres row's filter column says other than its line (the
	// column was edited; Query, replay and Tail find rows by the columns).
	KindColumnMismatch = "column_mismatch"
)

// walkVisit sees each verified line of the live chain: its segment, sequence, the byte offset
// of its record in the segment, the record and the line's hash (valid only during the call).
type walkVisit func(seg string, seq uint64, offset int64, record, hash []byte) error

// walked is where a walk of the segments ends.
type walked struct {
	// st is the last record of the live chain (the last good one if damaged); st.size is the
	// bytes of verified lines in the last segment when it is live.
	st chainState
	// last is the last segment walked.
	last segment
	// stSeg is the segment holding st's record ("" before any): not last when the last
	// segment is empty (the log rotated and stopped before its next record).
	stSeg string
	// torn is the length of an incomplete line ending the last segment (not damaged).
	torn int64
	// damaged says the chain broke and no later segment continues it: the next record must
	// start a new segment chained to st.
	damaged bool
	// breaks lists the breaks and continuations found, in order (kinds broken, torn in the
	// middle, missing_segment, continuation).
	breaks []*ChainError
	// damagedSegs are the segments not (wholly) verified: each with a break, and each
	// skipped after one.
	damagedSegs map[string]bool
}

// walk verifies the chain through segs in order. A break does not end it: the rest of that
// segment, and every later segment whose first line does not continue the last good record,
// is damaged (kept, not verified); a segment whose first line does continue it (the one
// recovery starts after a break) resumes the chain. visit, if not nil, sees every line of
// the live chain. Only I/O errors and visit's errors are returned as errors.
func walk(dir string, segs []segment, visit walkVisit) (walked, error) {
	w := walked{st: chainState{hash: append([]byte(nil), genesis...)}, damagedSegs: map[string]bool{}}
	for i, seg := range segs {
		w.last = seg
		w.torn = 0
		if i > 0 && seg.index != segs[i-1].index+1 && !w.damaged {
			w.breaks = append(w.breaks, &ChainError{Kind: KindMissingSegment, Segment: seg.name, Seq: w.st.seq + 1,
				Reason: fmt.Sprintf("segments between %s and %s are missing", segs[i-1].name, seg.name)})
		}
		f, err := os.Open(filepath.Join(dir, seg.name))
		if err != nil {
			return w, fmt.Errorf("open audit segment: %w", err)
		}
		if w.damaged {
			ok, err := continues(f, w.st)
			if err != nil {
				f.Close()
				return w, err
			}
			if !ok {
				f.Close()
				w.damagedSegs[seg.name] = true
				continue
			}
			w.damaged = false
			w.breaks = append(w.breaks, &ChainError{Kind: KindContinuation, Segment: seg.name, Seq: w.st.seq + 1, Line: 1,
				Reason: fmt.Sprintf("the chain resumes here from sequence %d, the last record before the break", w.st.seq)})
			if _, err := f.Seek(0, 0); err != nil {
				f.Close()
				return w, fmt.Errorf("read audit segment: %w", err)
			}
		}
		start := w.st
		start.size = 0
		var segVisit func(uint64, int64, []byte, []byte) error
		if visit != nil {
			segVisit = func(seq uint64, offset int64, record, hash []byte) error {
				return visit(seg.name, seq, offset, record, hash)
			}
		}
		st, torn, err := scanFrom(f, start, segVisit)
		f.Close()
		if st.seq > start.seq {
			w.stSeg = seg.name
		}
		var ce *ChainError
		switch {
		case errors.As(err, &ce):
			ce.Kind, ce.Segment, ce.Line = KindBroken, seg.name, ce.Seq-start.seq
			w.breaks = append(w.breaks, ce)
			w.st, w.damaged = st, true
			w.damagedSegs[seg.name] = true
			continue
		case err != nil:
			return w, fmt.Errorf("%s: %w", seg.name, err)
		}
		w.st = st
		if torn > 0 {
			if i < len(segs)-1 {
				w.breaks = append(w.breaks, &ChainError{Kind: KindBroken, Segment: seg.name, Seq: st.seq + 1, Line: st.seq + 1 - start.seq,
					Offset: st.size, Reason: fmt.Sprintf("an incomplete line (%d bytes) in a segment that is not the last", torn)})
				w.damaged = true
				w.damagedSegs[seg.name] = true
				continue
			}
			w.torn = torn
		}
	}
	return w, nil
}

// continues reports whether the first line of f is the record after st.
func continues(f *os.File, st chainState) (bool, error) {
	br := bufio.NewReaderSize(f, 64<<10)
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) || errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("read audit segment: %w", err)
	}
	_, _, reason := verifyLine(sha256.New(), line[:len(line)-1], st.seq+1, st.hash)
	return reason == "", nil
}
