package jsonrpc

import (
	"encoding/json"
	"fmt"
)

// validate checks body once, without allocating for well-formed input: JSON grammar (RFC
// 8259), nesting depth, and no two keys of one object that fold to the same key. Input must
// already be valid UTF-8.
func validate(body []byte) error {
	v := validator{data: body}
	v.ws()
	if v.pos == len(v.data) {
		return parseErr("empty body")
	}
	if err := v.value(0); err != nil {
		return err
	}
	v.ws()
	if v.pos != len(v.data) {
		return parseErr("invalid JSON: trailing data after the message at offset %d", v.pos)
	}
	return nil
}

type validator struct {
	data []byte
	pos  int
	keys [][]byte // scratch for duplicate detection, reused across objects
}

func (v *validator) ws() {
	for v.pos < len(v.data) {
		switch v.data[v.pos] {
		case ' ', '\t', '\n', '\r':
			v.pos++
		default:
			return
		}
	}
}

func (v *validator) syntax(what string) error {
	if v.pos >= len(v.data) {
		return parseErr("invalid JSON: unexpected end of input (%s)", what)
	}
	return parseErr("invalid JSON: unexpected %q at offset %d (%s)", v.data[v.pos], v.pos, what)
}

func (v *validator) value(depth int) error {
	if v.pos >= len(v.data) {
		return v.syntax("a value")
	}
	switch c := v.data[v.pos]; {
	case c == '{':
		return v.object(depth + 1)
	case c == '[':
		return v.array(depth + 1)
	case c == '"':
		_, err := v.str()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return v.number()
	case c == 't':
		return v.literal("true")
	case c == 'f':
		return v.literal("false")
	case c == 'n':
		return v.literal("null")
	}
	return v.syntax("a value")
}

func (v *validator) literal(word string) error {
	if len(v.data)-v.pos < len(word) || string(v.data[v.pos:v.pos+len(word)]) != word {
		return v.syntax(word)
	}
	v.pos += len(word)
	return nil
}

func (v *validator) number() error {
	start := v.pos
	if v.data[v.pos] == '-' {
		v.pos++
	}
	digits := func() int {
		n := 0
		for v.pos < len(v.data) && v.data[v.pos] >= '0' && v.data[v.pos] <= '9' {
			v.pos++
			n++
		}
		return n
	}
	if v.pos < len(v.data) && v.data[v.pos] == '0' {
		v.pos++
	} else if digits() == 0 {
		return v.syntax("a number")
	}
	if v.pos < len(v.data) && v.data[v.pos] == '.' {
		v.pos++
		if digits() == 0 {
			return v.syntax("a fraction")
		}
	}
	if v.pos < len(v.data) && (v.data[v.pos] == 'e' || v.data[v.pos] == 'E') {
		v.pos++
		if v.pos < len(v.data) && (v.data[v.pos] == '+' || v.data[v.pos] == '-') {
			v.pos++
		}
		if digits() == 0 {
			return v.syntax("an exponent")
		}
	}
	_ = start
	return nil
}

// str checks a string starting at the quote and returns its raw bytes, quotes included.
func (v *validator) str() ([]byte, error) {
	start := v.pos
	v.pos++
	for v.pos < len(v.data) {
		c := v.data[v.pos]
		switch {
		case c == '"':
			v.pos++
			return v.data[start:v.pos], nil
		case c == '\\':
			v.pos++
			if v.pos >= len(v.data) {
				return nil, v.syntax("an escape")
			}
			switch v.data[v.pos] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				v.pos++
			case 'u':
				if len(v.data)-v.pos < 5 {
					return nil, v.syntax("a \\u escape")
				}
				for _, h := range v.data[v.pos+1 : v.pos+5] {
					if !isHex(h) {
						return nil, v.syntax("a \\u escape")
					}
				}
				v.pos += 5
			default:
				return nil, v.syntax("an escape")
			}
		case c < 0x20:
			return nil, v.syntax("a string (control characters must be escaped)")
		default:
			v.pos++
		}
	}
	return nil, v.syntax("a string")
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (v *validator) array(depth int) error {
	if depth > MaxDepth {
		return invalid(nil, "nesting deeper than %d", MaxDepth)
	}
	v.pos++ // [
	v.ws()
	if v.pos < len(v.data) && v.data[v.pos] == ']' {
		v.pos++
		return nil
	}
	for {
		v.ws()
		if err := v.value(depth); err != nil {
			return err
		}
		v.ws()
		if v.pos >= len(v.data) {
			return v.syntax("',' or ']'")
		}
		switch v.data[v.pos] {
		case ',':
			v.pos++
		case ']':
			v.pos++
			return nil
		default:
			return v.syntax("',' or ']'")
		}
	}
}

func (v *validator) object(depth int) error {
	if depth > MaxDepth {
		return invalid(nil, "nesting deeper than %d", MaxDepth)
	}
	v.pos++ // {
	v.ws()
	if v.pos < len(v.data) && v.data[v.pos] == '}' {
		v.pos++
		return nil
	}
	mark := len(v.keys)
	defer func() { v.keys = v.keys[:mark] }()
	for {
		v.ws()
		if v.pos >= len(v.data) || v.data[v.pos] != '"' {
			return v.syntax("a key")
		}
		key, err := v.str()
		if err != nil {
			return err
		}
		for _, seen := range v.keys[mark:] {
			if sameKey(seen, key) {
				return invalid(nil, "duplicate or case-variant key %s", key)
			}
		}
		v.keys = append(v.keys, key)
		v.ws()
		if v.pos >= len(v.data) || v.data[v.pos] != ':' {
			return v.syntax("':'")
		}
		v.pos++
		v.ws()
		if err := v.value(depth); err != nil {
			return err
		}
		v.ws()
		if v.pos >= len(v.data) {
			return v.syntax("',' or '}'")
		}
		switch v.data[v.pos] {
		case ',':
			v.pos++
		case '}':
			v.pos++
			return nil
		default:
			return v.syntax("',' or '}'")
		}
	}
}

// sameKey reports whether two raw keys (quoted, possibly escaped) fold to the same key, the
// way encoding/json matches member names.
func sameKey(a, b []byte) bool {
	if len(a) == len(b) && asciiNoEscape(a) && asciiNoEscape(b) {
		for i := range a {
			if lowerASCII(a[i]) != lowerASCII(b[i]) {
				return false
			}
		}
		return true
	}
	if asciiNoEscape(a) && asciiNoEscape(b) {
		return false // ASCII folding keeps lengths
	}
	return foldKey(unquote(a)) == foldKey(unquote(b))
}

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func asciiNoEscape(raw []byte) bool {
	for _, c := range raw {
		if c >= 0x80 || c == '\\' {
			return false
		}
	}
	return true
}

// unquote decodes a validated raw JSON string.
func unquote(raw []byte) string {
	if asciiNoEscape(raw) || !containsByte(raw, '\\') {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		panic(fmt.Sprintf("jsonrpc: unquote of a validated string failed: %v", err))
	}
	return s
}

func containsByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}

// eachMember calls fn with the decoded key and raw value of each member of a validated object.
func eachMember(obj []byte, fn func(key string, val []byte) error) error {
	v := validator{data: obj}
	v.ws()
	v.pos++ // {
	v.ws()
	if v.data[v.pos] == '}' {
		return nil
	}
	for {
		v.ws()
		rawKey, _ := v.str()
		v.ws()
		v.pos++ // :
		v.ws()
		start := v.pos
		_ = v.value(0)
		if err := fn(unquote(rawKey), v.data[start:v.pos]); err != nil {
			return err
		}
		v.ws()
		if v.data[v.pos] == '}' {
			return nil
		}
		v.pos++ // ,
	}
}

// eachElement calls fn with the raw value of each element of a validated array.
func eachElement(arr []byte, fn func(val []byte) error) error {
	v := validator{data: arr}
	v.ws()
	v.pos++ // [
	v.ws()
	if v.data[v.pos] == ']' {
		return nil
	}
	for {
		v.ws()
		start := v.pos
		_ = v.value(0)
		if err := fn(v.data[start:v.pos]); err != nil {
			return err
		}
		v.ws()
		if v.data[v.pos] == ']' {
			return nil
		}
		v.pos++ // ,
	}
}

// stringValue decodes a raw value that must be a JSON string.
func stringValue(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	return unquote(raw), true
}
