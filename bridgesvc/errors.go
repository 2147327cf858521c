package bridgesvc

import (
	"context"
	"errors"

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
	// ErrSessionEnded: the session was ended (CloseSession, expiry) and takes no more messages.
	ErrSessionEnded = errors.New("session ended")
	// ErrNoUpstream: the session has no live upstream for the server (it crashed, lost its
	// session, or the gateway restarted) and the message is not an initialize: the host must
	// start a new session, since a fresh upstream would not know this one.
	ErrNoUpstream = upstream.ErrGone
	// ErrShuttingDown: the bridge is stopping.
	ErrShuttingDown = errors.New("bridge shutting down")

	ErrInvalidMessage   = upstream.ErrInvalidMessage
	ErrMessageTooLarge  = upstream.ErrTooLarge
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

// codes maps each domain error to its Connect code; the first match wins.
var codes = []struct {
	err  error
	code connect.Code
}{
	{ErrInvalidArgument, connect.CodeInvalidArgument},
	{ErrInvalidMessage, connect.CodeInvalidArgument},
	{ErrDuplicateID, connect.CodeInvalidArgument},
	{ErrUnknownServer, connect.CodeNotFound},
	{ErrSessionEnded, connect.CodeNotFound},
	{ErrNoUpstream, connect.CodeNotFound},
	{ErrCatalogNotReady, connect.CodeUnavailable},
	{ErrUnsupportedTransport, connect.CodeUnimplemented},
	{ErrMessageTooLarge, connect.CodeResourceExhausted},
	{ErrTooManyChildren, connect.CodeResourceExhausted},
	{ErrSpawn, connect.CodeFailedPrecondition},
	{ErrUpstreamSession, connect.CodeNotFound}, // the host must start a new session too
	{ErrUpstreamRejected, connect.CodeFailedPrecondition},
	{ErrUpstreamExited, connect.CodeUnavailable},
	{ErrUpstreamDown, connect.CodeUnavailable},
	{ErrUpstreamProtocol, connect.CodeUnavailable},
	{ErrUpstreamClosed, connect.CodeUnavailable},
	{ErrShuttingDown, connect.CodeUnavailable},
	{context.Canceled, connect.CodeCanceled},
	{context.DeadlineExceeded, connect.CodeDeadlineExceeded},
}

// connectError turns err into a Connect error with the code of its domain error; anything
// unknown is Internal.
func connectError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return connect.NewError(c.code, err)
		}
	}
	return connect.NewError(connect.CodeInternal, err)
}
