package auditsvc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// marshalRecord is the record as stored: protojson with the proto field names, compacted.
// The common record (valid UTF-8, known enum values, a timestamp and a duration protojson
// accepts) is written by appendRecordJSON, byte for byte what protojson and json.Compact
// write (a differential test holds it to that) at a fraction of the cost: it is on the path
// of every call, twice. Anything else goes through protojson itself, so its errors stay
// protojson's.
//
// recordID, when not empty, is stored as the record's record_id in place of the one rec
// holds (rec itself is not changed).
func marshalRecord(recordID string, rec *auditv1.Record) ([]byte, error) {
	b, ok := appendRecordJSON(make([]byte, 0, 1024), rec, recordID) // a call's records are 600-800 bytes
	if !ok {
		if recordID != "" && rec.GetRecordId() != recordID {
			rec = proto.CloneOf(rec)
			rec.RecordId = recordID
		}
		var err error
		if b, err = marshalRecordProtojson(rec); err != nil {
			return nil, err
		}
	}
	if len(b) > maxRecordBytes {
		return nil, invalid("record is %d bytes encoded, more than %d", len(b), maxRecordBytes)
	}
	return b, nil
}

// marshalRecordProtojson is the reference encoding: protojson with the proto field names,
// its randomised whitespace compacted away.
func marshalRecordProtojson(rec *auditv1.Record) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return buf.Bytes(), nil
}

// Bounds protojson puts on well-known types (google/protobuf/timestamp.proto, duration.proto).
const (
	minTimestampSeconds = -62135596800 // 0001-01-01T00:00:00Z
	maxTimestampSeconds = 253402300799 // 9999-12-31T23:59:59Z
	maxDurationSeconds  = 315576000000
)

// appendRecordJSON appends rec as protojson (UseProtoNames) compacted writes it: the members
// in declaration order, zero values left out, enums by name, the timestamp in RFC 3339 (UTC,
// 0, 3, 6 or 9 fractional digits), the duration in seconds with as many digits. It reports
// false, with dst unspecified, for a record it does not write exactly as protojson would
// (invalid UTF-8, an unknown enum number, a timestamp or duration out of the range it
// normalises); the caller then uses protojson.
//
// recordID, when not empty, is written as record_id instead of rec's: record_id is declared
// last, so it is the last member either way.
func appendRecordJSON(dst []byte, rec *auditv1.Record, recordID string) ([]byte, bool) {
	if rec == nil {
		rec = &auditv1.Record{}
	}
	w := recordWriter{b: append(dst, '{'), ok: true}
	if t := rec.GetTime(); t != nil {
		secs, nanos := t.GetSeconds(), t.GetNanos()
		if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos >= 1e9 {
			return dst, false
		}
		w.key("time")
		w.b = append(w.b, '"')
		w.b = appendTrimmedFraction(time.Unix(secs, int64(nanos)).UTC().AppendFormat(w.b, "2006-01-02T15:04:05.000000000"))
		w.b = append(w.b, `Z"`...)
	}
	w.str("trace_id", rec.GetTraceId())
	w.str("session_id", rec.GetSessionId())
	w.str("principal", rec.GetPrincipal())
	w.str("tenant", rec.GetTenant())
	w.str("server", rec.GetServer())
	w.str("method", rec.GetMethod())
	w.str("tool", rec.GetTool())
	w.str("arguments_digest", rec.GetArgumentsDigest())
	w.str("bundle_version", rec.GetBundleVersion())
	if ids := rec.GetPolicyIds(); len(ids) > 0 {
		w.key("policy_ids")
		w.b = append(w.b, '[')
		for i, id := range ids {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.quote(id)
		}
		w.b = append(w.b, ']')
	}
	if o := rec.GetOutcome(); o != 0 {
		name, known := auditv1.Outcome_name[int32(o)]
		if !known {
			return dst, false
		}
		w.str("outcome", name)
	}
	if d := rec.GetLatency(); d != nil {
		secs, nanos := d.GetSeconds(), d.GetNanos()
		if secs < -maxDurationSeconds || secs > maxDurationSeconds || nanos <= -1e9 || nanos >= 1e9 ||
			(secs > 0 && nanos < 0) || (secs < 0 && nanos > 0) {
			return dst, false
		}
		w.key("latency")
		w.b = append(w.b, '"')
		if secs < 0 || nanos < 0 {
			w.b = append(w.b, '-')
			secs, nanos = -secs, -nanos
		}
		w.b = strconv.AppendInt(w.b, secs, 10)
		w.b = append(w.b, '.')
		w.b = appendTrimmedFraction(appendNanos(w.b, nanos))
		w.b = append(w.b, `s"`...)
	}
	w.str("error", rec.GetError())
	w.str("call_id", rec.GetCallId())
	if p := rec.GetPhase(); p != 0 {
		name, known := auditv1.Phase_name[int32(p)]
		if !known {
			return dst, false
		}
		w.str("phase", name)
	}
	w.str("result_digest", rec.GetResultDigest())
	if c := rec.GetCount(); c != 0 {
		w.key("count")
		w.b = strconv.AppendUint(w.b, uint64(c), 10)
	}
	decided := w.appendDecision(rec)
	w.str("revision", rec.GetRevision())
	w.str("arguments", rec.GetArguments())
	w.str("arguments_form", rec.GetArgumentsForm())
	if recordID == "" {
		recordID = rec.GetRecordId()
	}
	w.str("record_id", recordID)
	if !decided || !w.ok {
		return dst, false
	}
	return append(w.b, '}'), true
}

// appendNanos appends n (0 ≤ n < 1e9) as nine digits.
func appendNanos(b []byte, n int32) []byte {
	var d [9]byte
	for i := 8; i >= 0; i-- {
		d[i] = byte('0' + n%10)
		n /= 10
	}
	return append(b, d[:]...)
}

// appendTrimmedFraction drops the trailing "000" groups of a nine-digit fraction at the end
// of b, and the point with them when all nine are zeros, as protojson does.
func appendTrimmedFraction(b []byte) []byte {
	for range 2 {
		if !bytes.HasSuffix(b, []byte("000")) {
			return b
		}
		b = b[:len(b)-3]
	}
	if bytes.HasSuffix(b, []byte(".000")) {
		b = b[:len(b)-4]
	}
	return b
}

// recordWriter appends the members of one object.
type recordWriter struct {
	b     []byte
	first bool // a member has been written
	ok    bool // every string was valid UTF-8
}

func (w *recordWriter) key(name string) {
	if w.first {
		w.b = append(w.b, ',')
	}
	w.first = true
	w.b = append(w.b, '"')
	w.b = append(w.b, name...)
	w.b = append(w.b, `":`...)
}

// str writes a string member unless s is empty (proto3 leaves zero values out).
func (w *recordWriter) str(name, s string) {
	if s == "" {
		return
	}
	w.key(name)
	w.quote(s)
}

// quote appends s as protojson quotes a string: '"', '\\' and the control characters
// escaped (\b \f \n \r \t, else \u00XX), nothing else; invalid UTF-8 clears ok.
func (w *recordWriter) quote(s string) {
	w.b = append(w.b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				w.ok = false
				return
			}
			i += n
			continue
		}
		if c >= ' ' && c != '"' && c != '\\' {
			i++
			continue
		}
		w.b = append(w.b, s[start:i]...)
		switch c {
		case '"', '\\':
			w.b = append(w.b, '\\', c)
		case '\b':
			w.b = append(w.b, `\b`...)
		case '\f':
			w.b = append(w.b, `\f`...)
		case '\n':
			w.b = append(w.b, `\n`...)
		case '\r':
			w.b = append(w.b, `\r`...)
		case '\t':
			w.b = append(w.b, `\t`...)
		default:
			const hex = "0123456789abcdef"
			w.b = append(w.b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	w.b = append(w.b, s[start:]...)
	w.b = append(w.b, '"')
}
