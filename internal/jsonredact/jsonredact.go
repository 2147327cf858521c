// Package jsonredact masks the values at a few JSON paths of a document, for audit records
// that keep a call's arguments with their secrets taken out. The paths are a small subset
// of JSONPath: "$" followed by members (".name"), every member of an object (".*") and
// every element of an array ("[*]"). The registry validates a server's paths with Compile;
// the ingress compiles and applies them.
//
// Redact walks the document once: it descends only into values some path continues into and
// skips every other value with a flat scan, so its cost is linear in the document and its
// recursion is bounded by the paths' depth, not by the document's. A path that names what the
// document does not have (an absent member, a member of an array) matches nothing.
package jsonredact

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonnav"
	"strings"
	"unicode/utf8"
)

// Bounds on the paths of one setting: an operator names a few secrets, not a schema.
const (
	MaxPaths     = 32
	MaxPathBytes = 256
	MaxDepth     = 16 // segments after "$"
)

// Mask is what replaces a masked value: a JSON string, so the document stays valid.
const Mask = `"[redacted]"`

// ErrTooLarge is Redact's answer when the redacted document would exceed its limit.
var ErrTooLarge = errors.New("jsonredact: redacted document over the limit")

// errSyntax is a malformed document: Redact is given JSON the gateway already parsed, but
// does not trust it to be valid, only expects it to be.
var errSyntax = errors.New("jsonredact: malformed JSON")

// Paths is a compiled set of paths, a trie: safe for concurrent use.
type Paths struct {
	root node
}

// node is one position in the trie: the paths that reach it and where they go next.
type node struct {
	mask    bool             // a path ends here: the value is masked whole
	names   map[string]*node // ".name"
	member  *node            // ".*"
	element *node            // "[*]"
}

// Compile parses paths (at most MaxPaths, each of at most MaxPathBytes and MaxDepth
// segments). The error names the first bad path and why.
func Compile(paths []string) (*Paths, error) {
	if len(paths) > MaxPaths {
		return nil, fmt.Errorf("%d paths, more than the limit of %d", len(paths), MaxPaths)
	}
	p := &Paths{}
	for i, path := range paths {
		if err := p.add(path); err != nil {
			return nil, fmt.Errorf("[%d] %.80q: %w", i, path, err)
		}
	}
	return p, nil
}

// add parses one path into the trie.
func (p *Paths) add(path string) error {
	if len(path) > MaxPathBytes {
		return fmt.Errorf("longer than %d bytes", MaxPathBytes)
	}
	if !utf8.ValidString(path) {
		return errors.New("not valid UTF-8")
	}
	rest, ok := strings.CutPrefix(path, "$")
	if !ok {
		return errors.New(`want a path starting with "$", such as $.password or $.items[*].token`)
	}
	if rest == "" {
		return errors.New(`"$" alone would mask everything: name a member ($.name, $.*)`)
	}
	n, depth := &p.root, 0
	for rest != "" {
		if depth++; depth > MaxDepth {
			return fmt.Errorf("more than %d segments", MaxDepth)
		}
		switch {
		case strings.HasPrefix(rest, "[*]"):
			if n.element == nil {
				n.element = &node{}
			}
			n, rest = n.element, rest[3:]
		case strings.HasPrefix(rest, ".*"):
			if n.member == nil {
				n.member = &node{}
			}
			n, rest = n.member, rest[2:]
		case strings.HasPrefix(rest, "."):
			end := strings.IndexAny(rest[1:], ".[")
			if end < 0 {
				end = len(rest) - 1
			}
			name := rest[1 : 1+end]
			if err := checkName(name); err != nil {
				return err
			}
			if n.names == nil {
				n.names = make(map[string]*node)
			}
			next := n.names[name]
			if next == nil {
				next = &node{}
				n.names[name] = next
			}
			n, rest = next, rest[1+end:]
		default:
			return fmt.Errorf("at %.20q: want .name, .* or [*]", rest)
		}
	}
	n.mask = true
	return nil
}

// checkName accepts a member name: not empty, no '*', ']', quotes, backslashes, spaces or
// control characters (the subset has no quoted names).
func checkName(name string) error {
	if name == "" {
		return errors.New("an empty member name")
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(`*]'"\`, r) {
			return fmt.Errorf("member name %.40q: no spaces, control characters, quotes, backslashes, '*' or ']'", name)
		}
	}
	return nil
}

// Redact returns doc with the value at each path replaced by Mask, the rest byte for byte
// as given. It returns ErrTooLarge, without building it, when the result would be longer
// than limit bytes, and an error for a malformed document.
func (p *Paths) Redact(doc []byte, limit int) ([]byte, error) {
	var spans [][2]int
	start := skipWS(doc, 0)
	end, err := p.walk(doc, start, []*node{&p.root}, &spans)
	if err != nil {
		return nil, err
	}
	if skipWS(doc, end) != len(doc) {
		return nil, errSyntax
	}
	size := len(doc)
	for _, s := range spans {
		size += len(Mask) - (s[1] - s[0])
	}
	if size > limit {
		return nil, ErrTooLarge
	}
	out := make([]byte, 0, size)
	last := 0
	for _, s := range spans {
		out = append(out, doc[last:s[0]]...)
		out = append(out, Mask...)
		last = s[1]
	}
	return append(out, doc[last:]...), nil
}

// walk reads the value at doc[i] (no whitespace before it), which the nodes at reach, and
// returns the index just past it; the spans of masked values are appended in order.
func (p *Paths) walk(doc []byte, i int, at []*node, spans *[][2]int) (int, error) {
	if i >= len(doc) {
		return 0, errSyntax
	}
	for _, n := range at {
		if n.mask {
			end, err := skipValue(doc, i)
			if err != nil {
				return 0, err
			}
			*spans = append(*spans, [2]int{i, end})
			return end, nil
		}
	}
	switch doc[i] {
	case '{':
		return p.object(doc, i, at, spans)
	case '[':
		var next []*node
		for _, n := range at {
			if n.element != nil {
				next = append(next, n.element)
			}
		}
		if len(next) == 0 {
			return skipValue(doc, i)
		}
		return p.array(doc, i, next, spans)
	default:
		return skipValue(doc, i)
	}
}

// object walks the object at doc[i], descending into each member some node continues into.
func (p *Paths) object(doc []byte, i int, at []*node, spans *[][2]int) (int, error) {
	named := false
	for _, n := range at {
		if n.member != nil || len(n.names) > 0 {
			named = true
		}
	}
	if !named {
		return skipValue(doc, i)
	}
	i = skipWS(doc, i+1)
	if i < len(doc) && doc[i] == '}' {
		return i + 1, nil
	}
	next := make([]*node, 0, 2*len(at))
	for {
		if i >= len(doc) || doc[i] != '"' {
			return 0, errSyntax
		}
		kend, err := skipString(doc, i)
		if err != nil {
			return 0, err
		}
		key := doc[i+1 : kend-1]
		i = skipWS(doc, kend)
		if i >= len(doc) || doc[i] != ':' {
			return 0, errSyntax
		}
		i = skipWS(doc, i+1)
		next = next[:0]
		var name string
		decoded := false
		for _, n := range at {
			if n.member != nil {
				next = append(next, n.member)
			}
			if len(n.names) == 0 {
				continue
			}
			if !decoded {
				name, err = keyName(key)
				if err != nil {
					return 0, err
				}
				decoded = true
			}
			if c := n.names[name]; c != nil {
				next = append(next, c)
			}
		}
		if len(next) == 0 {
			i, err = skipValue(doc, i)
		} else {
			i, err = p.walk(doc, i, next, spans)
		}
		if err != nil {
			return 0, err
		}
		i = skipWS(doc, i)
		if i >= len(doc) {
			return 0, errSyntax
		}
		if doc[i] == '}' {
			return i + 1, nil
		}
		if doc[i] != ',' {
			return 0, errSyntax
		}
		i = skipWS(doc, i+1)
	}
}

// array walks the array at doc[i], each element with the nodes at.
func (p *Paths) array(doc []byte, i int, at []*node, spans *[][2]int) (int, error) {
	i = skipWS(doc, i+1)
	if i < len(doc) && doc[i] == ']' {
		return i + 1, nil
	}
	for {
		end, err := p.walk(doc, i, at, spans)
		if err != nil {
			return 0, err
		}
		i = skipWS(doc, end)
		if i >= len(doc) {
			return 0, errSyntax
		}
		if doc[i] == ']' {
			return i + 1, nil
		}
		if doc[i] != ',' {
			return 0, errSyntax
		}
		i = skipWS(doc, i+1)
	}
}

// keyName is a raw key (between its quotes) as a string; an escaped one is decoded.
func keyName(raw []byte) (string, error) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), nil
	}
	var s string
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	if err := json.Unmarshal(q, &s); err != nil {
		return "", errSyntax
	}
	return s, nil
}

// The scanning itself is internal/jsonnav's: one skipper of JSON for the gateway.
func skipWS(b []byte, i int) int { return jsonnav.SkipWS(b, i) }

func skipString(b []byte, i int) (int, error) {
	end, err := jsonnav.SkipString(b, i)
	if err != nil {
		return 0, errSyntax
	}
	return end, nil
}

func skipValue(b []byte, i int) (int, error) {
	end, err := jsonnav.SkipValue(b, i)
	if err != nil {
		return 0, errSyntax
	}
	return end, nil
}
