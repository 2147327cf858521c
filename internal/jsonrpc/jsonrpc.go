// Package jsonrpc parses the JSON-RPC 2.0 envelope of MCP messages once, at the edge, strictly:
// valid UTF-8, valid JSON, bounded depth, no duplicate or case-variant keys in any object, exact
// (case-sensitive) member names. It never re-encodes: the bytes it judged are the bytes that
// are forwarded.
package jsonrpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// JSON-RPC 2.0 error codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
)

// MaxDepth bounds the nesting of objects and arrays in a message.
const MaxDepth = 64

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

// Message is one parsed JSON-RPC message. Raw is exactly the bytes received.
type Message struct {
	Raw    []byte
	Kind   Kind
	Method string
	// ID is the raw JSON id (a string or a number), nil for notifications.
	ID json.RawMessage
	// Params is the raw params member, nil when absent.
	Params json.RawMessage
	// Name is params.name for tools/call and prompts/get, params.uri for resources/read.
	Name string
	// Arguments is params.arguments, raw, for tools/call and prompts/get.
	Arguments json.RawMessage
	// ProtocolVersion is params.protocolVersion of an initialize request.
	ProtocolVersion string
}

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

// Parse parses a body holding one message or, when batch is true, possibly a batch (a JSON
// array of messages). It returns the messages and whether the body was a batch.
func Parse(body []byte, allowBatch bool) ([]*Message, bool, error) {
	if !utf8.Valid(body) {
		return nil, false, parseErr("body is not valid UTF-8")
	}
	if err := validate(body); err != nil {
		return nil, false, err
	}
	trimmed := bytes.TrimSpace(body)
	if trimmed[0] == '[' {
		if !allowBatch {
			return nil, true, invalid(nil, "batches are not allowed in this protocol revision")
		}
		var msgs []*Message
		err := eachElement(trimmed, func(raw []byte) error {
			m, err := parseOne(raw)
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
			return nil
		})
		if err != nil {
			return nil, true, err
		}
		if len(msgs) == 0 {
			return nil, true, invalid(nil, "empty batch")
		}
		return msgs, true, nil
	}
	m, err := parseOne(trimmed)
	if err != nil {
		return nil, false, err
	}
	return []*Message{m}, false, nil
}

// ParseMessage parses exactly one message (no batch).
func ParseMessage(body []byte) (*Message, error) {
	msgs, _, err := Parse(body, false)
	if err != nil {
		return nil, err
	}
	return msgs[0], nil
}

// foldKey maps every key that encoding/json (and so many an upstream) would match
// case-insensitively to one value: each rune becomes the smallest rune of its Unicode
// simple-folding orbit, so "K", "k" and the Kelvin sign agree, as do "s" and "ſ".
func foldKey(k string) string {
	ascii := true
	for i := 0; i < len(k); i++ {
		if k[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToUpper(k) // an ASCII letter's orbit starts at its upper case
	}
	var b strings.Builder
	b.Grow(len(k))
	for _, r := range k {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// MaxName bounds a tool or prompt name, or a resource URI.
const MaxName = 1024

func parseOne(raw json.RawMessage) (*Message, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, invalid(nil, "a JSON-RPC message must be an object")
	}
	m := &Message{Raw: raw}
	var version, method, result, rpcErr []byte
	var unknown string
	_ = eachMember(raw, func(key string, val []byte) error {
		switch key {
		case "jsonrpc":
			version = val
		case "id":
			m.ID = val
		case "method":
			method = val
		case "params":
			m.Params = val
		case "result":
			result = val
		case "error":
			rpcErr = val
		default:
			if unknown == "" {
				unknown = key
			}
		}
		return nil
	})
	if m.ID != nil {
		if err := checkID(m.ID); err != nil {
			return nil, err
		}
	}
	if unknown != "" {
		return nil, invalid(m.ID, "unknown member %q: a JSON-RPC message has only jsonrpc, id, method, params, result and error", unknown)
	}
	if v, ok := stringValue(version); !ok || v != "2.0" {
		return nil, invalid(m.ID, `"jsonrpc" must be "2.0"`)
	}
	switch {
	case method != nil:
		if result != nil || rpcErr != nil {
			return nil, invalid(m.ID, "a message cannot have both method and result or error")
		}
		name, ok := stringValue(method)
		if !ok || name == "" {
			return nil, invalid(m.ID, `"method" must be a non-empty string`)
		}
		m.Method = name
		if m.ID != nil {
			m.Kind = KindRequest
		} else {
			m.Kind = KindNotification
		}
	case (result != nil) != (rpcErr != nil):
		if m.ID == nil {
			return nil, invalid(nil, "a response needs an id")
		}
		m.Kind = KindResponse
	default:
		return nil, invalid(m.ID, "not a request, notification or response")
	}
	if m.Params != nil && m.Params[0] != '{' && m.Params[0] != '[' {
		return nil, invalid(m.ID, `"params" must be an object or an array`)
	}
	if m.Kind == KindRequest {
		if err := m.readParams(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// checkID accepts a string or an integer; MCP forbids null ids.
func checkID(id json.RawMessage) error {
	if len(id) == 0 {
		return invalid(nil, "empty id")
	}
	switch id[0] {
	case '"':
		return nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		if bytes.ContainsAny(id, ".eE") {
			return invalid(nil, "id must be a string or an integer")
		}
		return nil
	}
	return invalid(nil, "id must be a string or an integer")
}

func (m *Message) readParams() error {
	switch m.Method {
	case "tools/call", "prompts/get", "resources/read", "initialize":
	default:
		return nil
	}
	if len(m.Params) == 0 || m.Params[0] != '{' {
		return &Error{Code: CodeInvalidParams, Message: m.Method + " needs params", ID: m.ID}
	}
	key := "name"
	switch m.Method {
	case "resources/read":
		key = "uri"
	case "initialize":
		key = "protocolVersion"
	}
	var v, args []byte
	_ = eachMember(m.Params, func(k string, val []byte) error {
		switch k {
		case key:
			v = val
		case "arguments":
			args = val
		}
		return nil
	})
	s, ok := stringValue(v)
	if !ok || s == "" {
		return &Error{Code: CodeInvalidParams, Message: fmt.Sprintf("%s needs params.%s, a non-empty string", m.Method, key), ID: m.ID}
	}
	if m.Method == "initialize" {
		m.ProtocolVersion = s
		return nil
	}
	if len(s) > MaxName {
		return &Error{Code: CodeInvalidParams, Message: fmt.Sprintf("params.%s is longer than %d bytes", key, MaxName), ID: m.ID}
	}
	m.Name = s
	m.Arguments = args
	return nil
}

// IDKey is a map key for a raw id: string and number ids with the same text stay distinct.
func IDKey(id json.RawMessage) string { return string(id) }

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
