package jsonrpc

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Limits of one body (a message, or a batch of them). Each bounds a count that the sender
// controls; within them the scan's cost is linear in the body's length whatever its shape.
const (
	// MaxDepth bounds the nesting of objects and arrays. It guards the scanner's stack.
	MaxDepth = 64
	// MaxObjectKeys bounds the members of one object: JSON Schemas, argument objects and
	// structured results stay far below it, and it caps what one object adds to the set of
	// keys that duplicate detection keeps.
	MaxObjectKeys = 4096
	// MaxMembers bounds the object members of a whole body, every object and batch element
	// together, and so the keys the duplicate-key set can hold at once (those of the objects
	// still open; 16 bytes a slot at most half full: 4 MiB at the bound). Real data at the
	// ingress's 4 MiB body limit needs 32 bytes per member before it reaches the bound, so only
	// bodies built of tiny members do.
	MaxMembers = 1 << 17
	// MaxBatch bounds the messages of one batch, so a body of tiny messages cannot make the
	// parser allocate many times its size. The ingress's own --max-batch is lower.
	MaxBatch = 1024
)

// work counts what one scan did, so tests can bound the work a hostile body causes without
// measuring time. Each counter grows by a constant per unit it names.
type work struct {
	Scanned  int // bytes read by the single pass (its position only moves forward)
	Keys     int // object members whose key was folded and looked up
	KeyBytes int // key bytes unescaped, folded and hashed
	Probes   int // slots of the duplicate-key set examined, growth included
	Verified int // key bytes folded again to confirm a hash match
	Decoded  int // bytes of member values decoded after the pass (method, name, ...)
}

// slot is one entry of the duplicate-key set: the hash of a folded key, the object it belongs
// to and where its raw key starts. Only the keys of objects still open are live: a slot whose
// object has closed (or belongs to an earlier scan) is free, so the set holds one object's keys
// and its ancestors', and needs no clearing.
type slot struct {
	hash uint64
	tag  uint32 // the object's serial << 8 | its depth; 0 for a slot never used
	key  uint32 // offset of the key's opening quote
}

// maxSerial bounds object serials (24 bits, beside the depth in a tag); a scan opens at most
// MaxMembers objects with keys, and the set is cleared before the serials could wrap.
const maxSerial = 1<<24 - 1

// A pooled scanner keeps a set and scratch buffers up to these sizes; a big body's are left
// to the GC.
const (
	maxPooledSlots = 1 << 12
	maxPooledKey   = 4 << 10
)

var (
	seed     = maphash.MakeSeed()
	scanners = sync.Pool{New: func() any { return new(scanner) }}
)

// scanner reads a body once, left to right: the JSON grammar (RFC 8259), valid UTF-8 in
// strings, depth, the limits above, and no two keys of one object that fold to the same key
// (Unicode simple case folding, as encoding/json matches member names), checked with one hash
// set probe per key. It records the positions of the members a message is routed on; it never
// builds values.
type scanner struct {
	data    []byte
	pos     int
	members int
	serial  uint32               // serial of the newest object with keys
	open    [MaxDepth + 1]uint32 // serial of the open object with keys at each depth, or 0
	set     []slot               // open addressing, linear probing; len is a power of two
	inSet   int                  // live slots
	unesc   []byte               // scratch: an escaped key, decoded
	fold    []byte               // scratch: the folded key
	fold2   []byte               // scratch: a key folded again to confirm a match
	work    work
}

func getScanner(data []byte) *scanner {
	s := scanners.Get().(*scanner)
	s.data, s.pos, s.members, s.inSet, s.work = data, 0, 0, 0, work{}
	clear(s.open[:])
	if s.serial > maxSerial-MaxMembers-1 {
		clear(s.set)
		s.serial = 0
	}
	return s
}

func putScanner(s *scanner) {
	s.data = nil
	if len(s.set) > maxPooledSlots {
		s.set = nil
	}
	for _, b := range []*[]byte{&s.unesc, &s.fold, &s.fold2} {
		if cap(*b) > maxPooledKey {
			*b = nil
		}
	}
	scanners.Put(s)
}

func (s *scanner) syntax(what string) *Error {
	if s.pos >= len(s.data) {
		return parseErr("invalid JSON: unexpected end of input (%s)", what)
	}
	return parseErr("invalid JSON: unexpected %q at offset %d (%s)", s.data[s.pos], s.pos, what)
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

// value checks the value at s.pos; depth is that of the object or array holding it.
func (s *scanner) value(depth int) error {
	if s.pos >= len(s.data) {
		return s.syntax("a value")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object(depth + 1)
	case c == '[':
		return s.array(depth + 1)
	case c == '"':
		_, _, err := s.str()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.syntax("a value")
}

func (s *scanner) literal(word string) error {
	if len(s.data)-s.pos < len(word) || string(s.data[s.pos:s.pos+len(word)]) != word {
		return s.syntax(word)
	}
	s.pos += len(word)
	return nil
}

func (s *scanner) digits() int {
	n := 0
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
		n++
	}
	return n
}

func (s *scanner) number() error {
	if s.data[s.pos] == '-' {
		s.pos++
	}
	if s.pos < len(s.data) && s.data[s.pos] == '0' {
		s.pos++
	} else if s.digits() == 0 {
		return s.syntax("a number")
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return s.syntax("a fraction")
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return s.syntax("an exponent")
		}
	}
	return nil
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// plain8 reports whether none of the 8 bytes of w ends or escapes a string, is a control
// character or starts a multi-byte UTF-8 sequence: such runs are skipped a word at a time.
func plain8(w uint64) bool {
	q := w ^ (lsb * '"')
	b := w ^ (lsb * '\\')
	return ((q-lsb)&^q|(b-lsb)&^b|(w-lsb*0x20)&^w|w)&msb == 0
}

// str checks the string at s.pos (on its opening quote) and moves past it. It reports whether
// the string holds escapes and whether its raw bytes are all ASCII.
func (s *scanner) str() (escaped, ascii bool, err error) {
	d := s.data
	s.pos++
	ascii = true
	for {
		for s.pos+8 <= len(d) && plain8(binary.LittleEndian.Uint64(d[s.pos:])) {
			s.pos += 8
		}
		if s.pos >= len(d) {
			return false, false, s.syntax("a string")
		}
		switch c := d[s.pos]; {
		case c == '"':
			s.pos++
			return escaped, ascii, nil
		case c == '\\':
			escaped = true
			s.pos++
			if s.pos >= len(d) {
				return false, false, s.syntax("an escape")
			}
			switch d[s.pos] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos++
			case 'u':
				if len(d)-s.pos < 5 || !isHex4(d[s.pos+1:s.pos+5]) {
					return false, false, s.syntax("a \\u escape")
				}
				s.pos += 5
			default:
				return false, false, s.syntax("an escape")
			}
		case c < 0x20:
			return false, false, s.syntax("a string (control characters must be escaped)")
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, size := utf8.DecodeRune(d[s.pos:])
			if r == utf8.RuneError && size <= 1 {
				return false, false, parseErr("invalid UTF-8 at offset %d", s.pos)
			}
			ascii = false
			s.pos += size
		}
	}
}

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func (s *scanner) array(depth int) error {
	if depth > MaxDepth {
		return invalid(nil, "nesting deeper than %d", MaxDepth)
	}
	s.pos++ // [
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return nil
	}
	for {
		s.ws()
		if err := s.value(depth); err != nil {
			return err
		}
		more, err := s.next(']')
		if !more || err != nil {
			return err
		}
	}
}

// next moves past the ',' or the closing byte after a value and reports whether another
// element follows.
func (s *scanner) next(closing byte) (bool, error) {
	s.ws()
	if s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ',':
			s.pos++
			return true, nil
		case closing:
			s.pos++
			return false, nil
		}
	}
	return false, s.syntax("',' or '" + string(closing) + "'")
}

// object checks an object whose members are not read.
func (s *scanner) object(depth int) error {
	o, more, err := s.enter(depth)
	for more && err == nil {
		if _, err = s.key(&o); err != nil {
			break
		}
		if err = s.value(depth); err != nil {
			break
		}
		if more, err = s.next('}'); !more && err == nil {
			s.leave(&o)
		}
	}
	return err
}

// obj is the state of an object being scanned.
type obj struct {
	tag  uint32
	keys int
}

// enter moves past '{' and reports whether the object has members.
func (s *scanner) enter(depth int) (obj, bool, error) {
	if depth > MaxDepth {
		return obj{}, false, invalid(nil, "nesting deeper than %d", MaxDepth)
	}
	s.pos++ // {
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return obj{}, false, nil
	}
	s.serial++
	s.open[depth] = s.serial
	return obj{tag: s.serial<<8 | uint32(depth)}, true, nil
}

// leave ends an object with members: its keys leave the set.
func (s *scanner) leave(o *obj) {
	s.open[o.tag&0xff] = 0
	s.inSet -= o.keys
}

// live reports whether sl holds a key of an object still open.
func (s *scanner) live(sl slot) bool {
	return sl.tag != 0 && s.open[sl.tag&0xff] == sl.tag>>8
}

// member is a key just read: its raw bytes (quotes included), decoded and folded forms. The
// slices are scratch, valid until the next key.
type member struct {
	off     int
	decoded []byte
	folded  []byte
}

// key reads the next key of o and the ':' after it, checks the limits and that no earlier key
// of o folds to the same key, and leaves s.pos on the value.
func (s *scanner) key(o *obj) (member, error) {
	s.ws()
	off := s.pos
	if s.pos >= len(s.data) || s.data[s.pos] != '"' {
		return member{}, s.syntax("a key")
	}
	escaped, ascii, err := s.str()
	if err != nil {
		return member{}, err
	}
	if o.keys++; o.keys > MaxObjectKeys {
		return member{}, invalid(nil, "an object with more than %d members", MaxObjectKeys)
	}
	if s.members++; s.members > MaxMembers {
		return member{}, invalid(nil, "more than %d object members in one message", MaxMembers)
	}
	m := member{off: off, decoded: s.data[off+1 : s.pos-1]}
	s.work.Keys++
	s.work.KeyBytes += len(m.decoded)
	if escaped {
		s.unesc = appendUnquoted(s.unesc[:0], m.decoded)
		m.decoded = s.unesc
		s.work.KeyBytes += len(m.decoded)
	}
	s.fold = appendFolded(s.fold[:0], m.decoded, ascii && !escaped)
	m.folded = s.fold
	if err := s.remember(o.tag, maphash.Bytes(seed, m.folded), off, m.folded); err != nil {
		return member{}, err
	}
	s.ws()
	if s.pos >= len(s.data) || s.data[s.pos] != ':' {
		return member{}, s.syntax("':'")
	}
	s.pos++
	s.ws()
	return m, nil
}

// remember adds a folded key of the object tagged tag to the set, refusing it when the object
// already has a key that folds to the same bytes.
func (s *scanner) remember(tag uint32, h uint64, off int, folded []byte) error {
	if (s.inSet+1)*2 > len(s.set) {
		s.grow()
	}
	mask := len(s.set) - 1
	for i := slotIndex(h, tag) & mask; ; i = (i + 1) & mask {
		s.work.Probes++
		sl := &s.set[i]
		if !s.live(*sl) {
			*sl = slot{hash: h, tag: tag, key: uint32(off)}
			s.inSet++
			return nil
		}
		if sl.hash == h && sl.tag == tag && s.sameKey(int(sl.key), folded) {
			return invalid(nil, "duplicate or case-variant key %s", s.data[off:s.pos])
		}
	}
}

func slotIndex(h uint64, tag uint32) int {
	return int(h ^ uint64(tag)*0x9e3779b97f4a7c15)
}

// grow doubles the set, moving the live slots outer objects first. Linear probing stays exact
// with closed objects' slots counted free because every slot on the probe path of a live key
// belongs to its own object or an enclosing one, which close after it; moving outer keys first
// keeps that true. Amortized, each key moves a constant number of times.
func (s *scanner) grow() {
	old := s.set
	var at [MaxDepth + 2]int // counting sort by depth: where each depth's slots start
	for _, sl := range old {
		if s.live(sl) {
			at[sl.tag&0xff+1]++
		}
	}
	for d := 1; d < len(at); d++ {
		at[d] += at[d-1]
	}
	moving := make([]slot, at[len(at)-1])
	for _, sl := range old {
		if s.live(sl) {
			moving[at[sl.tag&0xff]] = sl
			at[sl.tag&0xff]++
		}
	}
	n := max(64, 2*len(old))
	s.set = make([]slot, n)
	mask := n - 1
	for _, sl := range moving {
		for i := slotIndex(sl.hash, sl.tag) & mask; ; i = (i + 1) & mask {
			s.work.Probes++
			if s.set[i].tag == 0 {
				s.set[i] = sl
				break
			}
		}
	}
}

// sameKey reports whether the key whose opening quote is at off folds to folded.
func (s *scanner) sameKey(off int, folded []byte) bool {
	t := scanner{data: s.data, pos: off}
	escaped, ascii, _ := t.str()
	raw := s.data[off+1 : t.pos-1]
	if escaped {
		raw = appendUnquoted(nil, raw)
	}
	s.fold2 = appendFolded(s.fold2[:0], raw, ascii && !escaped)
	s.work.Verified += t.pos - off + len(s.fold2)
	return string(s.fold2) == string(folded)
}

// appendFolded appends key folded the way encoding/json matches member names: each rune
// becomes the smallest rune of its Unicode simple-folding orbit ("K", "k" and the Kelvin sign
// agree, as do "S", "s" and "ſ"); for an ASCII letter that is its upper case.
func appendFolded(dst, key []byte, ascii bool) []byte {
	if ascii {
		for _, c := range key {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
		}
		return dst
	}
	for i := 0; i < len(key); {
		c := key[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(key[i:])
		dst = utf8.AppendRune(dst, foldRune(r))
		i += n
	}
	return dst
}

func foldRune(r rune) rune {
	least := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		least = min(least, f)
	}
	return least
}

// appendUnquoted appends the decoded content of a string checked by str. Lone surrogates
// become U+FFFD, as encoding/json decodes them.
func appendUnquoted(dst, b []byte) []byte {
	for i := 0; i < len(b); {
		c := b[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		switch b[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, n := decodeU(b[i:])
			dst = utf8.AppendRune(dst, r)
			i += n
			continue
		default: // '"', '\\', '/'
			dst = append(dst, b[i+1])
		}
		i += 2
	}
	return dst
}

// decodeU decodes the \uXXXX escape at the start of b (with its low surrogate when it starts a
// pair) and returns the rune and the bytes consumed.
func decodeU(b []byte) (rune, int) {
	r := hex4(b[2:6])
	if utf16.IsSurrogate(r) {
		if len(b) >= 12 && b[6] == '\\' && b[7] == 'u' && isHex4(b[8:12]) {
			if dec := utf16.DecodeRune(r, hex4(b[8:12])); dec != utf8.RuneError {
				return dec, 12
			}
		}
		return utf8.RuneError, 6
	}
	return r, 6
}

// hex4 decodes four hex digits isHex4 accepted.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c >= 'a':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
