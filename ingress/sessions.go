package ingress

import (
	"context"
	"errors"
	"net/http"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"time"
)

// The sessions room of the session-era revisions: resume a host's session, create one
// (initialize), end one (DELETE, or its upstream gone).

// resume loads the host's session into x. Without an Mcp-Session-Id header it is a refusal
// when required, else nothing; an unknown, ended or foreign session is 404. A session is
// foreign unless the request's principal, tenant and server are the session's, and, for a
// session an API token created, the request was authenticated by that very token: a new
// token of the same principal does not inherit the sessions of a revoked one.
func (s *Service) resume(x *exchange, required bool) (*Error, error) {
	id := x.r.Header.Get(headerSession)
	if id == "" {
		if required {
			return errSessionRequired, nil
		}
		return nil, nil
	}
	ctx := x.r.Context()
	rec, err := s.deps.Sessions.Get(ctx, id)
	if err == nil && (rec.Principal != x.principal.GetId() || rec.Tenant != x.principal.GetTenant() || rec.Server != x.server || rec.Aggregated != x.aggregated ||
		rec.TokenID != tokenID(x.principal)) {
		err = sessionstore.ErrNotFound // another principal's or another server's session: never served
	}
	if err == nil {
		err = s.deps.Sessions.Touch(ctx, id)
	}
	if errors.Is(err, sessionstore.ErrNotFound) {
		return errSessionNotFound, nil
	}
	if err != nil {
		return errSessionStore, err
	}
	x.session = rec
	return nil, nil
}

// initialize opens a session: policy may the principal use this server at all, a session
// record under a lease, then the upstream's own initialize, passed through unchanged. A
// denied principal gets 404 and no session, as for a server that does not exist.
func (s *Service) initialize(x *exchange, m *jsonrpc.Message) {
	ctx := x.r.Context()
	source := sourceAddress(x.r)
	d, err := s.decide(ctx, x.principal, x.server, "initialize", "", &policyv1.RequestContext{
		SourceAddress: source, ProtocolVersion: m.ProtocolVersion,
	})
	input := principalInput(x.principal, source, m.ProtocolVersion) // for shadow replay (auditinput.go)
	if err != nil {
		s.refuse(x, m.ID, fromPolicy(err), err)
		return
	}
	if d.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		// The denial is recorded, durably, before the host hears of it: who tried to open
		// which server, and by which policies it was refused.
		rec := &auditv1.Record{
			Time: timestamppb.Now(), TraceId: x.traceID, CallId: newCallID(), Principal: x.principal.GetId(),
			Tenant: x.principal.GetTenant(), Server: x.server, Method: "initialize", Phase: auditv1.Phase_PHASE_COMPLETE,
			Outcome: auditv1.Outcome_OUTCOME_DENIED, Error: errDenied.Name, BundleVersion: d.GetBundleVersion(), PolicyIds: d.GetPolicyIds(),
			Decision: decisionOf(d), Input: input,
		}
		s.metrics.Denied(rec.Tenant, rec.Server)
		if err := s.appendRecord(ctx, rec, false); err != nil {
			s.refuse(x, m.ID, errAuditUnavailable, err)
			return
		}
		s.refuse(x, nil, errNoServer, nil)
		return
	}
	rec, ok := s.createSession(x, m, sessionstore.Record{Server: x.server})
	if !ok {
		return
	}
	x.session = rec
	// Write-ahead, as for every call: the decision is durable before the upstream sees the
	// initialize (or any credential minted for it); the outcome follows, deferred.
	start := time.Now()
	audit := &auditv1.Record{
		Time: timestamppb.New(start), TraceId: x.traceID, CallId: newCallID(), SessionId: rec.ID, Principal: x.principal.GetId(),
		Tenant: x.principal.GetTenant(), Server: x.server, Method: "initialize", Phase: auditv1.Phase_PHASE_DECISION,
		BundleVersion: d.GetBundleVersion(), PolicyIds: d.GetPolicyIds(), Decision: decisionOf(d), Input: input,
	}
	if err := s.appendRecord(ctx, audit, false); err != nil {
		s.endSession(context.WithoutCancel(ctx), rec.ID)
		s.refuse(x, m.ID, errAuditUnavailable, err)
		return
	}
	var out [][]byte
	var revision string
	failed := false
	err = s.deps.Bridge.Deliver(ctx, s.sendRequest(x.principal, x.server, rec.ID, rec.ProtocolVersion, x.subject, m), func(msg *bridgev1.SendResponse) error {
		out = append(out, msg.GetMessage())
		if msg.GetProtocolVersion() != "" {
			revision = msg.GetProtocolVersion()
		}
		if msg.GetFinal() {
			failed = msg.GetError()
		}
		return nil
	})
	audit.Phase, audit.Latency, audit.Outcome = auditv1.Phase_PHASE_OUTCOME, durationpb.New(time.Since(start)), auditv1.Outcome_OUTCOME_ALLOWED
	switch {
	case err != nil:
		audit.Outcome, audit.Error = auditv1.Outcome_OUTCOME_FAILED, fromBridge(err).Name
	case failed:
		audit.Outcome, audit.Error = auditv1.Outcome_OUTCOME_FAILED, "upstream_error"
	case len(out) == 0:
		audit.Outcome, audit.Error = auditv1.Outcome_OUTCOME_FAILED, errNoInitialize.Name
	}
	// Deferred (a failure is logged), or in strict mode durable before the answer, which
	// is withheld if it cannot be.
	if aerr := s.appendRecord(ctx, audit, !s.cfg.StrictAudit); aerr != nil && s.cfg.StrictAudit {
		s.endSession(context.WithoutCancel(ctx), rec.ID)
		s.refuse(x, m.ID, errAuditUnavailable, aerr)
		return
	}
	if err == nil && revision != "" {
		rec.ProtocolVersion = revision
		if uerr := s.deps.Sessions.Update(ctx, rec); uerr != nil {
			s.endSession(context.WithoutCancel(ctx), rec.ID)
			s.refuse(x, m.ID, errSessionStore, uerr)
			return
		}
	}
	if err != nil || failed || len(out) == 0 {
		s.endSession(context.WithoutCancel(ctx), rec.ID)
		if err != nil {
			e := fromBridge(err)
			if e == errCancelled && ctx.Err() != nil {
				return // the host went away: no one to answer
			}
			if e == errSessionEnded {
				e = errNoServer // the bridge does not know the server
			}
			s.refuse(x, m.ID, e, err)
			return
		}
		if len(out) == 0 {
			s.refuse(x, m.ID, errNoInitialize, nil)
			return
		}
	} else {
		x.w.Header().Set(headerSession, rec.ID)
	}
	if len(out) == 1 {
		writeJSON(x.w, http.StatusOK, out[0])
		return
	}
	sse := startSSE(x.w, s.cfg.StreamWriteTimeout)
	for _, b := range out {
		if sse.send(b) != nil {
			return
		}
	}
}

// createSession stores a new session of the exchange's principal (rec gives the rest of the
// record), under the per-principal cap. When it cannot, the host has been answered and ok is
// false.
func (s *Service) createSession(x *exchange, m *jsonrpc.Message, rec sessionstore.Record) (_ sessionstore.Record, ok bool) {
	ctx := x.r.Context()
	token := tokenID(x.principal)
	rec.Principal, rec.Tenant, rec.TokenID = x.principal.GetId(), x.principal.GetTenant(), token
	rec, err := s.deps.Sessions.Create(ctx, rec, s.cfg.MaxSessionsPerPrincipal)
	if errors.Is(err, sessionstore.ErrTooManySessions) {
		s.refuse(x, m.ID, errTooManySessions, err)
		return rec, false
	}
	if err != nil {
		s.refuse(x, m.ID, errSessionStore, err)
		return rec, false
	}
	// A revocation processed before this session was stored could not find it among the
	// token's sessions; it ends here instead. (One processed after finds it in the store.)
	if token != "" && s.auth.isRevoked(token) {
		s.endSession(context.WithoutCancel(ctx), rec.ID)
		s.refuseRevoked(x, m.ID)
		return rec, false
	}
	return rec, true
}

// refuseRevoked answers a request whose API token was revoked while it was under way, as
// a refused token is answered.
func (s *Service) refuseRevoked(x *exchange, id []byte) {
	x.w.Header().Set("WWW-Authenticate", s.challenge(x.r.Context(), x.server, "invalid_token", "unknown or revoked token"))
	s.refuse(x, id, errUnknownToken, nil)
}

// end ends the host's session (DELETE).
func (s *Service) end(x *exchange) {
	s.endSession(x.r.Context(), x.session.ID)
	x.w.WriteHeader(http.StatusOK)
}

// endSession deletes the session record, ends its GET streams (freeing their queues) and its
// upstreams.
func (s *Service) endSession(ctx context.Context, id string) {
	if err := s.deps.Sessions.End(ctx, id); err != nil && !errors.Is(err, sessionstore.ErrNotFound) {
		s.logger.Warn("end session", "session", id, "err", err)
	}
	s.streams.endSession(id)
	s.resources.forget(id)
	// The bridges also reap on the session watch; this makes the common case immediate.
	s.deps.Bridge.EndSession(id)
}
