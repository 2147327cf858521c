package auditsvc

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// errStopped is the error of the OUTCOME_UNKNOWN record that recovery writes for a decision
// without an outcome.
const errStopped = "gateway stopped before the outcome was recorded"

// maxLoggedCallIDs bounds the call ids one log line lists.
const maxLoggedCallIDs = 100

// openCall is a decision record not yet followed by its outcome: where its record is.
type openCall struct {
	seg    string
	seq    uint64
	offset int64
	length int
}

// openCalls collects, during the scan of the log at start, the decisions whose outcome has
// not been seen. It holds at most max of them; decisions beyond are counted (untracked) and
// reported, never silently forgotten.
type openCalls struct {
	max       int
	open      map[string]openCall
	untracked uint64
	firstLost uint64 // sequence of the first untracked decision
}

func newOpenCalls(max int) *openCalls {
	return &openCalls{max: max, open: make(map[string]openCall)}
}

// The phase members as marshalRecord writes them: quotes inside string values are escaped,
// so these bytes can only be the record's own phase member.
var (
	decisionMember = []byte(`"phase":"PHASE_DECISION"`)
	outcomeMember  = []byte(`"phase":"PHASE_OUTCOME"`)
)

// visit is scan's visitor: it notes decisions and strikes them off when their outcome
// follows. Records of other phases cost one substring search.
func (c *openCalls) visit(seg string, seq uint64, offset int64, record []byte) error {
	decision := bytes.Contains(record, decisionMember)
	if !decision && !bytes.Contains(record, outcomeMember) {
		return nil
	}
	id, err := callID(record)
	if err != nil {
		return fmt.Errorf("record %d: %w", seq, err)
	}
	if !decision {
		delete(c.open, id)
		return nil
	}
	if _, dup := c.open[id]; dup {
		return nil // the first decision stands; one outcome closes the call
	}
	if len(c.open) >= c.max {
		if c.untracked == 0 {
			c.firstLost = seq
		}
		c.untracked++
		return nil
	}
	c.open[id] = openCall{seg: seg, seq: seq, offset: offset, length: len(record)}
	return nil
}

var callIDMember = []byte(`"call_id":"`)

// callID returns the call_id of a record as marshalRecord writes it. A call id without
// escapes (the gateway's are hex) is read in place, like the phase member; any other is
// decoded.
func callID(record []byte) (string, error) {
	if _, rest, ok := bytes.Cut(record, callIDMember); ok {
		if end := bytes.IndexByte(rest, '"'); end >= 0 && bytes.IndexByte(rest[:end], '\\') < 0 {
			return string(rest[:end]), nil
		}
	}
	var r struct {
		CallID string `json:"call_id"`
	}
	if err := json.Unmarshal(record, &r); err != nil {
		return "", err
	}
	return r.CallID, nil
}

// closeOpenCalls appends, durably and before the writer starts, an OUTCOME_UNKNOWN record
// for every decision the scan left open, in the order of the decisions. Each copies its
// decision's call id, principal, tenant, session, trace, server, method and tool.
func (l *chainLog) closeOpenCalls(dir string, calls *openCalls, now time.Time) error {
	if calls.untracked > 0 {
		l.logger.Error("audit log holds more open decisions than recovery tracks; those beyond are not given an unknown outcome",
			"path", *l.path.Load(), "tracked", len(calls.open), "untracked", calls.untracked, "first_untracked_sequence", calls.firstLost)
	}
	if len(calls.open) == 0 {
		return nil
	}
	open := make([]openCall, 0, len(calls.open))
	for _, c := range calls.open {
		open = append(open, c)
	}
	slices.SortFunc(open, func(a, b openCall) int { return cmp.Compare(a.seq, b.seq) })
	ids := make([]string, 0, min(len(open), maxLoggedCallIDs))
	batch := make([]*pending, 0, l.maxBatch)
	h := sha256.New()
	var buf []byte
	flush := func() error {
		buf = l.commit(h, buf[:0], batch)
		for _, p := range batch {
			if p.err != nil {
				return fmt.Errorf("append unknown outcome: %w", p.err)
			}
		}
		batch = batch[:0]
		return nil
	}
	var r *os.File // the segment of the decision read last
	defer func() {
		if r != nil {
			r.Close()
		}
	}()
	for _, c := range open {
		if r == nil || filepath.Base(r.Name()) != c.seg {
			if r != nil {
				r.Close()
			}
			var err error
			if r, err = os.Open(filepath.Join(dir, c.seg)); err != nil {
				return fmt.Errorf("read decision %d: %w", c.seq, err)
			}
		}
		raw := make([]byte, c.length)
		if _, err := r.ReadAt(raw, c.offset); err != nil {
			return fmt.Errorf("read decision %d: %w", c.seq, err)
		}
		var d auditv1.Record
		if err := protojson.Unmarshal(raw, &d); err != nil {
			return fmt.Errorf("decode decision %d: %w", c.seq, err)
		}
		rec, err := marshalRecord(l.nextID(), &auditv1.Record{
			Time:      timestamppb.New(now),
			TraceId:   d.GetTraceId(),
			SessionId: d.GetSessionId(),
			Principal: d.GetPrincipal(),
			Tenant:    d.GetTenant(),
			Server:    d.GetServer(),
			Method:    d.GetMethod(),
			Tool:      d.GetTool(),
			CallId:    d.GetCallId(),
			Phase:     auditv1.Phase_PHASE_OUTCOME,
			Outcome:   auditv1.Outcome_OUTCOME_UNKNOWN,
			Error:     errStopped,
			Revision:  d.GetRevision(),
		})
		if err != nil {
			return fmt.Errorf("decision %d: %w", c.seq, err)
		}
		batch = append(batch, &pending{record: rec, done: make(chan struct{})})
		if len(ids) < maxLoggedCallIDs {
			ids = append(ids, d.GetCallId())
		}
		if len(batch) == l.maxBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if len(batch) > 0 {
		if err := flush(); err != nil {
			return err
		}
	}
	l.logger.Warn("decisions without an outcome: the gateway stopped while they were in flight; recorded as outcome unknown",
		"path", *l.path.Load(), "calls", len(open), "call_ids", ids)
	return nil
}

// The break record: the first record of the segment recovery starts after a break, saying
// what broke. Verify reports it as a recovered break.
const (
	breakServer = "gatehouse/audit"
	breakMethod = "audit/recover"
)

var breakMember = []byte(`"method":"` + breakMethod + `"`)

// recordBreak appends, durably and before the writer starts, the record of a break found at
// open to the (new) segment, and counts it.
func (l *chainLog) recordBreak(now time.Time, what string) error {
	rec, err := marshalRecord(l.nextID(), &auditv1.Record{
		Time: timestamppb.New(now), Server: breakServer, Method: breakMethod,
		Phase: auditv1.Phase_PHASE_COMPLETE, Outcome: auditv1.Outcome_OUTCOME_FAILED,
		Error: trimError("the audit log was damaged when the gateway started; the damaged segments are kept unchanged and the log continues here: " + what),
	})
	if err != nil {
		return err
	}
	p := &pending{record: rec, done: make(chan struct{})}
	l.commit(sha256.New(), nil, []*pending{p})
	if p.err != nil {
		return fmt.Errorf("record the break: %w", p.err)
	}
	l.breaks.Add(1)
	l.logger.Error("audit log damaged: continuing in a new segment after a record of the break",
		"segment", l.segName, "sequence", p.seq, "what", what)
	return nil
}
