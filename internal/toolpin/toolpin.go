// Package toolpin computes the digest a pinned tool definition is compared by: SHA-256 of a
// canonical form of the tool's name, description, inputSchema, outputSchema and annotations.
// The form ignores what JSON does not mean (key order, whitespace, string escapes), so an
// upstream that re-serializes a definition keeps its pin, and keeps everything it does mean,
// so any change of content gives another digest.
package toolpin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// Limits on one definition. An upstream's message is already bounded by the bridge; these
// stop a hostile definition from costing more than its size.
const (
	// MaxNameBytes bounds a tool's name (MCP: 1 to 128 characters).
	MaxNameBytes = 128
	// maxDepth bounds the nesting of a definition (a schema nests a few levels).
	maxDepth = 64
)

// Prefix begins every digest.
const Prefix = "sha256:"

// digestRE is what ValidDigest accepts.
var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ValidDigest reports whether d is a digest as Digest writes it.
func ValidDigest(d string) bool { return digestRE.MatchString(d) }

// pinned are the members of a tool that its digest covers, in byte order (the canonical
// form's). Others (title, icons, _meta) are presentation and may change without a new
// approval.
var pinned = []string{"annotations", "description", "inputSchema", "name", "outputSchema"}

// Digest reads one item of a tools/list result and returns its name and the digest of its
// pinned members. An item that is not an object, has a duplicate key anywhere, nests deeper
// than maxDepth, or lacks a valid name is an error: it cannot be pinned, and is not shown.
// The cost is linear in the item's size (plus sorting each object's keys).
func Digest(item []byte) (name, digest string, err error) {
	dec := json.NewDecoder(bytes.NewReader(item))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return "", "", fmt.Errorf("read tool: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return "", "", errors.New("read tool: not an object")
	}
	members, err := object(dec, 1)
	if err != nil {
		return "", "", fmt.Errorf("read tool: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", "", errors.New("read tool: data after the object")
	}
	rawName, ok := members["name"]
	if !ok {
		return "", "", errors.New("read tool: no name")
	}
	if err := json.Unmarshal(rawName, &name); err != nil || name == "" || len(name) > MaxNameBytes {
		return "", "", fmt.Errorf("read tool: the name must be a string of 1 to %d bytes", MaxNameBytes)
	}
	h := sha256.New()
	h.Write([]byte{'{'})
	first := true
	for _, k := range pinned {
		v, ok := members[k]
		if !ok {
			continue
		}
		if !first {
			h.Write([]byte{','})
		}
		first = false
		writeString(h, k)
		h.Write([]byte{':'})
		h.Write(v)
	}
	h.Write([]byte{'}'})
	return name, Prefix + hex.EncodeToString(h.Sum(nil)), nil
}

// object reads the members of an object whose '{' has been read, each value in canonical
// form, and the closing '}'.
func object(dec *json.Decoder, depth int) (map[string][]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	members := map[string][]byte{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("an object key is not a string")
		}
		if _, dup := members[key]; dup {
			return nil, fmt.Errorf("duplicate key %.64q", key)
		}
		var buf bytes.Buffer
		if err := value(dec, &buf, depth); err != nil {
			return nil, err
		}
		members[key] = buf.Bytes()
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, err
	}
	return members, nil
}

// value writes the canonical form of the next value: objects with their keys sorted by
// bytes, no whitespace, strings re-encoded by one rule, numbers as written.
func value(dec *json.Decoder, w *bytes.Buffer, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			members, err := object(dec, depth+1)
			if err != nil {
				return err
			}
			keys := make([]string, 0, len(members))
			for k := range members {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			w.WriteByte('{')
			for i, k := range keys {
				if i > 0 {
					w.WriteByte(',')
				}
				writeString(w, k)
				w.WriteByte(':')
				w.Write(members[k])
			}
			w.WriteByte('}')
		case '[':
			if depth+1 > maxDepth {
				return fmt.Errorf("nested deeper than %d", maxDepth)
			}
			w.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					w.WriteByte(',')
				}
				if err := value(dec, w, depth+1); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil { // ']'
				return err
			}
			w.WriteByte(']')
		default:
			return fmt.Errorf("unexpected %v", t)
		}
	case string:
		writeString(w, t)
	case json.Number:
		w.WriteString(string(t))
	case bool:
		if t {
			w.WriteString("true")
		} else {
			w.WriteString("false")
		}
	case nil:
		w.WriteString("null")
	default:
		return fmt.Errorf("unexpected token %T", tok)
	}
	return nil
}

// writeString writes s as a JSON string with one escaping rule (encoding/json's, without
// HTML escapes), whatever escapes the upstream used.
func writeString(w io.Writer, s string) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	io.WriteString(w, strings.TrimSuffix(b.String(), "\n"))
}
