// Package jsonnav finds members and elements of JSON by byte offsets, without decoding: the
// gateway filters, renames and redacts lists and arguments this way, each level read once
// (a 100-tool list is about 70 KB; decoding it level by level with encoding/json validated the
// same bytes four to six times). It is meant for JSON already scanned (an upstream's answer,
// read by internal/jsonrpc's routing scanner; a host's message, read by the strict one), but
// bounds every index and reports malformed input as an error, never a panic, and needs no
// stack for nesting.
package jsonnav

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// ErrMalformed is the error of every function here on input that is not JSON.
var ErrMalformed = errors.New("malformed JSON")

// SkipWS returns the index of the first byte at or after i that is not JSON whitespace.
func SkipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// SkipString returns the index just past the string whose opening quote is at i. It looks
// for each next quote (bytes.IndexByte, vectorised) and counts the backslashes before it: an
// odd count escapes it.
func SkipString(b []byte, i int) (int, error) {
	first := i + 1
	i = first
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return 0, ErrMalformed
		}
		i += j
		n := 0
		for k := i - 1; k >= first && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return i + 1, nil
		}
		i++
	}
}

// SkipValue returns the index just past the value that starts at i (after whitespace).
func SkipValue(b []byte, i int) (int, error) {
	i = SkipWS(b, i)
	if i >= len(b) {
		return 0, ErrMalformed
	}
	switch b[i] {
	case '"':
		return SkipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, err := SkipString(b, i)
				if err != nil {
					return 0, err
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, ErrMalformed
	default: // a number, true, false or null
		start := i
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ':' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		if i == start {
			return 0, ErrMalformed
		}
		return i, nil
	}
}

// Members calls fn with each member of the object obj: its raw key (between the quotes, still
// escaped) and the offsets of its value. fn returns false to stop.
func Members(obj []byte, fn func(key []byte, start, end int) bool) error {
	i := SkipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return ErrMalformed
	}
	i = SkipWS(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return ErrMalformed
		}
		kend, err := SkipString(obj, i)
		if err != nil {
			return err
		}
		key := obj[i+1 : kend-1]
		i = SkipWS(obj, kend)
		if i >= len(obj) || obj[i] != ':' {
			return ErrMalformed
		}
		start := SkipWS(obj, i+1)
		end, err := SkipValue(obj, start)
		if err != nil {
			return err
		}
		if !fn(key, start, end) {
			return nil
		}
		i = SkipWS(obj, end)
		if i >= len(obj) {
			return ErrMalformed
		}
		if obj[i] == '}' {
			return nil
		}
		if obj[i] != ',' {
			return ErrMalformed
		}
		i = SkipWS(obj, i+1)
	}
}

// Member returns the offsets of the value of obj's member key (ok false when it has none).
func Member(obj []byte, key string) (start, end int, ok bool, err error) {
	err = Members(obj, func(k []byte, s, e int) bool {
		if KeyIs(k, key) {
			start, end, ok = s, e, true
			return false
		}
		return true
	})
	return start, end, ok, err
}

// KeyIs compares a raw key with a plain one; an escaped key is unquoted first.
func KeyIs(raw []byte, key string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == key
	}
	s, err := strconv.Unquote(`"` + string(raw) + `"`)
	return err == nil && s == key
}

// Elements calls fn with the offsets of each element of the array arr.
func Elements(arr []byte, fn func(start, end int)) error {
	i := SkipWS(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return ErrMalformed
	}
	i = SkipWS(arr, i+1)
	if i < len(arr) && arr[i] == ']' {
		return nil
	}
	for {
		start := SkipWS(arr, i)
		end, err := SkipValue(arr, start)
		if err != nil {
			return err
		}
		fn(start, end)
		i = SkipWS(arr, end)
		if i >= len(arr) {
			return ErrMalformed
		}
		if arr[i] == ']' {
			return nil
		}
		if arr[i] != ',' {
			return ErrMalformed
		}
		i++
	}
}

// StringOf decodes a raw JSON string value; ok is false for anything else.
func StringOf(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// MemberString is the string value of obj's member key, "" when absent or not a string.
func MemberString(obj []byte, key string) string {
	start, end, ok, err := Member(obj, key)
	if err != nil || !ok {
		return ""
	}
	s, _ := StringOf(obj[start:end])
	return s
}

// ReplaceRange returns b with b[start:end] replaced by v, in a new slice.
func ReplaceRange(b []byte, start, end int, v []byte) []byte {
	out := make([]byte, 0, len(b)-(end-start)+len(v))
	out = append(out, b[:start]...)
	out = append(out, v...)
	return append(out, b[end:]...)
}

// JoinArray is the JSON array of the raw values items.
func JoinArray(items [][]byte) []byte {
	n := 2
	for _, it := range items {
		n += len(it) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, it := range items {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, it...)
	}
	return append(out, ']')
}
