package auditsvc

import (
	"unicode/utf8"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
)

// Bounds of a record's decision input (what shadow replay re-decides a call on): the groups
// as authsvc bounds a principal's, each an id.
const maxInputGroups = 64

// validateDecision checks the policy decision and its input: a known decision, the groups
// within their bounds, every string UTF-8 and within maxIDBytes.
func validateDecision(rec *auditv1.Record) error {
	if _, ok := auditv1.PolicyDecision_name[int32(rec.GetDecision())]; !ok {
		return invalid("unknown decision %d", rec.GetDecision())
	}
	in := rec.GetInput()
	if in == nil {
		return nil
	}
	if len(in.GetGroups()) > maxInputGroups {
		return invalid("input: more than %d groups", maxInputGroups)
	}
	for _, g := range in.GetGroups() {
		if len(g) > maxIDBytes || !utf8.ValidString(g) {
			return invalid("input: a group is longer than %d bytes or not UTF-8", maxIDBytes)
		}
	}
	for _, f := range []struct{ name, value string }{
		{"kind", in.GetKind()}, {"source_address", in.GetSourceAddress()}, {"protocol_version", in.GetProtocolVersion()},
	} {
		if len(f.value) > maxIDBytes || !utf8.ValidString(f.value) {
			return invalid("input: %s is longer than %d bytes or not UTF-8", f.name, maxIDBytes)
		}
	}
	return nil
}

// appendDecision writes the decision and its input members as protojson does (see
// appendRecordJSON): after count, in field order, zero values left out. It reports false
// for an unknown decision number.
func (w *recordWriter) appendDecision(rec *auditv1.Record) bool {
	if d := rec.GetDecision(); d != 0 {
		name, known := auditv1.PolicyDecision_name[int32(d)]
		if !known {
			return false
		}
		w.str("decision", name)
	}
	in := rec.GetInput()
	if in == nil {
		return true
	}
	w.key("input")
	inner := recordWriter{b: append(w.b, '{'), ok: true}
	if gs := in.GetGroups(); len(gs) > 0 {
		inner.key("groups")
		inner.b = append(inner.b, '[')
		for i, g := range gs {
			if i > 0 {
				inner.b = append(inner.b, ',')
			}
			inner.quote(g)
		}
		inner.b = append(inner.b, ']')
	}
	inner.str("kind", in.GetKind())
	inner.str("source_address", in.GetSourceAddress())
	inner.str("protocol_version", in.GetProtocolVersion())
	if in.GetArgumentsTooLarge() {
		inner.key("arguments_too_large")
		inner.b = append(inner.b, "true"...)
	}
	if in.GetGroupsOmitted() {
		inner.key("groups_omitted")
		inner.b = append(inner.b, "true"...)
	}
	w.b = append(inner.b, '}')
	w.ok = w.ok && inner.ok
	return true
}
