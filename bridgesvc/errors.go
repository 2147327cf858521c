package bridgesvc

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
)

// Domain errors of the bridge. Those raised by the transports are declared in the upstream
// package and named here so that callers and the code table see one list.
var (
	// ErrInvalidArgument: a malformed request (missing session or server, bad id).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnknownServer: the server is not in the catalogue.
	ErrUnknownServer = errors.New("unknown server")
	// ErrCatalogNotReady: the catalogue has not loaded yet, so a server cannot be resolved.
	ErrCatalogNotReady = errors.New("server catalogue not loaded yet")
	// ErrUnsupportedTransport: the server's transport is one the bridge cannot speak.
	ErrUnsupportedTransport = errors.New("unsupported transport")
	// ErrSessionEnded: the session was ended (by the ingress or on expiry) and takes no more messages.
	ErrSessionEnded = errors.New("session ended")
	// ErrNoUpstream: the session has no live upstream for the server (it crashed, lost its
	// session, or the gateway restarted) and the message is not an initialize: the host must
	// start a new session, since a fresh upstream would not know this one.
	ErrNoUpstream = upstream.ErrGone
	// ErrShuttingDown: the bridge is stopping.
	ErrShuttingDown = errors.New("bridge shutting down")
	// ErrMessageTooLarge: the host's message is over the bridge's size limit.
	ErrMessageTooLarge = errors.New("message too large")
	// ErrCallTimeout: the upstream did not answer a request within the call timeout (the
	// server's call_timeout, else Config.DefaultCallTimeout). The call was cancelled upstream;
	// the session stays usable.
	ErrCallTimeout = errors.New("upstream call timed out")
	// ErrIdentity: the server's upstream identity cannot be used as configured (identity.go):
	// its secret is not set or not readable, or gateway-jwt without authsvc.
	ErrIdentity = errors.New("upstream identity misconfigured")
	// ErrIdentityUnavailable: what identifies the caller to the upstream cannot be had now:
	// authsvc, or the authorization server of a token exchange, is unavailable.
	ErrIdentityUnavailable = errors.New("upstream identity unavailable")
	// ErrExchangeRefused: the authorization server refused to exchange the host's token.
	ErrExchangeRefused = errors.New("token exchange refused")
	// ErrNoSubjectToken: a server that acts with the caller's own identity (token exchange),
	// and a message that carries no host token to exchange.
	ErrNoSubjectToken = errors.New("the server acts with the caller's own identity (token exchange) and the call carries no OpenID Connect token")

	ErrInvalidMessage = upstream.ErrInvalidMessage
	// ErrUpstreamTooLarge: a message (or stdout line) from the upstream over the size limit.
	// It is not a quota: its code is not ResourceExhausted.
	ErrUpstreamTooLarge = upstream.ErrTooLarge
	ErrSpawn            = upstream.ErrSpawn
	ErrTooManyChildren  = upstream.ErrTooMany
	ErrUpstreamExited   = upstream.ErrExited
	ErrUpstreamDown     = upstream.ErrUnavailable
	ErrUpstreamSession  = upstream.ErrSessionGone
	ErrUpstreamRejected = upstream.ErrRejected
	ErrUpstreamProtocol = upstream.ErrProtocol
	ErrUpstreamClosed   = upstream.ErrClosed
	ErrDuplicateID      = upstream.ErrDuplicateID
)

// codes maps each domain error to its Connect code and to what the host is told; the first
// match wins. An empty reason means the error's own text is shown: the bridge composed it
// from the request and its own settings alone. Otherwise the text may hold a file path, a URL,
// an address or an upstream's words, so the host gets the reason (or the shorter one the
// transport attached, see hostReason) and the log gets the text. Warn marks failures an
// operator should see; the rest are logged at debug.
var codes = []struct {
	err    error
	code   connect.Code
	reason string
	warn   bool
}{
	{err: ErrInvalidArgument, code: connect.CodeInvalidArgument},
	{err: ErrInvalidMessage, code: connect.CodeInvalidArgument},
	{err: ErrDuplicateID, code: connect.CodeInvalidArgument},
	{err: ErrMessageTooLarge, code: connect.CodeInvalidArgument},
	{err: ErrUnknownServer, code: connect.CodeNotFound},
	{err: ErrSessionEnded, code: connect.CodeNotFound},
	{err: ErrNoUpstream, code: connect.CodeNotFound},
	{err: ErrCatalogNotReady, code: connect.CodeUnavailable},
	{err: ErrBreakerOpen, code: connect.CodeUnavailable}, // its text names the server and the time; the transition was logged
	{err: ErrUnsupportedTransport, code: connect.CodeUnimplemented, reason: "the server's transport is not supported", warn: true},
	{err: ErrCallTimeout, code: connect.CodeDeadlineExceeded, warn: true},
	{err: ErrIdentity, code: connect.CodeFailedPrecondition, reason: "the gateway cannot identify the caller to the upstream", warn: true},
	{err: ErrIdentityUnavailable, code: connect.CodeUnavailable, reason: "the gateway cannot identify the caller to the upstream now", warn: true},
	{err: ErrExchangeRefused, code: connect.CodePermissionDenied, reason: "the authorization server refused to exchange the caller's token for the upstream's"},
	{err: ErrNoSubjectToken, code: connect.CodeFailedPrecondition},
	{err: ErrUpstreamTooLarge, code: connect.CodeFailedPrecondition, reason: "the upstream's message exceeds the size limit", warn: true},
	{err: ErrTooManyChildren, code: connect.CodeResourceExhausted, warn: true},
	{err: ErrSpawn, code: connect.CodeFailedPrecondition, reason: "the upstream could not be started", warn: true},
	{err: ErrUpstreamSession, code: connect.CodeNotFound, reason: "the upstream no longer knows the session; start a new session"}, // the host must start a new session too
	{err: ErrUpstreamRejected, code: connect.CodeFailedPrecondition, reason: "the upstream rejected the message", warn: true},
	{err: ErrUpstreamExited, code: connect.CodeUnavailable, reason: "the upstream exited", warn: true},
	{err: ErrUpstreamDown, code: connect.CodeUnavailable, reason: "the upstream is unavailable", warn: true},
	{err: ErrUpstreamProtocol, code: connect.CodeUnavailable, reason: "the upstream broke the transport protocol", warn: true},
	{err: ErrUpstreamClosed, code: connect.CodeUnavailable},
	{err: ErrShuttingDown, code: connect.CodeUnavailable},
	{err: context.Canceled, code: connect.CodeCanceled},
	{err: context.DeadlineExceeded, code: connect.CodeDeadlineExceeded},
}

// internalReason is what the host is told of an error the table does not know.
const internalReason = "internal error in the bridge"

// hostReason is implemented by transport errors that carry a short reason fit for the host
// ("the upstream answered HTTP 500"): no path, URL, address or upstream body.
type hostReason interface{ HostReason() string }

// hostError is what the host sees of a failure: a short reason. The full error stays
// reachable with errors.Is and errors.As in process, and is logged by logFailure.
type hostError struct {
	reason string
	cause  error
}

func (e *hostError) Error() string { return e.reason }
func (e *hostError) Unwrap() error { return e.cause }

// connectError turns err into a Connect error with the code of its domain error and a
// message fit for the host; anything unknown is Internal.
func connectError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	for _, c := range codes {
		if !errors.Is(err, c.err) {
			continue
		}
		if c.reason == "" {
			return connect.NewError(c.code, err)
		}
		reason := c.reason
		var hr hostReason
		if errors.As(err, &hr) && hr.HostReason() != "" {
			reason = hr.HostReason()
		}
		return connect.NewError(c.code, &hostError{reason: reason, cause: err})
	}
	return connect.NewError(connect.CodeInternal, &hostError{reason: internalReason, cause: err})
}

// logFailure logs an error Deliver or Subscribe returns, with what the host was not told.
func (s *Service) logFailure(ctx context.Context, op, sessionID, server string, err error) {
	if err == nil {
		return
	}
	level, code := slog.LevelDebug, connect.CodeOf(err)
	var he *hostError
	if errors.As(err, &he) {
		err = he.cause
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			if c.warn {
				level = slog.LevelWarn
			}
			break
		}
	}
	if he != nil && he.reason == internalReason {
		level = slog.LevelError
	}
	s.log.Log(context.WithoutCancel(ctx), level, op+" failed", "session", tag(sessionID), "server", server, "code", code.String(), "err", err)
}
