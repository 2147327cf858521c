package policysvc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/cedar-policy/cedar-go/types"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
)

// The Cedar context of a request: what a condition may test besides the principal and the
// resource. Every action's context has the same shape (the schema's RequestContext):
//
//	context.time      {unix: Long, hour: Long, weekday: Long}  policysvc's clock, UTC;
//	                  weekday 0 is Sunday
//	context.source    String   the host's address
//	context.session   String   the session id ("" without one)
//	context.revision  String   the negotiated MCP revision ("" before one)
//	context.method    String   the MCP method (for the catch-all action, which one)
//	context.arguments Record   tools/call and prompts/get arguments, when the bundle
//	                           refers to arguments at all (otherwise not built: the hot
//	                           path pays for no conversion it does not use)
//
// Arguments are JSON: objects become records, arrays sets, strings strings, integers longs,
// true/false booleans, other numbers decimals (at most 4 decimal places, as Cedar's decimal
// has) and null members are left out. Arguments that cannot be converted (too large, too
// deep, too many values, a number Cedar cannot hold) make the request denied with the reason
// in the response's errors: a policy that forbids by argument must never be skipped.

// MaxArgumentBytes is the most of a call's arguments a caller sends (within the 64 KiB Check
// request); beyond, it sends arguments_too_large instead.
const MaxArgumentBytes = 48 << 10

// Bounds of the arguments conversion.
const (
	maxArgumentBytes  = MaxArgumentBytes
	maxArgumentDepth  = 16
	maxArgumentValues = 4096
)

// catchAll is the action of every method the bundle's schema does not declare.
const catchAll = "other"

// adminActionPrefix starts the admin actions of the operator CLI, which no host method is.
const adminActionPrefix = "admin/"

// errArguments is a conversion failure: the request is denied.
var errArguments = errors.New("arguments cannot be given to policy")

// argumentsNeed is what of a call's arguments a bundle reads: none (read false), all, or
// the named top-level members. Converting only those spares the hot path the conversion of
// arguments nobody tests (a 16 KiB text, say).
type argumentsNeed struct {
	read    bool
	all     bool
	members map[string]bool
	// context: the members of the context the bundle reads (all of them when allContext).
	allContext bool
	context    map[string]bool
}

// needOf is what bundle b reads of the context and the arguments.
func needOf(b *cedarpolicy.Bundle) argumentsNeed {
	all, members := b.ArgumentMembers()
	allCtx, ctx := b.ContextMembers()
	// Without a schema nothing bounds what a policy may read: build everything.
	return argumentsNeed{read: b.ReadsArguments(), all: all || !b.Validated(), members: members,
		allContext: allCtx || !b.Validated(), context: ctx}
}

// wants says whether the context member name is to be built.
func (n argumentsNeed) wants(name string) bool { return n.allContext || n.context[name] }

// timeRecord is context.time for one second, built once a second: most requests of a
// second share it.
type timeRecord struct {
	unix int64
	rec  types.Record
}

var lastTime atomic.Pointer[timeRecord]

func timeOf(now time.Time) types.Record {
	now = now.UTC()
	if t := lastTime.Load(); t != nil && t.unix == now.Unix() {
		return t.rec
	}
	t := &timeRecord{unix: now.Unix(), rec: types.NewRecord(types.RecordMap{
		"unix":    types.Long(now.Unix()),
		"hour":    types.Long(now.Hour()),
		"weekday": types.Long(now.Weekday()),
	})}
	lastTime.Store(t)
	return t.rec
}

// cedarContext builds the context of req at now, with the arguments need says.
func cedarContext(req *policyv1.CheckRequest, now time.Time, need argumentsNeed) (types.Record, error) {
	usesArguments := need.read
	c := req.GetContext()
	m := make(types.RecordMap, 6)
	if need.wants("time") {
		m["time"] = timeOf(now)
	}
	if need.wants("source") {
		m["source"] = types.String(c.GetSourceAddress())
	}
	if need.wants("session") {
		m["session"] = types.String(c.GetSessionId())
	}
	if need.wants("revision") {
		m["revision"] = types.String(c.GetProtocolVersion())
	}
	if need.wants("method") {
		m["method"] = types.String(req.GetAction())
	}
	if usesArguments && need.wants("arguments") {
		if c.GetArgumentsTooLarge() {
			return types.Record{}, fmt.Errorf("%w: larger than the gateway sends to policy (%d bytes)", errArguments, MaxArgumentBytes)
		}
		args := types.NewRecord(types.RecordMap{})
		// No arguments, and "arguments": null (as some clients send), are an empty record.
		if raw := bytes.TrimSpace(c.GetArguments()); len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
			var err error
			if need.all {
				args, err = convertArguments(raw)
			} else {
				args, err = convertMembers(raw, need.members)
			}
			if err != nil {
				return types.Record{}, err
			}
		}
		m["arguments"] = args
	}
	return types.NewRecord(m), nil
}

// convertArguments turns a JSON object into a Cedar record, within the bounds.
func convertArguments(raw []byte) (types.Record, error) {
	if len(raw) > maxArgumentBytes {
		return types.Record{}, fmt.Errorf("%w: %d bytes, more than %d", errArguments, len(raw), maxArgumentBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	conv := &argConverter{dec: dec}
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return types.Record{}, fmt.Errorf("%w: not a JSON object", errArguments)
	}
	rec, err := conv.object(1)
	if err != nil {
		return types.Record{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return types.Record{}, fmt.Errorf("%w: data after the object", errArguments)
	}
	return rec, nil
}

// argConverter walks a JSON document token by token (no intermediate tree), counting values.
type argConverter struct {
	dec    *json.Decoder
	values int
}

func (c *argConverter) count() error {
	c.values++
	if c.values > maxArgumentValues {
		return fmt.Errorf("%w: more than %d values", errArguments, maxArgumentValues)
	}
	return nil
}

// object reads the members of an object whose '{' was read.
func (c *argConverter) object(depth int) (types.Record, error) {
	m := types.RecordMap{}
	for c.dec.More() {
		tok, err := c.dec.Token()
		if err != nil {
			return types.Record{}, fmt.Errorf("%w: %v", errArguments, err)
		}
		key, _ := tok.(string)
		v, present, err := c.value(depth)
		if err != nil {
			return types.Record{}, err
		}
		if present {
			m[types.String(key)] = v
		}
	}
	if _, err := c.dec.Token(); err != nil { // '}'
		return types.Record{}, fmt.Errorf("%w: %v", errArguments, err)
	}
	return types.NewRecord(m), nil
}

// value reads one value; present is false for null.
func (c *argConverter) value(depth int) (types.Value, bool, error) {
	if err := c.count(); err != nil {
		return nil, false, err
	}
	tok, err := c.dec.Token()
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", errArguments, err)
	}
	switch t := tok.(type) {
	case nil:
		return nil, false, nil
	case bool:
		return types.Boolean(t), true, nil
	case string:
		return types.String(t), true, nil
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return types.Long(i), true, nil
		}
		d, err := types.ParseDecimal(string(t))
		if err != nil {
			return nil, false, fmt.Errorf("%w: the number %.40s is neither a 64-bit integer nor a decimal of at most 4 places", errArguments, string(t))
		}
		return d, true, nil
	case json.Delim:
		if depth >= maxArgumentDepth {
			return nil, false, fmt.Errorf("%w: nested deeper than %d", errArguments, maxArgumentDepth)
		}
		if t == '{' {
			r, err := c.object(depth + 1)
			return r, err == nil, err
		}
		var vals []types.Value
		for c.dec.More() {
			v, present, err := c.value(depth + 1)
			if err != nil {
				return nil, false, err
			}
			if present {
				vals = append(vals, v)
			}
		}
		if _, err := c.dec.Token(); err != nil { // ']'
			return nil, false, fmt.Errorf("%w: %v", errArguments, err)
		}
		return types.NewSet(vals...), true, nil
	}
	return nil, false, fmt.Errorf("%w: unexpected %v", errArguments, tok)
}

// actionOf is the Cedar action of a method: the method itself where the bundle's schema
// declares it (or the bundle has no schema), else the catch-all.
func actionOf(b *cedarpolicy.Bundle, method string) string {
	if !b.Validated() {
		return method
	}
	if _, ok := b.Action(types.NewEntityUID(cedarpolicy.TypeAction, types.String(method))); ok {
		return method
	}
	return catchAll
}

// convertMembers converts the named top-level members of a JSON object, and only them: the
// others are stepped over (a linear scan that allocates nothing for them).
func convertMembers(raw []byte, members map[string]bool) (types.Record, error) {
	if len(raw) > maxArgumentBytes {
		return types.Record{}, fmt.Errorf("%w: %d bytes, more than %d", errArguments, len(raw), maxArgumentBytes)
	}
	m := types.RecordMap{}
	conv := &argConverter{}
	err := eachMember(raw, func(key, value []byte) error {
		name, err := memberName(key)
		if err != nil {
			return err
		}
		if !members[name] {
			return nil
		}
		conv.dec = json.NewDecoder(bytes.NewReader(value))
		conv.dec.UseNumber()
		v, present, err := conv.value(1)
		if err != nil {
			return err
		}
		if present {
			m[types.String(name)] = v
		} else {
			delete(m, types.String(name))
		}
		return nil
	})
	if err != nil {
		return types.Record{}, err
	}
	return types.NewRecord(m), nil
}

// memberName decodes a member name (a JSON string, quotes included); one without escapes
// costs one allocation.
func memberName(key []byte) (string, error) {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key[1 : len(key)-1]), nil
	}
	var s string
	if err := json.Unmarshal(key, &s); err != nil {
		return "", fmt.Errorf("%w: a member name: %v", errArguments, err)
	}
	return s, nil
}

// eachMember calls fn with each member's name (a JSON string, quotes included) and value of
// the JSON object raw. It checks what it needs to find the members' extents; the conversion
// of a value checks that value in full.
func eachMember(raw []byte, fn func(key, value []byte) error) error {
	bad := func(what string) error { return fmt.Errorf("%w: not a JSON object (%s)", errArguments, what) }
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return bad("no opening brace")
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		if skipSpace(raw, i+1) != len(raw) {
			return bad("data after the object")
		}
		return nil
	}
	for {
		if i >= len(raw) || raw[i] != '"' {
			return bad("a member name is not a string")
		}
		end, ok := stringEnd(raw, i)
		if !ok {
			return bad("an unterminated string")
		}
		key := raw[i:end]
		i = skipSpace(raw, end)
		if i >= len(raw) || raw[i] != ':' {
			return bad("no colon after a member name")
		}
		i = skipSpace(raw, i+1)
		vend, why := valueEnd(raw, i)
		if why != "" {
			return fmt.Errorf("%w: %s", errArguments, why)
		}
		if err := fn(key, raw[i:vend]); err != nil {
			return err
		}
		i = skipSpace(raw, vend)
		if i >= len(raw) {
			return bad("no closing brace")
		}
		if raw[i] == '}' {
			if skipSpace(raw, i+1) != len(raw) {
				return bad("data after the object")
			}
			return nil
		}
		if raw[i] != ',' {
			return bad("no comma between members")
		}
		i = skipSpace(raw, i+1)
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index after the string starting at b[i] == '"': the first quote not
// escaped, that is not preceded by an odd run of backslashes.
func stringEnd(b []byte, i int) (int, bool) {
	for j := i + 1; ; {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return 0, false
		}
		q := j + k
		n := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, true
		}
		j = q + 1
	}
}

// valueEnd returns the index after the value starting at b[i]: a string, an object or array
// (brackets matched outside strings, nesting bounded), or a scalar up to a delimiter; or why
// it cannot.
func valueEnd(b []byte, i int) (int, string) {
	const malformed = "not a JSON object (a malformed value)"
	if i >= len(b) {
		return 0, malformed
	}
	switch b[i] {
	case '"':
		if end, ok := stringEnd(b, i); ok {
			return end, ""
		}
		return 0, malformed
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, ok := stringEnd(b, j)
				if !ok {
					return 0, malformed
				}
				j = end - 1
			case '{', '[':
				depth++
				if depth >= maxArgumentDepth {
					return 0, fmt.Sprintf("nested deeper than %d", maxArgumentDepth)
				}
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, ""
				}
			}
		}
		return 0, malformed
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	if j == i {
		return 0, malformed
	}
	return j, ""
}
