package jsonrpc

// maxTraceContext bounds the raw traceparent and tracestate read from _meta (with quotes).
const maxTraceContext = 512 + 2

// WithTraceparent returns the bytes of the request m with params._meta.traceparent set to
// traceparent, and every other byte as it was: the member's value is replaced where it is
// present; otherwise the member is inserted first in _meta, or a _meta holding it first in
// params, or a params holding that _meta last in the message. This is how the gateway tells
// every upstream, stdio included, which span called it (the MCP convention), without
// re-encoding what policy judged.
//
// m must be what Parse, Peek or Split read (its slices alias m.Raw). ok is false, and m.Raw
// is returned as it is, when m is not a request, when params or _meta is not an object, or
// when traceparent is not a W3C traceparent of lower-case hex digits and dashes.
func WithTraceparent(m *Message, traceparent string) (out []byte, ok bool) {
	raw := m.Raw
	if m.Kind != KindRequest || m.traceVariant || !traceparentBytes(traceparent) || len(raw) < 2 || raw[len(raw)-1] != '}' {
		return raw, false
	}
	value := `"` + traceparent + `"`
	switch {
	case m.traceparent != nil:
		off, in := offsetIn(raw, m.traceparent)
		if !in {
			return raw, false
		}
		return splice(raw, off, off+len(m.traceparent), value), true
	case m.Meta != nil:
		off, in := offsetIn(raw, m.Meta)
		if !in || m.Meta[0] != '{' {
			return raw, false
		}
		return splice(raw, off+1, off+1, `"traceparent":`+value+separator(m.Meta)), true
	case m.Params != nil:
		off, in := offsetIn(raw, m.Params)
		if !in || m.Params[0] != '{' {
			return raw, false
		}
		return splice(raw, off+1, off+1, `"_meta":{"traceparent":`+value+`}`+separator(m.Params)), true
	}
	// A request has a method, so the message object is not empty.
	end := len(raw) - 1
	return splice(raw, end, end, `,"params":{"_meta":{"traceparent":`+value+`}}`), true
}

// offsetIn is the offset of sub in raw, which it aliases: both were sliced from one scanned
// body (two-index slices), so the difference of their capacities is sub's offset. in is
// false when sub is not in fact inside raw (a Message built by hand).
func offsetIn(raw, sub []byte) (off int, in bool) {
	off = cap(raw) - cap(sub)
	if len(sub) == 0 || off < 0 || off+len(sub) > len(raw) || &raw[off] != &sub[0] {
		return 0, false
	}
	return off, true
}

// splice is raw with raw[from:to] replaced by s, in a new slice.
func splice(raw []byte, from, to int, s string) []byte {
	out := make([]byte, 0, len(raw)-(to-from)+len(s))
	out = append(out, raw[:from]...)
	out = append(out, s...)
	return append(out, raw[to:]...)
}

// separator is what follows a member inserted first in the object obj: a comma, unless the
// object is empty.
func separator(obj []byte) string {
	for _, c := range obj[1:] {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '}':
			return ""
		}
		return ","
	}
	return ""
}

// traceparentBytes reports whether s is safe to write as a JSON string unescaped and looks
// like a traceparent: lower-case hex digits and dashes, 55 bytes (version 00) or more.
func traceparentBytes(s string) bool {
	if len(s) < 55 || len(s) > 512 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || c == '-') {
			return false
		}
	}
	return true
}
