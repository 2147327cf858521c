// Package upstream holds what every upstream transport of the bridge shares: the Conn contract
// a transport implements and the errors a transport reports. Messages stay raw bytes, read once
// per hop by the gateway's one JSON-RPC codec (internal/jsonrpc's routing entry point, Peek and
// Split); only the members needed to route them are read.
package upstream

import (
	"context"
	"errors"

	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// Message is the routing view of one JSON-RPC message, as jsonrpc.Peek and jsonrpc.Split read it.
type Message = jsonrpc.Message

// Kind says what a JSON-RPC message is.
type Kind = jsonrpc.Kind

// The kinds of JSON-RPC message.
const (
	KindRequest      = jsonrpc.KindRequest
	KindNotification = jsonrpc.KindNotification
	KindResponse     = jsonrpc.KindResponse
)

// Errors a transport reports; the bridge maps each to a Connect code in one table.
var (
	// ErrInvalidMessage: bytes that are not one JSON-RPC message (or a batch of them).
	ErrInvalidMessage = jsonrpc.ErrInvalidMessage
	// ErrTooLarge: a message or line over the configured size limit.
	ErrTooLarge = errors.New("message too large")
	// ErrSpawn: a stdio command that could not be started.
	ErrSpawn = errors.New("cannot start upstream")
	// ErrTooMany: the bridge already runs as many children as it may.
	ErrTooMany = errors.New("too many upstream processes")
	// ErrExited: a stdio child that ended on its own (crash or exit).
	ErrExited = errors.New("upstream exited")
	// ErrGone: the upstream had already ended before this message reached it; the session
	// must start over (a new upstream would not know it).
	ErrGone = errors.New("the session's upstream has ended; start a new session")
	// ErrUnavailable: the upstream cannot be reached or failed (network error, 5xx).
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrSessionGone: the upstream no longer knows its session (HTTP 404); re-initialize.
	ErrSessionGone = errors.New("upstream session expired")
	// ErrRejected: the upstream refused the message (HTTP 4xx other than a lost session).
	ErrRejected = errors.New("upstream rejected the message")
	// ErrProtocol: the upstream broke the transport's rules (wrong content type, a stream that
	// ended before the response, no response to a request).
	ErrProtocol = errors.New("upstream protocol error")
	// ErrClosed: the upstream was shut down by the bridge (session ended, bridge stopping).
	ErrClosed = errors.New("upstream closed")
	// ErrDuplicateID: a request whose id is already in flight on the same upstream.
	ErrDuplicateID = errors.New("request id already in flight")
)

// Emit receives one upstream message. An error from it ends the operation that called it.
type Emit func(Message) error

// Conn is the live connection of one (session, server) pair, whatever the transport.
type Conn interface {
	// Send delivers m. For a request it emits every upstream message that belongs to it and
	// returns after the response; for a notification or a response it returns once delivered.
	Send(ctx context.Context, m Message, emit Emit) error
	// Listen emits the upstream's messages that belong to no request until ctx ends or the
	// connection ends.
	Listen(ctx context.Context, emit Emit) error
	// SetProtocolVersion records the negotiated revision when the caller knows it.
	SetProtocolVersion(v string)
	// Close ends the connection (stdio: shutdown and reap; HTTP: best-effort DELETE). It
	// returns once everything is released, escalating to force when ctx ends.
	Close(ctx context.Context) error
	// Done is closed once the connection has ended, on its own or by Close.
	Done() <-chan struct{}
	// Err says why the connection ended; valid after Done is closed.
	Err() error
}

// ValidProtocolVersion reports whether v looks like a protocol revision ("2025-11-25"): short,
// and made only of characters that are safe in an HTTP header.
func ValidProtocolVersion(v string) bool {
	if v == "" || len(v) > 32 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// InitializeResult returns the protocol revision an upstream announced, when out is the
// response to req and req is an initialize request.
func InitializeResult(req, out *Message) (string, bool) {
	if req.Method != "initialize" || !out.IsResponseTo(req.ID) || !ValidProtocolVersion(out.ProtocolVersion) {
		return "", false
	}
	return out.ProtocolVersion, true
}
