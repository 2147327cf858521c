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
	"io"
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
	if err := checkStructure(body); err != nil {
		return nil, false, err
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if !allowBatch {
			return nil, true, invalid(nil, "batches are not allowed in this protocol revision")
		}
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, true, parseErr("invalid JSON: %v", err)
		}
		if len(raws) == 0 {
			return nil, true, invalid(nil, "empty batch")
		}
		msgs := make([]*Message, 0, len(raws))
		for _, r := range raws {
			m, err := parseOne(r)
			if err != nil {
				return nil, true, err
			}
			msgs = append(msgs, m)
		}
		return msgs, true, nil
	}
	m, err := parseOne(body)
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

// checkStructure walks every token once: syntax, depth, duplicate and case-variant keys.
func checkStructure(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]struct{}
		expect bool // object: next token is a key
	}
	var stack []frame
	seenValue := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return parseErr("invalid JSON: %v", err)
		}
		if len(stack) == 0 && seenValue {
			return parseErr("invalid JSON: trailing data after the message")
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].expect {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				if len(stack) == 0 {
					seenValue = true
				} else if stack[len(stack)-1].object {
					stack[len(stack)-1].expect = true
				}
				continue
			}
			key := tok.(string)
			folded := foldKey(key)
			if stack[n-1].keys == nil {
				stack[n-1].keys = make(map[string]struct{}, 4)
			}
			if _, dup := stack[n-1].keys[folded]; dup {
				return invalid(nil, "duplicate or case-variant key %q", key)
			}
			stack[n-1].keys[folded] = struct{}{}
			stack[n-1].expect = false
			continue
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if len(stack) >= MaxDepth {
					return invalid(nil, "nesting deeper than %d", MaxDepth)
				}
				stack = append(stack, frame{object: t == '{', expect: t == '{'})
				continue
			case '}', ']':
				stack = stack[:len(stack)-1]
			}
		}
		if len(stack) == 0 {
			seenValue = true
		} else if stack[len(stack)-1].object {
			stack[len(stack)-1].expect = true
		}
	}
	if !seenValue {
		return parseErr("empty body")
	}
	return nil
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

// members are the only top-level members a JSON-RPC 2.0 message may have. Anything else is
// refused: an upstream might read "ID" or "Params" where the gateway saw none.
var members = map[string]bool{"jsonrpc": true, "id": true, "method": true, "params": true, "result": true, "error": true}

// MaxName bounds a tool or prompt name, or a resource URI.
const MaxName = 1024

func parseOne(raw json.RawMessage) (*Message, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, invalid(nil, "a JSON-RPC message must be an object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, parseErr("invalid JSON: %v", err)
	}
	m := &Message{Raw: raw}
	for k := range fields {
		if !members[k] {
			return nil, invalid(fields["id"], "unknown member %q: a JSON-RPC message has only jsonrpc, id, method, params, result and error", k)
		}
	}
	if id, ok := fields["id"]; ok {
		if err := checkID(id); err != nil {
			return nil, err
		}
		m.ID = id
	}
	var version string
	if v, ok := fields["jsonrpc"]; !ok || json.Unmarshal(v, &version) != nil || version != "2.0" {
		return nil, invalid(m.ID, `"jsonrpc" must be "2.0"`)
	}
	method, hasMethod := fields["method"]
	_, hasResult := fields["result"]
	_, hasError := fields["error"]
	switch {
	case hasMethod:
		if hasResult || hasError {
			return nil, invalid(m.ID, "a message cannot have both method and result or error")
		}
		if err := json.Unmarshal(method, &m.Method); err != nil || m.Method == "" {
			return nil, invalid(m.ID, `"method" must be a non-empty string`)
		}
		if m.ID != nil {
			m.Kind = KindRequest
		} else {
			m.Kind = KindNotification
		}
	case hasResult != hasError:
		if m.ID == nil {
			return nil, invalid(nil, "a response needs an id")
		}
		m.Kind = KindResponse
	default:
		return nil, invalid(m.ID, "not a request, notification or response")
	}
	if p, ok := fields["params"]; ok {
		if len(p) == 0 || (p[0] != '{' && p[0] != '[') {
			return nil, invalid(m.ID, `"params" must be an object or an array`)
		}
		m.Params = p
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
	var p map[string]json.RawMessage
	if err := json.Unmarshal(m.Params, &p); err != nil {
		return &Error{Code: CodeInvalidParams, Message: "invalid params", ID: m.ID}
	}
	key := "name"
	switch m.Method {
	case "resources/read":
		key = "uri"
	case "initialize":
		key = "protocolVersion"
	}
	v, ok := p[key]
	var s string
	if !ok || json.Unmarshal(v, &s) != nil || s == "" {
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
	m.Arguments = p["arguments"]
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
