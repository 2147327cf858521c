package bridgesvc

import (
	"context"
	"fmt"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
	"go.opentelemetry.io/otel/trace"
)

// Upstreams of aggregated sessions (the ingress's /mcp) open lazily: the host initialized
// the gateway, not each server, so the first request for a server starts its upstream and
// initializes it with the host's own initialize (its capabilities and client info) before
// the request goes through. An upstream that ended (a crashed child, a forgotten HTTP
// session) is opened again the same way on the next request: the aggregated session outlives
// any one of its upstreams.

// lazyConn returns the session's upstream for a server on behalf of an aggregated session
// whose host sent init (its initialize request). A request opens the upstream when there is
// none; a notification or response gets only a live one: (nil, nil) when none is open, since
// an upstream that was never opened has nobody to tell.
func (s *Service) lazyConn(ctx context.Context, sessionID, name string, srv *registryv1.Server, m upstream.Message, init []byte, who owner) (upstream.Conn, error) {
	if m.Kind != upstream.KindRequest {
		return s.live(ctx, sessionID, name)
	}
	if m.Method == "initialize" {
		return nil, fmt.Errorf("%w: an aggregated session's upstreams are initialized by the bridge", ErrInvalidArgument)
	}
	im, err := jsonrpc.Peek(init)
	if err != nil || im.Kind != upstream.KindRequest || im.Method != "initialize" {
		return nil, fmt.Errorf("%w: initialize is not an initialize request", ErrInvalidArgument)
	}
	return s.conn(ctx, sessionID, name, srv, true, who, &im)
}

// live returns the session's open upstream for a server, waiting for one being started, or
// nil when there is none.
func (s *Service) live(ctx context.Context, sessionID, name string) (upstream.Conn, error) {
	s.mu.Lock()
	sess, err := s.sessionLocked(sessionID)
	var e *entry
	if err == nil {
		e = sess.upstreams[name]
	}
	s.mu.Unlock()
	if err != nil || e == nil {
		return nil, err
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if e.conn == nil || isDone(e.conn.Done()) {
		return nil, nil
	}
	return e.conn, nil
}

// initialize opens conn for an aggregated session: the host's initialize, under the call
// timeout and the session's life (not the first caller's, whom others may be waiting
// behind), must be answered with a result; the negotiated revision is kept on conn, and
// notifications/initialized follows. by is the span of the call that opens it: the
// initialize is a child of it, so the upstream sees the trace of the call that caused it.
func (s *Service) initialize(sess *session, name string, srv *registryv1.Server, conn upstream.Conn, init upstream.Message, by trace.SpanContext) error {
	after := s.callTimeout(srv)
	ctx, cancel := context.WithTimeout(trace.ContextWithSpanContext(sess.ctx, by), after)
	defer cancel()
	var answered, failed bool
	var revision string
	err := s.sendTimed(ctx, conn, sess.id, name, after, init, func(out upstream.Message) error {
		if out.IsResponseTo(init.ID) {
			answered, failed = true, out.IsError
			revision, _ = upstream.InitializeResult(&init, &out)
		}
		return nil
	})
	switch {
	case err != nil:
		return fmt.Errorf("initialize the upstream: %w", err)
	case !answered:
		return fmt.Errorf("%w: the upstream did not answer initialize", ErrUpstreamRejected)
	case failed:
		return fmt.Errorf("%w: the upstream answered initialize with an error", ErrUpstreamRejected)
	}
	if revision != "" {
		conn.SetProtocolVersion(revision)
	}
	note := upstream.Message{Raw: []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`), Kind: upstream.KindNotification, Method: "notifications/initialized"}
	if err := conn.Send(ctx, note, func(upstream.Message) error { return nil }); err != nil {
		return fmt.Errorf("send notifications/initialized: %w", err)
	}
	s.log.Info("upstream opened for an aggregated session", "session", tag(sess.id), "server", name, "protocol_version", revision)
	return nil
}
