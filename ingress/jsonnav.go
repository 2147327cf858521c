package ingress

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// Navigation of JSON the gateway has already scanned: upstream answers (the bridge read each
// with jsonrpc's routing scanner, which refuses bad syntax, depth over 64 and duplicate keys)
// and host messages (read by the strict parser). Lists and their items are found, filtered
// and renamed by byte offsets instead of being decoded into maps and encoded again, each
// level once: a 100-tool list is about 70 KB, and decoding it level by level with
// encoding/json validated the same bytes four to six times. The navigator still bounds every
// index and reports malformed input as an error, never a panic: it is not trusted to be given
// valid JSON, only to be fast on it.

var errNav = errors.New("malformed JSON")

// skipWS returns the index of the first byte at or after i that is not JSON whitespace.
func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string whose opening quote is at i. It looks
// for each next quote (bytes.IndexByte, vectorised) and counts the backslashes before it: an
// odd count escapes it.
func skipString(b []byte, i int) (int, error) {
	first := i + 1
	i = first
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return 0, errNav
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

// skipValue returns the index just past the value that starts at i (after whitespace).
func skipValue(b []byte, i int) (int, error) {
	i = skipWS(b, i)
	if i >= len(b) {
		return 0, errNav
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, err := skipString(b, i)
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
		return 0, errNav
	default: // a number, true, false or null
		start := i
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		if i == start {
			return 0, errNav
		}
		return i, nil
	}
}

// members calls fn with each member of the object obj: its raw key (between the quotes, still
// escaped) and the offsets of its value. fn returns false to stop.
func members(obj []byte, fn func(key []byte, start, end int) bool) error {
	i := skipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return errNav
	}
	i = skipWS(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return errNav
		}
		kend, err := skipString(obj, i)
		if err != nil {
			return err
		}
		key := obj[i+1 : kend-1]
		i = skipWS(obj, kend)
		if i >= len(obj) || obj[i] != ':' {
			return errNav
		}
		start := skipWS(obj, i+1)
		end, err := skipValue(obj, start)
		if err != nil {
			return err
		}
		if !fn(key, start, end) {
			return nil
		}
		i = skipWS(obj, end)
		if i >= len(obj) {
			return errNav
		}
		if obj[i] == '}' {
			return nil
		}
		if obj[i] != ',' {
			return errNav
		}
		i = skipWS(obj, i+1)
	}
}

// member returns the offsets of the value of obj's member key (ok false when it has none).
func member(obj []byte, key string) (start, end int, ok bool, err error) {
	err = members(obj, func(k []byte, s, e int) bool {
		if keyIs(k, key) {
			start, end, ok = s, e, true
			return false
		}
		return true
	})
	return start, end, ok, err
}

// keyIs compares a raw key with a plain one; an escaped key is unquoted first.
func keyIs(raw []byte, key string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == key
	}
	s, err := strconv.Unquote(`"` + string(raw) + `"`)
	return err == nil && s == key
}

// elements calls fn with the offsets of each element of the array arr.
func elements(arr []byte, fn func(start, end int)) error {
	i := skipWS(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return errNav
	}
	i = skipWS(arr, i+1)
	if i < len(arr) && arr[i] == ']' {
		return nil
	}
	for {
		start := skipWS(arr, i)
		end, err := skipValue(arr, start)
		if err != nil {
			return err
		}
		fn(start, end)
		i = skipWS(arr, end)
		if i >= len(arr) {
			return errNav
		}
		if arr[i] == ']' {
			return nil
		}
		if arr[i] != ',' {
			return errNav
		}
		i++
	}
}

// stringOf decodes a raw JSON string value; ok is false for anything else.
func stringOf(raw []byte) (string, bool) {
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

// memberString is the string value of obj's member key, "" when absent or not a string.
func memberString(obj []byte, key string) string {
	start, end, ok, err := member(obj, key)
	if err != nil || !ok {
		return ""
	}
	s, _ := stringOf(obj[start:end])
	return s
}

// replaceRange returns b with b[start:end] replaced by v, in a new slice.
func replaceRange(b []byte, start, end int, v []byte) []byte {
	out := make([]byte, 0, len(b)-(end-start)+len(v))
	out = append(out, b[:start]...)
	out = append(out, v...)
	return append(out, b[end:]...)
}

// joinArray is the JSON array of the raw values items.
func joinArray(items [][]byte) []byte {
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
