package query

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// ErrInvalid is a request refused as it stands: a filter, page size or page token.
var ErrInvalid = errors.New("invalid query")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// maxFilterBytes bounds each string of a filter (a tool name or resource URI at most).
const maxFilterBytes = 4096

// matcher is a checked filter, with the JSON members a matching record must contain, so that
// most records are passed over without being decoded.
type matcher struct {
	f     *auditv1.Filter
	needs [][]byte
}

// newMatcher checks f (nil matches everything).
func newMatcher(f *auditv1.Filter) (*matcher, error) {
	if f == nil {
		f = &auditv1.Filter{}
	}
	m := &matcher{f: f}
	for _, s := range []struct{ name, value string }{
		{"session_id", f.GetSessionId()}, {"principal", f.GetPrincipal()}, {"tenant", f.GetTenant()},
		{"server", f.GetServer()}, {"tool", f.GetTool()}, {"trace_id", f.GetTraceId()}, {"call_id", f.GetCallId()},
	} {
		if len(s.value) > maxFilterBytes || !utf8.ValidString(s.value) {
			return nil, invalid("filter %s is longer than %d bytes or not UTF-8", s.name, maxFilterBytes)
		}
		if s.value != "" {
			// The store writes members compactly ("name":"value"), escaping as JSON does;
			// a record without these bytes cannot match. Decoding decides the rest.
			v, _ := json.Marshal(s.value)
			m.needs = append(m.needs, append([]byte(`"`+s.name+`":`), v...))
		}
	}
	if _, ok := auditv1.Outcome_name[int32(f.GetOutcome())]; !ok {
		return nil, invalid("unknown outcome %d", f.GetOutcome())
	}
	for _, t := range []struct {
		name string
		ok   bool
		err  error
	}{{"since", f.Since != nil, f.GetSince().CheckValid()}, {"until", f.Until != nil, f.GetUntil().CheckValid()}} {
		if t.ok && t.err != nil {
			return nil, invalid("filter %s: %v", t.name, t.err)
		}
	}
	if f.Since != nil && f.Until != nil && !f.GetSince().AsTime().Before(f.GetUntil().AsTime()) {
		return nil, invalid("filter since is not before until")
	}
	return m, nil
}

var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// match decodes raw and reports whether it matches; a record that does not decode is an
// error (the log holds only what the store wrote).
func (m *matcher) match(raw []byte) (*auditv1.Record, bool, error) {
	for _, n := range m.needs {
		if !bytes.Contains(raw, n) {
			return nil, false, nil
		}
	}
	rec := &auditv1.Record{}
	if err := unmarshal.Unmarshal(raw, rec); err != nil {
		return nil, false, fmt.Errorf("decode audit record: %w", err)
	}
	f := m.f
	switch {
	case f.GetSessionId() != "" && rec.GetSessionId() != f.GetSessionId(),
		f.GetPrincipal() != "" && rec.GetPrincipal() != f.GetPrincipal(),
		f.GetTenant() != "" && rec.GetTenant() != f.GetTenant(),
		f.GetServer() != "" && rec.GetServer() != f.GetServer(),
		f.GetTool() != "" && rec.GetTool() != f.GetTool(),
		f.GetTraceId() != "" && rec.GetTraceId() != f.GetTraceId(),
		f.GetCallId() != "" && rec.GetCallId() != f.GetCallId(),
		f.GetOutcome() != 0 && rec.GetOutcome() != f.GetOutcome(),
		f.Since != nil && rec.GetTime().AsTime().Before(f.GetSince().AsTime()),
		f.Until != nil && !rec.GetTime().AsTime().Before(f.GetUntil().AsTime()):
		return nil, false, nil
	}
	return rec, true, nil
}
