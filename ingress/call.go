package ingress

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxPolicyArguments is the most of a call's arguments sent to policysvc (its
// MaxArgumentBytes, within the 64 KiB of a Check request): larger ones are flagged instead.
const maxPolicyArguments = 48 << 10

// auditTimeout bounds one audit append; past it a write-ahead append fails (the call is
// refused) and a deferred one is logged as lost.
const auditTimeout = 10 * time.Second

// decideTimeout bounds a tools/call's Check, which runs detached from the host (it may take
// a concurrency permit that must be released).
const decideTimeout = 10 * time.Second

// toolsCall is the method quotas apply to.
const toolsCall = "tools/call"

// call is one request of a host to a server, from the decision to the audit record. Every
// room at the edge (the Streamable HTTP POST today; the HTTP+SSE, stateless and stdio rooms
// later) turns what its host sends into a call and answers through its own replier. A call
// assumes no session and no initialize: the session context, when the host has one, is data.
type call struct {
	id        string // 128 random bits, hex: the call_id of its audit records
	traceID   string
	principal *authv1.Principal
	server    string
	session   sessionstore.Record // zero for a host without a session
	revision  string              // the revision negotiated with the upstream, "" when unknown
	msg       *jsonrpc.Message
	source    string // the host's address, for policy conditions
	start     time.Time
	subject   string // the host's token, for a server that exchanges it (identity.go)
	// open is the initialize of an aggregated session, with which the bridge opens the
	// server's upstream if the session has none yet; nil on a server's own endpoint.
	open []byte
}

// replier is how a call reaches its host: the room it came in through.
type replier interface {
	// emit writes an upstream message that precedes the answer (progress, log, a server
	// request); an error ends the call: the host is gone, or cannot take that message.
	emit(msg []byte) error
	// answer writes the call's answer: final is the message the host gets (the upstream's
	// response, or the JSON-RPC error of refusal when refusal is set).
	answer(final []byte, refusal *Error) error
}

// ending is how a call ended, the one value its outcome is derived from (see conclude).
type ending struct {
	final         []byte // the upstream's final message; nil for a refusal
	upstreamError bool   // final is an error response of the upstream
	refusal       *Error
	cause         error // what went wrong, for the log and the audit record
	reached       bool  // the decision record is durable: the upstream may have seen the call
	unrecorded    bool  // the audit log refused the decision record: nothing can be recorded
	hostGone      bool
	// denial is the decision when policy refused the call: its error carries what decided.
	denial *policyv1.CheckResponse
	// quota is the limit that refused the call (quota.go), nil for any other ending.
	quota *policyv1.QuotaExceeded
}

func newCallID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// run carries the call through: decide, write the decision ahead, relay, conclude. Every
// request is decided and audited, whatever its method (policy decides a method its schema
// does not name as the catch-all action).
func (s *Service) run(ctx context.Context, c *call, r replier) {
	ctx, span := startCall(ctx, c)
	rec := &auditv1.Record{
		Time: timestamppb.New(c.start), TraceId: c.traceID, CallId: c.id, SessionId: c.session.ID,
		Principal: c.principal.GetId(), Tenant: c.principal.GetTenant(), Server: c.server,
		Method: c.msg.Method, Tool: c.msg.Name, ArgumentsDigest: digest(c.msg.Arguments), Revision: c.revision,
		Input: decisionInput(c), // what policy decides on, for shadow replay (auditinput.go)
	}
	rec.Arguments, rec.ArgumentsForm = s.storedArguments(c) // when the server asks (auditargs.go)
	defer s.endCall(ctx, span, rec)
	rc := &policyv1.RequestContext{SourceAddress: c.source, SessionId: c.session.ID, ProtocolVersion: c.revision}
	if len(c.msg.Arguments) > maxPolicyArguments {
		rc.ArgumentsTooLarge = true // policysvc denies if a policy reads them
	} else {
		rc.Arguments = c.msg.Arguments
	}
	// A quarantined tool is refused before policy: it would take quota for nothing.
	if q := s.quarantined(c); q != nil {
		s.conclude(ctx, c, rec, r, ending{refusal: q})
		return
	}
	dctx := ctx
	if c.msg.Method == toolsCall {
		// Check may take a concurrency permit: its answer is read even when the host goes
		// away meanwhile, so that the permit is released, not held until it expires.
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), decideTimeout)
		defer cancel()
	}
	d, err := s.decide(dctx, c.principal, c.server, c.msg.Method, c.msg.Name, rc)
	if err != nil {
		s.conclude(ctx, c, rec, r, ending{refusal: fromPolicy(err), cause: err, hostGone: ctx.Err() != nil, quota: quotaOf(err)})
		return
	}
	defer s.releasePermit(ctx, d.GetPermitId()) // a concurrency permit, when one was taken
	traceDecision(ctx, d)
	rec.BundleVersion, rec.PolicyIds, rec.Decision = d.GetBundleVersion(), d.GetPolicyIds(), decisionOf(d)
	if d.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		s.conclude(ctx, c, rec, r, ending{refusal: errDenied, denial: d})
		return
	}
	// Write-ahead: the decision is durable before the upstream can see the call; if it
	// cannot be made durable, the upstream never sees it (fail closed).
	rec.Phase = auditv1.Phase_PHASE_DECISION
	if err := s.appendRecord(ctx, rec, false); err != nil {
		// The append may have failed after the record landed (a timeout): a FAILED outcome,
		// if it can still be written, keeps recovery from reading the call as unknown.
		out := proto.Clone(rec).(*auditv1.Record)
		out.Arguments, out.ArgumentsForm, out.Input = "", "", nil
		out.Phase, out.Outcome, out.Error = auditv1.Phase_PHASE_OUTCOME, auditv1.Outcome_OUTCOME_FAILED, "the audit log refused the decision record; the upstream never saw the call"
		_ = s.appendRecord(ctx, out, true)
		s.conclude(ctx, c, rec, r, ending{refusal: errAuditUnavailable, cause: err, unrecorded: true})
		return
	}
	// Kept by the decision record, not repeated in the outcome (shadow replay joins them by
	// call_id): every byte of a record is encoded, hashed, fsynced and stored.
	rec.Arguments, rec.ArgumentsForm, rec.Input = "", "", nil
	end := s.relay(ctx, c, r)
	end.reached = true
	if end.final != nil && !end.upstreamError {
		// A list shows only what a call would be allowed on; if it cannot be filtered it is
		// not shown at all.
		filtered, err := s.filterList(ctx, c, end.final)
		if err != nil {
			end = ending{refusal: fromPolicy(err), cause: err, reached: true, hostGone: ctx.Err() != nil}
		} else {
			end.final = filtered
		}
	}
	// The decision record becomes the outcome record: an append that returned holds nothing
	// of the message (the log keeps its encoding), so it is not copied.
	s.conclude(ctx, c, rec, r, end)
}

// relay sends the call to the upstream through the bridge and streams what precedes the
// answer to the host.
func (s *Service) relay(ctx context.Context, c *call, r replier) ending {
	var final *bridgev1.SendResponse
	var hostErr error
	req := s.sendRequest(c.principal, c.server, c.session.ID, c.revision, c.subject, c.msg)
	req.Initialize = c.open
	ctx, span := s.startClient(ctx, "bridge Send")
	defer span.End()
	err := s.deliver(ctx, req, c.msg, func(msg *bridgev1.SendResponse) error {
		if msg.GetFinal() {
			final = msg
			return nil
		}
		if err := r.emit(msg.GetMessage()); err != nil {
			hostErr = err // ending Deliver cancels the upstream call
			return err
		}
		return nil
	})
	switch {
	case final != nil:
		return ending{final: final.GetMessage(), upstreamError: final.GetError()}
	case hostErr != nil:
		var e *Error
		if errors.As(hostErr, &e) {
			return ending{refusal: e, cause: hostErr}
		}
		return ending{refusal: errCancelled, cause: hostErr, hostGone: true}
	case err == nil:
		return ending{refusal: errUpstreamNoAnswer}
	}
	e := fromBridge(err)
	if e == errSessionEnded && c.open != nil {
		// One upstream of an aggregated session ended: the next request opens it again,
		// and the session goes on.
		e = errUpstreamDown
	}
	return ending{refusal: e, cause: err, hostGone: ctx.Err() != nil}
}

// outcome is the audit outcome of an ending.
func (e ending) outcome() (auditv1.Outcome, string) {
	switch {
	case e.refusal == nil && !e.upstreamError:
		return auditv1.Outcome_OUTCOME_ALLOWED, ""
	case e.refusal == nil:
		return auditv1.Outcome_OUTCOME_FAILED, "upstream returned an error"
	case e.hostGone:
		return auditv1.Outcome_OUTCOME_FAILED, "the host went away before the response"
	case e.refusal == errDenied || e.refusal == errQuota || e.refusal == errQuarantined:
		return auditv1.Outcome_OUTCOME_DENIED, e.refusal.Message
	case e.refusal == errTimeout:
		return auditv1.Outcome_OUTCOME_TIMED_OUT, e.refusal.Message
	}
	msg := e.refusal.Name
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return auditv1.Outcome_OUTCOME_FAILED, msg
}

// conclude is the one place a call's outcome is set: it records it and answers the host, in
// the order the audit mode requires.
//   - Not audited, or the decision record refused: answer.
//   - Ended before the upstream (denied, policy down): one COMPLETE record, durable before
//     the answer; if it cannot be written the host gets the audit error instead.
//   - After the upstream: an OUTCOME record with the same call id. By default the answer is
//     written first and the record appended after it, deferred (group committed), with a
//     context detached from the host; in strict mode the record is durable before the
//     answer, and the answer is withheld if it cannot be.
func (s *Service) conclude(ctx context.Context, c *call, rec *auditv1.Record, r replier, end ending) {
	s.observeCall(c, end) // metrics.go
	if end.quota != nil {
		s.concludeQuota(ctx, c, rec, r, end) // counted into one record per principal and window
		return
	}
	refusal := end.refusal
	if refusal != nil && s.logger.Enabled(ctx, refusal.Level) {
		s.logCall(ctx, c, end)
	}
	final := end.final
	if refusal != nil {
		final = refusalResponse(c.msg.ID, refusal, c.traceID, end.denial)
	}
	if rec == nil || end.unrecorded {
		if !end.hostGone {
			_ = r.answer(final, refusal)
		}
		return
	}
	rec.Outcome, rec.Error = end.outcome()
	rec.Latency = durationpb.New(time.Since(c.start))
	rec.Phase = auditv1.Phase_PHASE_COMPLETE
	if end.reached {
		rec.Phase = auditv1.Phase_PHASE_OUTCOME
	}
	durableFirst := !end.reached || s.cfg.StrictAudit
	if durableFirst {
		if end.reached {
			rec.ResultDigest = digest(final)
		}
		if err := s.appendRecord(ctx, rec, false); err != nil {
			refusal = errAuditUnavailable // withhold the answer: no record, no answer
			final = jsonrpc.ErrorResponse(c.msg.ID, refusal.Code, hostMessage(refusal, c.traceID))
		}
	}
	if !end.hostGone {
		_ = r.answer(final, refusal)
	}
	if !durableFirst {
		// The digest of what the host was answered, taken after the answer: the record
		// follows it anyway, and hashing 16 KiB need not delay the host. answer does not
		// modify final.
		rec.ResultDigest = digest(final)
		_ = s.appendRecord(ctx, rec, true) // failures are logged; the answer is out
	}
}

func (s *Service) logCall(ctx context.Context, c *call, end ending) {
	attrs := []any{"call_id", c.id, "trace_id", c.traceID, "server", c.server, "method", c.msg.Method, "error", end.refusal.Name}
	if end.cause != nil {
		attrs = append(attrs, "cause", end.cause.Error())
	}
	s.logger.Log(context.WithoutCancel(ctx), end.refusal.Level, "call failed", attrs...)
}

// appendRecord appends one audit record with a context detached from the host's request
// (bounded by auditTimeout): a host that goes away cannot erase the record of its call.
// Deferred appends may be acknowledged before they are durable (group commit).
func (s *Service) appendRecord(ctx context.Context, rec *auditv1.Record, deferred bool) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	actx, span := s.startClient(actx, "audit Append")
	defer span.End()
	if _, err := s.deps.Audit.Append(actx, connect.NewRequest(&auditv1.AppendRequest{Record: rec, Deferred: deferred})); err != nil {
		s.logger.ErrorContext(actx, "audit append failed", "call_id", rec.GetCallId(), "trace_id", rec.GetTraceId(), "phase", rec.GetPhase().String(), "deferred", deferred, "err", err)
		return errAuditUnavailable
	}
	return nil
}

// decide asks policysvc whether the principal may do action on the server's named item, in
// the request's context (what conditions may test: arguments, source, session, revision).
func (s *Service) decide(ctx context.Context, p *authv1.Principal, server, action, name string, rc *policyv1.RequestContext) (*policyv1.CheckResponse, error) {
	ctx, span := s.startClient(ctx, "policy Check")
	defer span.End()
	resp, err := s.deps.Policy.Check(ctx, connect.NewRequest(&policyv1.CheckRequest{
		Subject:  subjectOf(p),
		Action:   action,
		Resource: &policyv1.Resource{Server: server, Name: name},
		Context:  rc,
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// subjectOf is the principal as policy sees it.
func subjectOf(p *authv1.Principal) *policyv1.Subject {
	return &policyv1.Subject{Id: p.GetId(), Tenant: p.GetTenant(), Groups: p.GetGroups(), Kind: rpcserver.KindName(p.GetKind())}
}

// sendRequest is the bridge's request for one host message; principal and tenant let the
// bridge cap stdio children per principal and per tenant, and with the groups tell an
// upstream who calls (gateway-jwt); subject is the host's token for a server that exchanges
// it, "" for any other.
func (s *Service) sendRequest(p *authv1.Principal, server, session, revision, subject string, m *jsonrpc.Message) *bridgev1.SendRequest {
	req := &bridgev1.SendRequest{
		SessionId:       session,
		Server:          server,
		ProtocolVersion: revision,
		Message:         m.Raw,
		Principal:       p.GetId(),
		Tenant:          p.GetTenant(),
		Groups:          p.GetGroups(),
		SubjectToken:    subject,
	}
	if m.Kind == jsonrpc.KindRequest {
		req.RequestId = m.ID
	}
	return req
}

func digest(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
