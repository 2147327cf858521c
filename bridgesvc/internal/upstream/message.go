package upstream

import (
	"bytes"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of arrays and objects in an upstream message. It is generous
// (tool results carry JSON Schemas and arbitrary data) and only guards the parser's stack.
const MaxDepth = 512

// Kind says what a JSON-RPC message is.
type Kind uint8

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

// Message is the routing view of one JSON-RPC message: its exact bytes plus the few members
// the bridge routes on. Slices alias Raw.
type Message struct {
	// Raw is the message exactly as received.
	Raw  []byte
	Kind Kind
	// ID is the raw JSON id (a string or a number; "null" in some error responses), nil for
	// notifications.
	ID []byte
	// Method is the method of a request or notification.
	Method string
	// ProgressToken is params._meta.progressToken of a request, or params.progressToken of a
	// notifications/progress, raw; nil when absent.
	ProgressToken []byte
	// ProtocolVersion is result.protocolVersion of a response (set on initialize results).
	ProtocolVersion string
	// IsError is set on an error response.
	IsError bool
}

// IsResponseTo reports whether m is the response to the request with the given raw id.
func (m *Message) IsResponseTo(id []byte) bool {
	return m.Kind == KindResponse && id != nil && IDKey(m.ID) == IDKey(id)
}

// IDKey turns a raw JSON id or progress token into a map key: a string and a number with the
// same text stay distinct, and escaped and unescaped spellings of one string agree.
func IDKey(raw []byte) string {
	if len(raw) >= 2 && raw[0] == '"' {
		if bytes.IndexByte(raw, '\\') < 0 {
			return string(raw)
		}
		s, err := unquote(raw[1 : len(raw)-1])
		if err != nil {
			return string(raw)
		}
		return strconv.Quote(s)
	}
	return string(raw)
}

// Peek reads the routing members of exactly one JSON-RPC message, validating the whole text
// as JSON on the way (one pass, no reflection, no copies).
func Peek(raw []byte) (Message, error) {
	s := scanner{data: raw}
	s.ws()
	if s.pos >= len(s.data) || s.data[s.pos] != '{' {
		return Message{}, fmt.Errorf("%w: not a JSON object", ErrInvalidMessage)
	}
	m, err := s.message()
	if err != nil {
		return Message{}, err
	}
	s.ws()
	if s.pos != len(s.data) {
		return Message{}, s.fail("trailing data after the message")
	}
	m.Raw = raw
	return m, nil
}

// Split reads one message or a batch (a JSON array of messages) and returns each message;
// the Raw of a batch element is its own slice of raw.
func Split(raw []byte) ([]Message, error) {
	s := scanner{data: raw}
	s.ws()
	if s.pos >= len(s.data) || s.data[s.pos] != '[' {
		m, err := Peek(raw)
		if err != nil {
			return nil, err
		}
		return []Message{m}, nil
	}
	s.pos++
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		return nil, fmt.Errorf("%w: empty batch", ErrInvalidMessage)
	}
	var out []Message
	for {
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != '{' {
			return nil, s.fail("a batch element is not an object")
		}
		start := s.pos
		s.depth = 1
		m, err := s.message()
		if err != nil {
			return nil, err
		}
		m.Raw = raw[start:s.pos]
		out = append(out, m)
		s.ws()
		if s.pos >= len(s.data) {
			return nil, s.fail("unterminated batch")
		}
		c := s.data[s.pos]
		s.pos++
		if c == ']' {
			break
		}
		if c != ',' {
			return nil, s.fail("expected , or ] in batch")
		}
	}
	s.ws()
	if s.pos != len(s.data) {
		return nil, s.fail("trailing data after the batch")
	}
	return out, nil
}

// scanner is a validating recursive-descent JSON reader that records positions instead of
// building values.
type scanner struct {
	data  []byte
	pos   int
	depth int
}

func (s *scanner) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrInvalidMessage, what, s.pos)
}

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// members of the top-level object the bridge cares about, for duplicate detection.
const (
	seenID = 1 << iota
	seenMethod
	seenParams
	seenResult
	seenError
	seenVersion
)

// message reads the object at s.pos as a JSON-RPC message.
func (s *scanner) message() (Message, error) {
	var m Message
	var seen uint8
	var metaToken, token []byte
	err := s.object(func(key string) error {
		var bit uint8
		switch key {
		case "id":
			bit = seenID
		case "method":
			bit = seenMethod
		case "params":
			bit = seenParams
		case "result":
			bit = seenResult
		case "error":
			bit = seenError
		case "jsonrpc":
			bit = seenVersion
		default:
			return s.value()
		}
		if seen&bit != 0 {
			return s.fail("duplicate member " + strconv.Quote(key))
		}
		seen |= bit
		switch bit {
		case seenID:
			if err := s.capture(&m.ID); err != nil {
				return err
			}
			if c := m.ID[0]; c != '"' && c != '-' && (c < '0' || c > '9') && string(m.ID) != "null" {
				return s.fail("id must be a string or a number")
			}
		case seenMethod:
			v, err := s.stringValue()
			if err != nil {
				return err
			}
			m.Method = v
		case seenVersion:
			ok, err := s.stringIs("2.0")
			if err != nil {
				return err
			}
			if !ok {
				return s.fail(`"jsonrpc" must be "2.0"`)
			}
		case seenParams:
			if s.pos < len(s.data) && s.data[s.pos] == '{' {
				return s.params(&metaToken, &token)
			}
			return s.value()
		case seenResult:
			if s.pos < len(s.data) && s.data[s.pos] == '{' {
				return s.result(&m)
			}
			return s.value()
		default:
			return s.value()
		}
		return nil
	})
	if err != nil {
		return Message{}, err
	}
	if seen&seenVersion == 0 {
		return Message{}, fmt.Errorf("%w: missing \"jsonrpc\": \"2.0\"", ErrInvalidMessage)
	}
	switch {
	case seen&seenMethod != 0:
		if seen&(seenResult|seenError) != 0 {
			return Message{}, fmt.Errorf("%w: both method and result or error", ErrInvalidMessage)
		}
		if m.Method == "" {
			return Message{}, fmt.Errorf("%w: empty method", ErrInvalidMessage)
		}
		if m.ID != nil {
			if string(m.ID) == "null" {
				return Message{}, fmt.Errorf("%w: a request id cannot be null", ErrInvalidMessage)
			}
			m.Kind = KindRequest
		} else {
			m.Kind = KindNotification
		}
	case (seen&seenResult != 0) != (seen&seenError != 0):
		if m.ID == nil {
			return Message{}, fmt.Errorf("%w: a response needs an id", ErrInvalidMessage)
		}
		m.Kind = KindResponse
		m.IsError = seen&seenError != 0
	default:
		return Message{}, fmt.Errorf("%w: not a request, notification or response", ErrInvalidMessage)
	}
	switch {
	case m.Kind == KindRequest:
		m.ProgressToken = metaToken
	case m.Method == "notifications/progress":
		m.ProgressToken = token
	}
	if m.Kind != KindResponse {
		m.ProtocolVersion = ""
	}
	return m, nil
}

// params reads a params object, recording _meta.progressToken (a request's token) and
// progressToken (a progress notification's token); message picks one once the method is known.
func (s *scanner) params(metaToken, token *[]byte) error {
	return s.object(func(key string) error {
		switch key {
		case "_meta":
			if s.pos < len(s.data) && s.data[s.pos] == '{' {
				return s.object(func(key string) error {
					if key != "progressToken" {
						return s.value()
					}
					return s.capture(metaToken)
				})
			}
		case "progressToken":
			return s.capture(token)
		}
		return s.value()
	})
}

// capture reads one value and stores its raw bytes in dst.
func (s *scanner) capture(dst *[]byte) error {
	start := s.pos
	if err := s.value(); err != nil {
		return err
	}
	*dst = s.data[start:s.pos]
	return nil
}

// result reads a result object, recording protocolVersion.
func (s *scanner) result(m *Message) error {
	return s.object(func(key string) error {
		if key != "protocolVersion" || s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.value()
		}
		v, err := s.stringValue()
		if err != nil {
			return err
		}
		m.ProtocolVersion = v
		return nil
	})
}

// object reads the object at s.pos, calling member with s.pos at each member's value; member
// must consume the value. The key passed is the member's name when knownKey knows it, else "".
func (s *scanner) object(member func(key string) error) error {
	if s.depth++; s.depth > MaxDepth {
		return s.fail("nesting too deep")
	}
	s.pos++ // {
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.fail("expected a member name")
		}
		start, end, escaped, err := s.str()
		if err != nil {
			return err
		}
		key := knownKey(s.data[start:end])
		if escaped {
			u, err := unquote(s.data[start:end])
			if err != nil {
				return s.fail("bad escape in member name")
			}
			key = knownKey([]byte(u))
		}
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.fail("expected :")
		}
		s.pos++
		s.ws()
		if err := member(key); err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.data) {
			return s.fail("unterminated object")
		}
		c := s.data[s.pos]
		s.pos++
		if c == '}' {
			s.depth--
			return nil
		}
		if c != ',' {
			return s.fail("expected , or }")
		}
	}
}

// knownKey returns the member name when it is one the bridge reads, and "" otherwise, without
// allocating.
func knownKey(b []byte) string {
	switch string(b) {
	case "id":
		return "id"
	case "method":
		return "method"
	case "params":
		return "params"
	case "result":
		return "result"
	case "error":
		return "error"
	case "jsonrpc":
		return "jsonrpc"
	case "_meta":
		return "_meta"
	case "progressToken":
		return "progressToken"
	case "protocolVersion":
		return "protocolVersion"
	}
	return ""
}

// stringValue reads a string value and returns its decoded text.
func (s *scanner) stringValue() (string, error) {
	if s.pos >= len(s.data) || s.data[s.pos] != '"' {
		return "", s.fail("expected a string")
	}
	start, end, escaped, err := s.str()
	if err != nil {
		return "", err
	}
	if !escaped {
		return string(s.data[start:end]), nil
	}
	v, err := unquote(s.data[start:end])
	if err != nil {
		return "", s.fail("bad escape")
	}
	return v, nil
}

// stringIs reads a string value and reports whether it equals want, without allocating.
func (s *scanner) stringIs(want string) (bool, error) {
	if s.pos >= len(s.data) || s.data[s.pos] != '"' {
		return false, s.fail("expected a string")
	}
	start, end, escaped, err := s.str()
	if err != nil {
		return false, err
	}
	if !escaped {
		return string(s.data[start:end]) == want, nil
	}
	v, err := unquote(s.data[start:end])
	return v == want, err
}

// value validates and skips one JSON value.
func (s *scanner) value() error {
	if s.pos >= len(s.data) {
		return s.fail("expected a value")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.skipObject()
	case c == '[':
		return s.array()
	case c == '"':
		_, _, _, err := s.str()
		return err
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.fail("unexpected character")
}

// skipObject validates and skips an object whose members do not matter.
func (s *scanner) skipObject() error {
	if s.depth++; s.depth > MaxDepth {
		return s.fail("nesting too deep")
	}
	s.pos++ // {
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.fail("expected a member name")
		}
		if _, _, _, err := s.str(); err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.fail("expected :")
		}
		s.pos++
		s.ws()
		if err := s.value(); err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.data) {
			return s.fail("unterminated object")
		}
		c := s.data[s.pos]
		s.pos++
		if c == '}' {
			s.depth--
			return nil
		}
		if c != ',' {
			return s.fail("expected , or }")
		}
	}
}

func (s *scanner) array() error {
	if s.depth++; s.depth > MaxDepth {
		return s.fail("nesting too deep")
	}
	s.pos++ // [
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		s.ws()
		if err := s.value(); err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.data) {
			return s.fail("unterminated array")
		}
		c := s.data[s.pos]
		s.pos++
		if c == ']' {
			s.depth--
			return nil
		}
		if c != ',' {
			return s.fail("expected , or ]")
		}
	}
}

func (s *scanner) literal(lit string) error {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(lit)) {
		return s.fail("invalid literal")
	}
	s.pos += len(lit)
	return nil
}

func (s *scanner) number() error {
	d := s.data
	if s.pos < len(d) && d[s.pos] == '-' {
		s.pos++
	}
	switch {
	case s.pos < len(d) && d[s.pos] == '0':
		s.pos++
	case s.pos < len(d) && '1' <= d[s.pos] && d[s.pos] <= '9':
		s.digits()
	default:
		return s.fail("invalid number")
	}
	if s.pos < len(d) && d[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return s.fail("invalid number")
		}
	}
	if s.pos < len(d) && (d[s.pos] == 'e' || d[s.pos] == 'E') {
		s.pos++
		if s.pos < len(d) && (d[s.pos] == '+' || d[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return s.fail("invalid number")
		}
	}
	return nil
}

func (s *scanner) digits() int {
	n := 0
	for s.pos < len(s.data) && '0' <= s.data[s.pos] && s.data[s.pos] <= '9' {
		s.pos++
		n++
	}
	return n
}

// str reads the string at s.pos (on its opening quote) and returns the bounds of its content
// and whether it holds escapes. It rejects control characters, bad escapes and invalid UTF-8.
func (s *scanner) str() (start, end int, escaped bool, err error) {
	d := s.data
	s.pos++
	start = s.pos
	for s.pos < len(d) {
		c := d[s.pos]
		switch {
		case c == '"':
			end = s.pos
			s.pos++
			return start, end, escaped, nil
		case c == '\\':
			escaped = true
			s.pos++
			if s.pos >= len(d) {
				return 0, 0, false, s.fail("unterminated string")
			}
			switch d[s.pos] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos++
			case 'u':
				if s.pos+5 > len(d) || !isHex4(d[s.pos+1:s.pos+5]) {
					return 0, 0, false, s.fail("bad \\u escape")
				}
				s.pos += 5
			default:
				return 0, 0, false, s.fail("bad escape")
			}
		case c < 0x20:
			return 0, 0, false, s.fail("control character in string")
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, size := utf8.DecodeRune(d[s.pos:])
			if r == utf8.RuneError && size <= 1 {
				return 0, 0, false, s.fail("invalid UTF-8 in string")
			}
			s.pos += size
		}
	}
	return 0, 0, false, s.fail("unterminated string")
}

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// unquote decodes the content of a JSON string already validated by str.
func unquote(b []byte) (string, error) {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		c := b[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(b) {
			return "", ErrInvalidMessage
		}
		switch b[i+1] {
		case '"', '\\', '/':
			out = append(out, b[i+1])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, n := decodeU(b[i:])
			if n == 0 {
				return "", ErrInvalidMessage
			}
			out = utf8.AppendRune(out, r)
			i += n
			continue
		default:
			return "", ErrInvalidMessage
		}
		i += 2
	}
	return string(out), nil
}

// decodeU decodes a \uXXXX escape (and its low surrogate, when it starts a pair) at the start
// of b, returning the rune and the bytes consumed. Lone surrogates become U+FFFD, as
// encoding/json does.
func decodeU(b []byte) (rune, int) {
	hex := func(p []byte) (rune, bool) {
		if len(p) < 6 || p[0] != '\\' || p[1] != 'u' || !isHex4(p[2:6]) {
			return 0, false
		}
		v, err := strconv.ParseUint(string(p[2:6]), 16, 16)
		return rune(v), err == nil
	}
	r, ok := hex(b)
	if !ok {
		return 0, 0
	}
	if utf16.IsSurrogate(r) {
		if r2, ok := hex(b[6:]); ok {
			if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
				return dec, 12
			}
		}
		return utf8.RuneError, 6
	}
	return r, 6
}
