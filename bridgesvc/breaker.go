package bridgesvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/breaker"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
)

// The circuit breakers: one per server (for stdio, across all its children), in front of
// every request the bridge sends upstream. What a request's end says of the upstream:
//   - a failure: the upstream could not be started (ErrSpawn), reached or answered 5xx
//     (ErrUpstreamDown), died under the call (ErrUpstreamExited), broke its transport's rules
//     (ErrUpstreamProtocol), or did not answer within the call timeout (ErrCallTimeout);
//   - a success: it answered, a JSON-RPC error response of the tool included, and so did an
//     HTTP 4xx (ErrUpstreamRejected, ErrUpstreamSession): the upstream is up and speaking;
//   - nothing at all: the host went away or cancelled, and every refusal of the gateway's
//     own (limits, identity, invalid messages, a session whose upstream ended earlier).
//
// Notifications and responses the host sends are not gated: they are not calls, and a
// host's cancellation should reach the upstream whatever its breaker says.

// Defaults of the breaker flags.
const (
	DefaultBreakerFailures = 5
	DefaultBreakerWindow   = 30 * time.Second
	DefaultBreakerCooldown = 30 * time.Second
	DefaultBreakerProbes   = 1
)

// Bounds of the breaker settings (registrysvc/config has the same for a server's own).
const (
	maxBreakerFailures = 1000
	maxBreakerProbes   = 100
	maxBreakerDuration = time.Hour
)

// MethodBreaker is the method of the audit records of breaker transitions.
const MethodBreaker = "gatehouse/breaker"

// breakerAuditQueue bounds the transitions waiting to be appended to the audit log.
const breakerAuditQueue = 256

// breakerAuditTimeout bounds one append of a transition record.
const breakerAuditTimeout = 10 * time.Second

// BreakerState is the state of a server's breaker.
type BreakerState = breaker.State

// The states of a breaker.
const (
	BreakerClosed   = breaker.Closed
	BreakerOpen     = breaker.Open
	BreakerHalfOpen = breaker.HalfOpen
)

// ErrBreakerOpen: the server's circuit breaker is open (or half-open with its probes out):
// the call is refused without reaching the upstream. The error's text names the server and
// when calls are let through again; its Connect error carries both as a bridgev1.BreakerOpen
// detail (BreakerRetryAfter).
var ErrBreakerOpen = errors.New("circuit breaker open")

// breakerError is a breaker's refusal; it is ErrBreakerOpen.
type breakerError struct{ *breaker.OpenError }

func (e breakerError) Is(target error) bool { return target == ErrBreakerOpen }
func (e breakerError) Unwrap() error        { return e.OpenError }

// AuditAppender appends audit records: auditv1connect.AuditServiceClient, or auditsvc's
// service itself in one process.
type AuditAppender interface {
	Append(context.Context, *connect.Request[auditv1.AppendRequest]) (*connect.Response[auditv1.AppendResponse], error)
}

// WithAudit records every breaker transition in the audit log through a. The appends never
// hold a call: they are queued (at most breakerAuditQueue) and a full queue drops the record
// with an error logged (BreakerAuditDropped counts them).
func WithAudit(a AuditAppender) Option {
	return func(s *Service) { s.audit = a }
}

// withClock sets the breakers' clock (tests).
func withClock(now func() time.Time) Option {
	return func(s *Service) { s.now = now }
}

func (c *Config) registerBreakerFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.BreakerFailures, "breaker-failures", DefaultBreakerFailures, "consecutive failed calls of a server that open its circuit breaker (0: no breaker)")
	fs.DurationVar(&c.BreakerWindow, "breaker-window", DefaultBreakerWindow, "how close together those failures must be")
	fs.DurationVar(&c.BreakerCooldown, "breaker-cooldown", DefaultBreakerCooldown, "how long an open breaker refuses calls before it lets probes through")
	fs.IntVar(&c.BreakerProbes, "breaker-probes", DefaultBreakerProbes, "how many probe calls a half-open breaker lets through at a time")
}

// validateBreaker fills the breaker's defaults and checks its bounds. BreakerFailures has
// no default here: 0 turns the breakers off (RegisterFlags sets the default).
func (c *Config) validateBreaker() error {
	if c.BreakerWindow == 0 {
		c.BreakerWindow = DefaultBreakerWindow
	}
	if c.BreakerCooldown == 0 {
		c.BreakerCooldown = DefaultBreakerCooldown
	}
	if c.BreakerProbes == 0 {
		c.BreakerProbes = DefaultBreakerProbes
	}
	switch {
	case c.BreakerFailures < 0 || c.BreakerFailures > maxBreakerFailures:
		return fmt.Errorf("breaker-failures %d: must be between 0 (off) and %d", c.BreakerFailures, maxBreakerFailures)
	case c.BreakerWindow < 0 || c.BreakerWindow > maxBreakerDuration:
		return fmt.Errorf("breaker-window %v: must be more than 0 and at most %v", c.BreakerWindow, maxBreakerDuration)
	case c.BreakerCooldown < 0 || c.BreakerCooldown > maxBreakerDuration:
		return fmt.Errorf("breaker-cooldown %v: must be more than 0 and at most %v", c.BreakerCooldown, maxBreakerDuration)
	case c.BreakerProbes < 0 || c.BreakerProbes > maxBreakerProbes:
		return fmt.Errorf("breaker-probes %d: must be between 1 and %d", c.BreakerProbes, maxBreakerProbes)
	}
	return nil
}

// breakerSettings are the bridge's defaults overridden by the server's own; a value out of
// bounds (the registry refuses them) keeps the default.
func (s *Service) breakerSettings(srv *registryv1.Server) breaker.Settings {
	st := breaker.Settings{Failures: s.cfg.BreakerFailures, Window: s.cfg.BreakerWindow, Cooldown: s.cfg.BreakerCooldown, Probes: s.cfg.BreakerProbes}
	b := srv.GetBreaker()
	if b == nil {
		return st
	}
	if b.Failures != nil && b.GetFailures() <= maxBreakerFailures {
		st.Failures = int(b.GetFailures())
	}
	if p := b.GetProbes(); p > 0 && p <= maxBreakerProbes {
		st.Probes = int(p)
	}
	if d, ok := breakerDuration(b.GetWindow()); ok {
		st.Window = d
	}
	if d, ok := breakerDuration(b.GetCooldown()); ok {
		st.Cooldown = d
	}
	return st
}

func breakerDuration(d *durationpb.Duration) (time.Duration, bool) {
	if d == nil || d.CheckValid() != nil {
		return 0, false
	}
	v := d.AsDuration()
	return v, v > 0 && v <= maxBreakerDuration
}

// admit asks the server's breaker to let a message through. Only requests are gated; the
// ticket of anything else is nil (its Done does nothing).
func (s *Service) admit(name string, srv *registryv1.Server, m upstream.Message, who owner) (*breaker.Ticket, error) {
	if m.Kind != upstream.KindRequest {
		return nil, nil
	}
	t, err := s.breakers.Admit(name, who.tenant+"\x00"+who.principal, s.breakerSettings(srv))
	if err != nil {
		var oe *breaker.OpenError
		if errors.As(err, &oe) {
			return nil, breakerRefusal(oe, s.now())
		}
		return nil, err
	}
	return t, nil
}

// breakerRefusal is the Connect error of a refusal: Unavailable, the text naming the server
// and when it is tried again, and both as a bridgev1.BreakerOpen detail for the ingress.
func breakerRefusal(oe *breaker.OpenError, now time.Time) error {
	ce := connect.NewError(connect.CodeUnavailable, breakerError{oe})
	if d, err := connect.NewErrorDetail(&bridgev1.BreakerOpen{Server: oe.Server, RetryAfter: durationpb.New(max(oe.RetryAt.Sub(now), 0))}); err == nil {
		ce.AddDetail(d)
	}
	return ce
}

// BreakerRetryAfter returns the wait a breaker's refusal (a Connect error of the bridge's)
// carries, and whether err is one.
func BreakerRetryAfter(err error) (time.Duration, bool) {
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeUnavailable {
		return 0, false
	}
	for _, d := range ce.Details() {
		v, err := d.Value()
		if bo, ok := v.(*bridgev1.BreakerOpen); ok && err == nil && bo.GetRetryAfter().CheckValid() == nil {
			return bo.GetRetryAfter().AsDuration(), true
		}
	}
	return 0, false
}

// breakerResult is what the end of a request (err, nil for an answer) says of the upstream;
// ctx is the caller's.
func breakerResult(ctx context.Context, err error) breaker.Result {
	switch {
	case err == nil:
		return breaker.Success
	case ctx.Err() != nil:
		return breaker.Neutral // the host cancelled, or its own deadline passed
	case errors.Is(err, ErrCallTimeout), errors.Is(err, ErrUpstreamExited):
		// A caller can make its own call slow, or its own stdio child exit.
		return breaker.CallerFailure
	case errors.Is(err, ErrSpawn), errors.Is(err, ErrUpstreamDown), errors.Is(err, ErrUpstreamProtocol):
		return breaker.Failure
	case errors.Is(err, ErrUpstreamRejected), errors.Is(err, ErrUpstreamSession):
		return breaker.Success
	}
	return breaker.Neutral
}

// BreakerState is the state of the server's breaker (closed for a server never called).
func (s *Service) BreakerState(server string) BreakerState { return s.breakers.State(server) }

// BreakerAuditDropped counts the transition records dropped because the audit queue was full.
func (s *Service) BreakerAuditDropped() uint64 { return s.transitions.dropped.Load() }

// onTransition logs a transition (open: WARN; half-open, closed: INFO) and queues its audit
// record. It runs under the breakers' lock: it never blocks.
func (s *Service) onTransition(tr breaker.Transition) {
	level := slog.LevelInfo
	attrs := []any{"server", tr.Server, "from", tr.From.String(), "to", tr.To.String(), "reason", tr.Reason}
	if tr.To == breaker.Open {
		level = slog.LevelWarn
		attrs = append(attrs, "retry_at", tr.RetryAt.UTC().Format(time.RFC3339Nano))
	}
	s.log.Log(context.Background(), level, "circuit breaker "+tr.To.String(), attrs...)
	s.metrics.Transition(tr.Server, breakerGauge(tr.To), tr.To.String())
	if s.audit == nil {
		return
	}
	outcome := auditv1.Outcome_OUTCOME_ALLOWED
	text := tr.Reason
	if tr.To == breaker.Open {
		outcome = auditv1.Outcome_OUTCOME_FAILED
		text += "; probes from " + tr.RetryAt.UTC().Format(time.RFC3339Nano)
	}
	rec := &auditv1.Record{
		Time: timestamppb.New(tr.Time), CallId: randomID(), Server: tr.Server, Method: MethodBreaker,
		Phase: auditv1.Phase_PHASE_COMPLETE, Outcome: outcome, Error: text,
	}
	select {
	case s.transitions.q <- rec:
	default:
		n := s.transitions.dropped.Add(1)
		s.log.Error("breaker transition not audited: the audit queue is full", "server", tr.Server, "to", tr.To.String(), "dropped", n)
	}
}

// transitionLog is the queue of transition records and the worker that appends them.
type transitionLog struct {
	q       chan *auditv1.Record
	stop    chan struct{}
	done    chan struct{}
	dropped atomic.Uint64
}

func newTransitionLog() *transitionLog {
	return &transitionLog{q: make(chan *auditv1.Record, breakerAuditQueue), stop: make(chan struct{}), done: make(chan struct{})}
}

// run appends the queued records until stop, then what is left in the queue.
func (s *Service) runTransitionLog() {
	l := s.transitions
	defer close(l.done)
	for {
		select {
		case rec := <-l.q:
			s.appendTransition(rec)
		case <-l.stop:
			for {
				select {
				case rec := <-l.q:
					s.appendTransition(rec)
				default:
					return
				}
			}
		}
	}
}

func (s *Service) appendTransition(rec *auditv1.Record) {
	ctx, cancel := context.WithTimeout(context.Background(), breakerAuditTimeout)
	defer cancel()
	if _, err := s.audit.Append(ctx, connect.NewRequest(&auditv1.AppendRequest{Record: rec, Deferred: true})); err != nil {
		s.log.Error("breaker transition not audited", "server", rec.GetServer(), "record", rec.GetError(), "err", err)
	}
}

// closeTransitionLog appends what is queued and stops the worker, or gives up when ctx ends.
func (s *Service) closeTransitionLog(ctx context.Context) {
	if s.audit == nil {
		return
	}
	s.stopLog.Do(func() { close(s.transitions.stop) })
	select {
	case <-s.transitions.done:
	case <-ctx.Done():
	}
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
