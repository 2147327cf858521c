package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
	"google.golang.org/protobuf/proto"
)

// Quotas are policysvc's: Check consumes them with the decision and refuses a call over one
// with ResourceExhausted and a QuotaExceeded detail. This file is what the ingress does with
// that: the host's error (its data names the limit; 429 with Retry-After when nothing was
// streamed yet), one audit record per principal, server and window instead of one per
// refused call, and the release of a concurrency permit when its call concludes.

// Bounds of the refusal tally.
const (
	// maxTallyEntries bounds the (tenant, principal, server) keys of one window; past it the
	// refusals of new keys fold into one record.
	maxTallyEntries = 4096
	// DefaultQuotaAuditWindow is how long refusals by quota are counted before their records
	// are written.
	DefaultQuotaAuditWindow = 10 * time.Second
	minQuotaAuditWindow     = time.Second
	maxQuotaAuditWindow     = time.Hour
	// releaseTimeout bounds one ReleasePermit; a lost release expires in policysvc.
	releaseTimeout = 5 * time.Second
)

// quotaData is the data of a quota refusal's JSON-RPC error: which limit refused and when to
// retry, in whole seconds.
type quotaData struct {
	Scope      string  `json:"scope"`
	Rate       float64 `json:"rate,omitempty"`
	Burst      uint32  `json:"burst,omitempty"`
	Max        uint32  `json:"max,omitempty"`
	RetryAfter uint32  `json:"retryAfter"`
}

// quotaOf is the limit a policysvc error names, nil when it is no quota refusal (or one
// without the detail, from an older policysvc: the plain errQuota row answers it).
func quotaOf(err error) *policyv1.QuotaExceeded {
	var ce *connect.Error
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !errors.As(err, &ce) {
		return nil
	}
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if q, ok := v.(*policyv1.QuotaExceeded); ok {
				return q
			}
		}
	}
	return nil
}

// quotaRefusal is errQuota's row with the limit's Retry-After: what the host is answered.
func quotaRefusal(q *policyv1.QuotaExceeded) *Error {
	e := *errQuota
	e.Retry = strconv.FormatUint(uint64(max(1, q.GetRetryAfterSeconds())), 10)
	return &e
}

// isQuota says e is errQuota's row, or a copy quotaRefusal made.
func isQuota(e *Error) bool { return e != nil && e.Name == errQuota.Name }

// quotaResponse is the JSON-RPC error answering id when limit q refused the call.
func quotaResponse(id json.RawMessage, q *policyv1.QuotaExceeded, traceID string) []byte {
	if id == nil {
		id = json.RawMessage("null")
	}
	type errorObject struct {
		Code    int       `json:"code"`
		Message string    `json:"message"`
		Data    quotaData `json:"data"`
	}
	data := quotaData{Scope: q.GetScope(), Rate: q.GetRate(), Burst: q.GetBurst(), Max: q.GetMax(), RetryAfter: max(1, q.GetRetryAfterSeconds())}
	b, err := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   errorObject     `json:"error"`
	}{"2.0", id, errorObject{errQuota.Code, hostMessage(errQuota, traceID), data}})
	if err != nil {
		// A rate policysvc should never send (NaN): the error without its data.
		return jsonrpc.ErrorResponse(id, errQuota.Code, hostMessage(errQuota, traceID))
	}
	return b
}

// quotaStatus sets what an HTTP answer to a quota refusal carries (Retry-After) and returns
// its status: 429. Used when the refusal is the whole answer (no SSE stream started).
func quotaStatus(w http.ResponseWriter, e *Error) int {
	w.Header().Set("Retry-After", e.Retry)
	return http.StatusTooManyRequests
}

// concludeQuota concludes a call a quota refused: the host gets the error with the limit,
// and the refusal is counted into its principal's record of the window, not written alone.
func (s *Service) concludeQuota(ctx context.Context, c *call, rec *auditv1.Record, r replier, end ending) {
	if s.logger.Enabled(ctx, end.refusal.Level) {
		s.logCall(ctx, c, end)
	}
	s.refusals.count(rec, end.quota.GetScope())
	if !end.hostGone {
		_ = r.answer(quotaResponse(c.msg.ID, end.quota, c.traceID), quotaRefusal(end.quota))
	}
}

// releasePermit frees the concurrency permit of a concluded call, with a context detached
// from the host's: a host that went away must not keep its slot until the permit expires.
func (s *Service) releasePermit(ctx context.Context, id string) {
	if id == "" {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if _, err := s.deps.Policy.ReleasePermit(rctx, connect.NewRequest(&policyv1.ReleasePermitRequest{PermitId: id})); err != nil {
		s.logger.Warn("concurrency permit not released; it expires on its own", "err", err)
	}
}

// QuotaRefusals is how many calls quotas have refused since the ingress started.
func (s *Service) QuotaRefusals() uint64 { return s.refusals.total.Load() }

// tallyKey is whose refusals one record counts.
type tallyKey struct{ tenant, principal, server string }

// refusalTally counts refusals by quota per principal and server, and writes one audit
// record for each every window (and what remains at Close), carrying the count: a flood of
// refused calls is a handful of records, not one durable record per call.
type refusalTally struct {
	total atomic.Uint64

	mu       sync.Mutex
	entries  map[tallyKey]*auditv1.Record
	overflow *auditv1.Record // the refusals of keys past maxTallyEntries
}

// count adds one refusal described by rec (the call's record, not yet written).
func (t *refusalTally) count(rec *auditv1.Record, scope string) {
	t.total.Add(1)
	if rec == nil {
		return
	}
	k := tallyKey{rec.GetTenant(), rec.GetPrincipal(), rec.GetServer()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.entries[k]; ok {
		e.Count = saturatingAdd(e.Count, 1)
		return
	}
	if len(t.entries) < maxTallyEntries {
		if t.entries == nil {
			t.entries = make(map[tallyKey]*auditv1.Record)
		}
		t.entries[k] = tallied(rec, scope)
		return
	}
	if t.overflow == nil {
		t.overflow = tallied(rec, scope)
		t.overflow.Principal, t.overflow.Tenant, t.overflow.SessionId, t.overflow.Tool = "", "", "", ""
		t.overflow.Error = errQuota.Message + ": refusals of more principals than one window counts apart, together"
		return
	}
	t.overflow.Count = saturatingAdd(t.overflow.Count, 1)
}

// tallied is the record counting refusals like rec's, the first of its window.
func tallied(rec *auditv1.Record, scope string) *auditv1.Record {
	out := proto.Clone(rec).(*auditv1.Record)
	out.Phase, out.Outcome = auditv1.Phase_PHASE_COMPLETE, auditv1.Outcome_OUTCOME_DENIED
	out.Error = errQuota.Message + " (" + scope + " limit)"
	out.ArgumentsDigest, out.Arguments, out.ArgumentsForm = "", "", "" // of the first call only: misleading for the count
	out.Count = 1
	return out
}

// take empties the tally and returns its records.
func (t *refusalTally) take() []*auditv1.Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*auditv1.Record, 0, len(t.entries)+1)
	for _, e := range t.entries {
		out = append(out, e)
	}
	if t.overflow != nil {
		out = append(out, t.overflow)
	}
	t.entries, t.overflow = nil, nil
	return out
}

// putBack returns a record whose append failed, so the next flush writes it: added to its
// key's record when the window has one again, folded into the overflow when full.
func (t *refusalTally) putBack(rec *auditv1.Record) {
	k := tallyKey{rec.GetTenant(), rec.GetPrincipal(), rec.GetServer()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.entries[k]; ok {
		e.Count = saturatingAdd(e.Count, rec.GetCount())
		return
	}
	if len(t.entries) < maxTallyEntries {
		if t.entries == nil {
			t.entries = make(map[tallyKey]*auditv1.Record)
		}
		t.entries[k] = rec
		return
	}
	if t.overflow == nil {
		t.overflow = rec
		return
	}
	t.overflow.Count = saturatingAdd(t.overflow.Count, rec.GetCount())
}

// flushRefusals writes the tally's records. A record the audit log refuses goes back into
// the tally unless final (Close), when it is logged as lost.
// After the first refusal the rest are not tried (each append may wait auditTimeout for a
// log that is down), so a flush takes at most about auditTimeout.
func (s *Service) flushRefusals(ctx context.Context, final bool) {
	recs := s.refusals.take()
	for i, rec := range recs {
		if err := s.appendRecord(ctx, rec, true); err != nil {
			for _, rest := range recs[i:] {
				if final {
					s.logger.Error("refusals by quota not audited", "principal", rest.GetPrincipal(), "server", rest.GetServer(), "count", rest.GetCount())
				} else {
					s.refusals.putBack(rest)
				}
			}
			return
		}
	}
}

// tallyRefusals flushes the tally at the end of every window until Close.
func (s *Service) tallyRefusals(window time.Duration) {
	defer close(s.tallyDone)
	t := time.NewTicker(window)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.flushRefusals(context.Background(), false)
		case <-s.tallyStop:
			return
		}
	}
}

// Close writes the refusals counted so far (the window's end comes early); the ingress must
// have stopped serving calls, and the audit log must still be open.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		close(s.tallyStop)
		select {
		case <-s.tallyDone:
		case <-ctx.Done(): // a flush under way ends within auditTimeout; the final one follows
		}
		s.flushRefusals(ctx, true)
	})
	return nil
}

func saturatingAdd(a, b uint32) uint32 {
	if a+b < a {
		return ^uint32(0)
	}
	return a + b
}
