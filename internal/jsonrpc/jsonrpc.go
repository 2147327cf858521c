// Package jsonrpc is the gateway's one JSON-RPC 2.0 codec, used at both edges. It scans a
// message once, left to right, and never re-encodes it: the bytes it judged are the bytes
// forwarded.
//
// Parse is the strict entry point, for what hosts send: valid UTF-8 and JSON, bounded depth
// and counts, no two keys of one object that fold to the same key, only the six JSON-RPC
// members at the top level, ids that are strings or integers, and the params the gateway
// decides on (a tool's name, a resource's URI) present and bounded.
//
// Peek and Split are the routing entry point, for what upstreams send: the same scanner,
// limits and duplicate-key rule, but unknown top-level members are tolerated and ids may be
// any number or null; they read what the bridge routes on (kind, id, method, error flag,
// progress token, params._meta, an initialize result's protocolVersion).
//
// In both, a member the codec reads that is present only as a case variant ("METHOD", or
// "paramſ" with a long s) is refused, as is any object with two keys that fold alike: a peer
// decoding with encoding/json matches names case-insensitively, and the gateway must never
// judge or route on a member other than the one such a peer would read.
package jsonrpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// JSON-RPC 2.0 error codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
)

// Kind says what a message is.
type Kind int

// The kinds of JSON-RPC message.
const (
	KindRequest Kind = iota + 1
	KindNotification
	KindResponse
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindNotification:
		return "notification"
	case KindResponse:
		return "response"
	}
	return "invalid"
}

// Message is one JSON-RPC message as either edge reads it. Raw is exactly the bytes received;
// the other byte slices alias it.
type Message struct {
	Raw    []byte
	Kind   Kind
	Method string
	// ID is the raw JSON id (a string or a number; "null" in an upstream's error response to
	// an unreadable request), nil for notifications. IDKey turns it into a map key.
	ID json.RawMessage
	// Params is the raw params member, nil when absent.
	Params json.RawMessage
	// Name is params.name of tools/call and prompts/get, params.uri of resources/read,
	// resources/subscribe and resources/unsubscribe.
	Name string
	// Arguments is params.arguments, raw, of tools/call and prompts/get.
	Arguments json.RawMessage
	// ProtocolVersion is params.protocolVersion of an initialize request, or
	// result.protocolVersion of a response (an initialize result).
	ProtocolVersion string
	// IsError is set on an error response.
	IsError bool
	// ProgressToken is params._meta.progressToken of a request, or params.progressToken of
	// a notifications/progress, raw; nil when absent.
	ProgressToken json.RawMessage
	// Meta is params._meta of a request or notification, raw; nil when absent.
	Meta json.RawMessage
	// Traceparent and Tracestate are params._meta.traceparent and params._meta.tracestate
	// of a request, when they are strings of at most 512 bytes; "" otherwise.
	Traceparent, Tracestate string
	// traceparent is params._meta.traceparent of a request, raw, for WithTraceparent.
	traceparent []byte
	// traceVariant: _meta holds a case variant of traceparent (WithTraceparent leaves such
	// a message as it is).
	traceVariant bool
}

// IsResponseTo reports whether m is the response to the request with the given raw id.
func (m *Message) IsResponseTo(id []byte) bool {
	if m.Kind != KindResponse || id == nil {
		return false
	}
	// A peer usually echoes the id as it was written: equal bytes need no normalising (and
	// no allocation).
	return bytes.Equal(m.ID, id) || IDKey(m.ID) == IDKey(id)
}

// ErrInvalidMessage is wrapped by every error of the routing entry point (Peek, Split).
var ErrInvalidMessage = errors.New("invalid JSON-RPC message")

// Error is a parse or validation failure with the JSON-RPC code to answer it with.
type Error struct {
	Code    int
	Message string
	// ID is the request id when it could be read, so the error can answer it.
	ID json.RawMessage
}

func (e *Error) Error() string { return e.Message }

func parseErr(format string, args ...any) *Error {
	return &Error{Code: CodeParseError, Message: fmt.Sprintf(format, args...)}
}

func invalid(id json.RawMessage, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidRequest, Message: fmt.Sprintf(format, args...), ID: id}
}

// MaxName bounds a tool or prompt name, or a resource URI, at the strict edge.
const MaxName = 1024

// Parse is the strict entry point: it parses a body a host sent, holding one message or, when
// allowBatch is true, possibly a batch (a JSON array of messages). It returns the messages
// and whether the body was a batch. Errors are *Error.
func Parse(body []byte, allowBatch bool) ([]*Message, bool, error) {
	noBatch := ""
	if !allowBatch {
		noBatch = "batches are not allowed in this protocol revision"
	}
	one, msgs, batch, err := scanBody(body, true, noBatch, nil)
	if err != nil {
		return nil, batch, err
	}
	if !batch {
		single := &struct { // one allocation for the message and the slice
			m Message
			p [1]*Message
		}{m: one}
		single.p[0] = &single.m
		return single.p[:], false, nil
	}
	out := make([]*Message, len(msgs))
	for i := range msgs {
		out[i] = &msgs[i]
	}
	return out, batch, nil
}

// Peek is the routing entry point for exactly one message an upstream sent. Errors wrap
// ErrInvalidMessage and an *Error.
func Peek(raw []byte) (Message, error) {
	m, _, _, err := scanBody(raw, false, "a batch where one message is expected", nil)
	if err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	return m, nil
}

// Split is the routing entry point for one message or a batch an upstream sent; the Raw of a
// batch element is its own slice of raw. Errors wrap ErrInvalidMessage and an *Error.
func Split(raw []byte) ([]Message, error) {
	one, msgs, batch, err := scanBody(raw, false, "", nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	if !batch {
		return []Message{one}, nil
	}
	return msgs, nil
}

// IDKey turns a raw JSON id or progress token into a map key: a string and a number with the
// same text stay distinct (a string's key keeps its quotes, a number's text has none), and
// escaped and unescaped spellings of one string agree. Numbers keep their text: a peer echoes
// an id as it was written. Bytes that are no JSON string are their own key.
func IDKey(raw []byte) string {
	if len(raw) < 2 || raw[0] != '"' {
		return string(raw)
	}
	t := scanner{data: raw}
	escaped, _, err := t.str()
	if err != nil || t.pos != len(raw) || !escaped {
		return string(raw)
	}
	key := append(make([]byte, 0, len(raw)), '"')
	return string(append(appendUnquoted(key, raw[1:len(raw)-1]), '"'))
}

// ErrorResponse encodes a JSON-RPC error response answering id (null when id is nil).
func ErrorResponse(id json.RawMessage, code int, message string) []byte {
	if id == nil {
		id = json.RawMessage("null")
	}
	b, err := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}{JSONRPC: "2.0", ID: id, Error: struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{code, message}})
	if err != nil {
		panic(err) // only strings and raw ids already validated
	}
	return b
}

// AsError returns err as *Error, wrapping anything else as an internal error.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternalError, Message: err.Error()}
}
