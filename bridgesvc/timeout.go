package bridgesvc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
)

// Bounds of the call timeout.
const (
	DefaultCallTimeout = 60 * time.Second
	// MaxCallTimeout matches the registry's bound on a server's call_timeout.
	MaxCallTimeout = time.Hour
	// cancelTimeout bounds the delivery of the notifications/cancelled sent upstream after a
	// call timed out.
	cancelTimeout = 5 * time.Second
)

// timeoutError is the error of a request the upstream did not answer in time. Its text is
// what the host is told; it is ErrCallTimeout.
type timeoutError struct{ after time.Duration }

func (e *timeoutError) Error() string {
	return "the upstream did not answer within " + formatDuration(e.after)
}

func (e *timeoutError) Is(target error) bool { return target == ErrCallTimeout }

// formatDuration writes whole seconds as "60s" rather than "1m0s".
func formatDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// errCallTimer is the cause of a call's context ended by its timeout.
var errCallTimer = errors.New("call timeout")

// callTimeout is the server's call_timeout when it sets a valid one, else the default.
func (s *Service) callTimeout(srv *registryv1.Server) time.Duration {
	if ct := srv.GetCallTimeout(); ct != nil && ct.IsValid() {
		if d := ct.AsDuration(); d > 0 && d <= MaxCallTimeout {
			return d
		}
	}
	return s.cfg.DefaultCallTimeout
}

// sendTimed is conn.Send bounded, for a request, by after (the call timeout): the wait for
// its response ends then, the upstream is told the request is cancelled, and the error is
// ErrCallTimeout. The connection stays usable. A notification or a response is sent as is.
func (s *Service) sendTimed(ctx context.Context, conn upstream.Conn, sessionID, server string, after time.Duration, m upstream.Message, emit upstream.Emit) error {
	if m.Kind != upstream.KindRequest {
		return conn.Send(ctx, m, emit)
	}
	// The last moment before the upstream: the span of this request becomes the parent the
	// upstream sees, in params._meta.traceparent (and, over HTTP, the traceparent header).
	ctx, span, m := s.startUpstream(ctx, server, m)
	cctx, cancel := context.WithTimeoutCause(ctx, after, errCallTimer)
	defer cancel()
	err := conn.Send(cctx, m, emit)
	telemetry.End(span, err)
	if err == nil || ctx.Err() != nil || !errors.Is(context.Cause(cctx), errCallTimer) {
		return err
	}
	s.log.Warn("upstream call timed out", "session", tag(sessionID), "server", server, "method", m.Method, "id", string(m.ID), "after", after, "err", err)
	// An initialize must not be cancelled (the protocol forbids it); the upstream session it
	// was opening is left to end with the gateway session.
	if m.Method != "initialize" {
		go s.cancelUpstream(conn, sessionID, server, m.ID)
	}
	return &timeoutError{after: after}
}

// cancelUpstream tells the upstream that the request with the raw id was cancelled, so that
// it can stop working on it. Best effort: a dead upstream is reported when next used.
func (s *Service) cancelUpstream(conn upstream.Conn, sessionID, server string, id []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
	defer cancel()
	raw := fmt.Appendf(nil, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%s,"reason":"the gateway's call timeout expired"}}`, id)
	note := upstream.Message{Raw: raw, Kind: upstream.KindNotification, Method: "notifications/cancelled"}
	if err := conn.Send(ctx, note, func(upstream.Message) error { return nil }); err != nil {
		s.log.Debug("cannot send notifications/cancelled upstream", "session", tag(sessionID), "server", server, "err", err)
	}
}
