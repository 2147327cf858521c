package jsonrpc

import (
	"fmt"
	"math"
)

// The members the codec reads, by the object they are in. The scan records the raw value of
// each; nothing else in a message is read.
const (
	fVersion         = iota // jsonrpc
	fID                     // id
	fMethod                 // method
	fParams                 // params
	fResult                 // result
	fError                  // error
	fName                   // params.name
	fURI                    // params.uri
	fArguments              // params.arguments
	fPVersion               // params.protocolVersion
	fToken                  // params.progressToken
	fMeta                   // params._meta
	fMetaToken              // params._meta.progressToken
	fMetaTraceparent        // params._meta.traceparent
	fMetaTracestate         // params._meta.tracestate
	fResultVersion          // result.protocolVersion
	nFields
)

// names are the members read in one object, with their folded forms: a key that folds to one
// of them without being it is a case variant, refused where that member is read.
type names struct {
	first  int // field of names[0]
	names  []string
	folded []string
}

func newNames(first int, list ...string) *names {
	n := &names{first: first, names: list}
	for _, name := range list {
		n.folded = append(n.folded, string(appendFolded(nil, []byte(name), true)))
	}
	return n
}

var (
	topNames    = newNames(fVersion, "jsonrpc", "id", "method", "params", "result", "error")
	paramNames  = newNames(fName, "name", "uri", "arguments", "protocolVersion", "progressToken", "_meta")
	metaNames   = newNames(fMetaToken, "progressToken", "traceparent", "tracestate")
	resultNames = newNames(fResultVersion, "protocolVersion")
)

// match returns the field k names (-1 for none) and whether k is only a case variant of it.
func (n *names) match(k member) (int, bool) {
	for i, name := range n.names {
		if string(k.decoded) == name {
			return n.first + i, false
		}
	}
	for i, f := range n.folded {
		if string(k.folded) == f {
			return n.first + i, true
		}
	}
	return -1, false
}

// fieldName is the member name of field f, for errors.
func fieldName(f int) string {
	for _, n := range []*names{topNames, paramNames, metaNames, resultNames} {
		if i := f - n.first; i >= 0 && i < len(n.names) {
			return n.names[i]
		}
	}
	return "?"
}

// fields are the members of one message the scan recorded: raw values (nil when absent) and
// which of them were present only as a case variant.
type fields struct {
	raw      [nFields][]byte
	variants uint32
	unknown  int // offset of the first top-level key that is no JSON-RPC member; -1 for none
}

// one scans the value at s.pos as one message at depth. err is a failure of the whole body
// (grammar, limits, duplicate keys); bad is this message breaking the edge's rules, reported
// only once the whole body is known to be sound.
func (s *scanner) one(depth int, strict bool) (m Message, bad *Error, err error) {
	start := s.pos
	if s.pos >= len(s.data) || s.data[s.pos] != '{' {
		if err := s.value(depth - 1); err != nil {
			return Message{}, nil, err
		}
		return Message{}, invalid(nil, "a JSON-RPC message must be an object"), nil
	}
	f := fields{unknown: -1}
	if err := s.fieldsOf(depth, topNames, &f); err != nil {
		return Message{}, nil, err
	}
	m, bad = s.read(&f, s.data[start:s.pos], strict)
	return m, bad, nil
}

// fieldsOf scans the object at s.pos, recording the values of the members in ns and descending
// into params, params._meta and result.
func (s *scanner) fieldsOf(depth int, ns *names, f *fields) error {
	o, more, err := s.enter(depth)
	for more && err == nil {
		var k member
		if k, err = s.key(&o); err != nil {
			break
		}
		i, variant := ns.match(k)
		if i < 0 || variant {
			if variant {
				f.variants |= 1 << i
			}
			if ns == topNames && f.unknown < 0 {
				f.unknown = k.off
			}
			err = s.value(depth)
		} else {
			start := s.pos
			var sub *names
			switch i {
			case fParams:
				sub = paramNames
			case fMeta:
				sub = metaNames
			case fResult:
				sub = resultNames
			}
			if sub != nil && s.pos < len(s.data) && s.data[s.pos] == '{' {
				err = s.fieldsOf(depth+1, sub, f)
			} else {
				err = s.value(depth)
			}
			f.raw[i] = s.data[start:s.pos]
		}
		if err == nil {
			if more, err = s.next('}'); !more && err == nil {
				s.leave(&o)
			}
		}
	}
	return err
}

// read turns the recorded members of one message into a Message by the rules of the strict
// (host) or routing (upstream) edge.
func (s *scanner) read(f *fields, raw []byte, strict bool) (Message, *Error) {
	m := Message{Raw: raw, ID: f.raw[fID]}
	if m.ID != nil && !validID(m.ID, strict) {
		if strict {
			return Message{}, invalid(nil, "id must be a string or an integer")
		}
		return Message{}, invalid(nil, "id must be a string, a number or null")
	}
	if strict && f.unknown >= 0 {
		return Message{}, invalid(m.ID, "unknown member %q: a JSON-RPC message has only jsonrpc, id, method, params, result and error", s.keyAt(f.unknown))
	}
	if e := s.variant(&m, f, fVersion, fError); e != nil {
		return Message{}, e
	}
	if v := f.raw[fVersion]; string(v) != `"2.0"` {
		if got, ok := s.stringValue(v); !ok || got != "2.0" {
			return Message{}, invalid(m.ID, `"jsonrpc" must be "2.0"`)
		}
	}
	params, result, rpcErr := f.raw[fParams], f.raw[fResult], f.raw[fError]
	switch {
	case f.raw[fMethod] != nil:
		if result != nil || rpcErr != nil {
			return Message{}, invalid(m.ID, "a message cannot have both method and result or error")
		}
		name, ok := s.stringValue(f.raw[fMethod])
		if !ok || name == "" {
			return Message{}, invalid(m.ID, `"method" must be a non-empty string`)
		}
		m.Method = name
		switch {
		case m.ID == nil:
			m.Kind = KindNotification
		case string(m.ID) == "null":
			return Message{}, invalid(nil, "a request id cannot be null")
		default:
			m.Kind = KindRequest
		}
	case (result != nil) != (rpcErr != nil):
		if m.ID == nil {
			return Message{}, invalid(nil, "a response needs an id")
		}
		m.Kind = KindResponse
		m.IsError = rpcErr != nil
	default:
		return Message{}, invalid(m.ID, "not a request, notification or response")
	}
	if strict && params != nil && params[0] != '{' && params[0] != '[' {
		return Message{}, invalid(m.ID, `"params" must be an object or an array`)
	}
	m.Params = params
	if m.Kind == KindResponse {
		if e := s.variant(&m, f, fResultVersion, fResultVersion); e != nil {
			return Message{}, e
		}
		m.ProtocolVersion, _ = s.stringValue(f.raw[fResultVersion])
		return m, nil
	}
	if e := s.variant(&m, f, fMeta, fMeta); e != nil {
		return Message{}, e
	}
	m.Meta = f.raw[fMeta]
	switch {
	case m.Kind == KindRequest:
		if e := s.variant(&m, f, fMetaToken, fMetaToken); e != nil {
			return Message{}, e
		}
		m.ProgressToken = f.raw[fMetaToken]
		// The W3C trace context a host may send in _meta (the MCP convention): read when
		// small enough to be one (the W3C bounds tracestate at 512 characters), never
		// refused, since it only chooses the parent of the gateway's span.
		if f.variants&(1<<fMetaTraceparent) != 0 {
			// A case variant ("Traceparent"): not the member the convention names, so it
			// chooses nothing, and the gateway adds no member a peer would fold into it.
			m.traceVariant = true
		} else {
			if v := f.raw[fMetaTraceparent]; len(v) <= maxTraceContext {
				m.Traceparent, _ = s.stringValue(v)
			}
			m.traceparent = f.raw[fMetaTraceparent]
		}
		if v := f.raw[fMetaTracestate]; len(v) <= maxTraceContext {
			m.Tracestate, _ = s.stringValue(v)
		}
		if e := s.readParams(&m, f, strict); e != nil {
			return Message{}, e
		}
	case m.Method == "notifications/progress":
		if e := s.variant(&m, f, fToken, fToken); e != nil {
			return Message{}, e
		}
		m.ProgressToken = f.raw[fToken]
	}
	return m, nil
}

// variant refuses a member in fields [from, to] that was present only as a case variant: a
// peer decoding with encoding/json would read it where the codec reads nothing.
func (s *scanner) variant(m *Message, f *fields, from, to int) *Error {
	for i := from; i <= to; i++ {
		if f.variants&(1<<i) == 0 {
			continue
		}
		code := CodeInvalidRequest
		if i >= fName && i <= fMetaToken {
			code = CodeInvalidParams
		}
		return &Error{Code: code, Message: fmt.Sprintf("a member's name differs from %q only in case", fieldName(i)), ID: m.ID}
	}
	return nil
}

// readParams reads the name, uri, arguments or protocolVersion of the requests the gateway
// decides on; the strict edge requires them.
func (s *scanner) readParams(m *Message, f *fields, strict bool) *Error {
	field := fName
	switch m.Method {
	case "tools/call", "prompts/get":
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		field = fURI
	case "initialize":
		field = fPVersion
	default:
		return nil
	}
	if strict && (len(m.Params) == 0 || m.Params[0] != '{') {
		return &Error{Code: CodeInvalidParams, Message: m.Method + " needs params", ID: m.ID}
	}
	if e := s.variant(m, f, field, field); e != nil {
		return e
	}
	if e := s.variant(m, f, fArguments, fArguments); e != nil && field == fName {
		return e
	}
	v, ok := s.stringValue(f.raw[field])
	if strict && (!ok || v == "") {
		return &Error{Code: CodeInvalidParams, Message: fmt.Sprintf("%s needs params.%s, a non-empty string", m.Method, fieldName(field)), ID: m.ID}
	}
	if field == fPVersion {
		m.ProtocolVersion = v
		return nil
	}
	if strict && len(v) > MaxName {
		return &Error{Code: CodeInvalidParams, Message: fmt.Sprintf("params.%s is longer than %d bytes", fieldName(field), MaxName), ID: m.ID}
	}
	m.Name = v
	if field == fName {
		m.Arguments = f.raw[fArguments]
	}
	return nil
}

// validID: the strict edge takes a string or an integer (MCP forbids null ids); the routing
// edge also takes any number, and null (an error response to an unreadable request).
func validID(id []byte, strict bool) bool {
	switch id[0] {
	case '"':
		return true
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		if !strict {
			return true
		}
		for _, c := range id {
			if c == '.' || c == 'e' || c == 'E' {
				return false
			}
		}
		return true
	case 'n':
		return !strict
	}
	return false
}

// stringValue decodes a raw value that must be a JSON string.
func (s *scanner) stringValue(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	s.work.Decoded += len(raw)
	return unquote(raw), true
}

// unquote decodes a raw JSON string the scan checked.
func unquote(raw []byte) string {
	content := raw[1 : len(raw)-1]
	for _, c := range content {
		if c == '\\' {
			return string(appendUnquoted(make([]byte, 0, len(content)), content))
		}
	}
	return intern(content)
}

// intern returns the common method names without allocating.
func intern(b []byte) string {
	switch string(b) {
	case "tools/call":
		return "tools/call"
	case "tools/list":
		return "tools/list"
	case "initialize":
		return "initialize"
	case "ping":
		return "ping"
	case "notifications/initialized":
		return "notifications/initialized"
	case "notifications/progress":
		return "notifications/progress"
	case "notifications/message":
		return "notifications/message"
	case "notifications/cancelled":
		return "notifications/cancelled"
	case "resources/read":
		return "resources/read"
	case "resources/list":
		return "resources/list"
	case "prompts/get":
		return "prompts/get"
	case "prompts/list":
		return "prompts/list"
	}
	return string(b)
}

// keyAt decodes the key whose opening quote is at off, for an error message.
func (s *scanner) keyAt(off int) string {
	t := scanner{data: s.data, pos: off}
	_, _, _ = t.str()
	return unquote(s.data[off:t.pos])
}

// scanBody scans body once and reads each message in it: one, or a batch when it starts with
// '['. A body that breaks the grammar, a limit or the duplicate-key rule fails at once; one
// whose message breaks the edge's rules fails with the first such message once the body is
// known to be JSON (a parse error wins, as JSON-RPC asks). noBatch, when set, refuses a batch
// with that message.
// A batch's messages are in msgs; a single message is one, so reading it allocates nothing.
// When w is not nil it receives the scan's count of work.
func scanBody(body []byte, strict bool, noBatch string, w *work) (one Message, msgs []Message, batch bool, err error) {
	if uint64(len(body)) > math.MaxUint32 {
		return Message{}, nil, false, invalid(nil, "a message of more than 4 GiB")
	}
	s := getScanner(body)
	defer putScanner(s)
	if w != nil {
		defer func() { s.work.Scanned = s.pos; *w = s.work }()
	}
	var later *Error
	s.ws()
	if s.pos == len(body) {
		return Message{}, nil, false, parseErr("empty body")
	}
	if body[s.pos] == '[' {
		batch = true
		if noBatch != "" {
			later = invalid(nil, "%s", noBatch)
		}
		s.pos++
		s.ws()
		if s.pos < len(body) && body[s.pos] == ']' {
			s.pos++
			if later == nil {
				later = invalid(nil, "empty batch")
			}
		} else {
			for n, more := 0, true; more; n++ {
				s.ws()
				if n == MaxBatch {
					return Message{}, nil, true, invalid(nil, "a batch of more than %d messages", MaxBatch)
				}
				m, bad, err := s.one(2, strict)
				if err != nil {
					return Message{}, nil, true, err
				}
				switch {
				case later == nil && bad != nil:
					later, msgs = bad, nil
				case later == nil:
					msgs = append(msgs, m)
				}
				if more, err = s.next(']'); err != nil {
					return Message{}, nil, true, err
				}
			}
		}
	} else {
		var bad *Error
		if one, bad, err = s.one(1, strict); err != nil {
			return Message{}, nil, false, err
		}
		later = bad
	}
	s.ws()
	if s.pos != len(body) {
		return Message{}, nil, batch, parseErr("invalid JSON: trailing data after the message at offset %d", s.pos)
	}
	if later != nil {
		return Message{}, nil, batch, later
	}
	return one, msgs, batch, nil
}
