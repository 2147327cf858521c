package auditsvc

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// everyField is a record with every field of auditv1.Record set, found by reflection: a field
// added to the proto and not to appendRecordJSON makes TestMarshalRecordMatchesProtojson fail.
func everyField(t testing.TB) *auditv1.Record {
	t.Helper()
	rec := &auditv1.Record{}
	m := rec.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.StringKind:
			l := m.Mutable(fd).List()
			l.Append(protoreflect.ValueOfString("p-" + string(fd.Name())))
			l.Append(protoreflect.ValueOfString(`q"\` + string(fd.Name())))
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString("v-"+string(fd.Name())))
		case fd.Kind() == protoreflect.Uint32Kind:
			m.Set(fd, protoreflect.ValueOfUint32(4294967295))
		case fd.Kind() == protoreflect.EnumKind:
			m.Set(fd, protoreflect.ValueOfEnum(fd.Enum().Values().Get(fd.Enum().Values().Len()-1).Number()))
		case fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Timestamp":
			m.Set(fd, protoreflect.ValueOfMessage((&timestamppb.Timestamp{Seconds: 1764324000, Nanos: 123456000}).ProtoReflect()))
		case fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Duration":
			m.Set(fd, protoreflect.ValueOfMessage((&durationpb.Duration{Seconds: 2, Nanos: 5}).ProtoReflect()))
		case fd.Message() != nil && fd.Message().FullName() == "gatehouse.audit.v1.DecisionInput":
			in := &auditv1.DecisionInput{
				Groups: []string{"g-1", `g"\2`}, Kind: "k-kind", SourceAddress: "v-source", ProtocolVersion: "v-revision",
				ArgumentsTooLarge: true, GroupsOmitted: true,
			}
			if n := in.ProtoReflect().Descriptor().Fields().Len(); n != 6 {
				t.Fatalf("DecisionInput has %d fields; set every one here (and in appendDecision)", n)
			}
			m.Set(fd, protoreflect.ValueOfMessage(in.ProtoReflect()))
		default:
			t.Fatalf("field %s (%s) is not covered by this test nor, probably, by appendRecordJSON", fd.Name(), fd.Kind())
		}
	}
	return rec
}

func TestMarshalRecordMatchesProtojson(t *testing.T) {
	all := everyField(t)
	cases := []struct {
		name string
		rec  *auditv1.Record
		fast bool // written by appendRecordJSON, not the protojson fallback
	}{
		{"empty", &auditv1.Record{}, true},
		{"every field", all, true},
		{"decision", &auditv1.Record{
			Time: timestamppb.Now(), TraceId: "0af7651916cd43dd8448eb211c80319c", SessionId: "s-1", Principal: "alice",
			Tenant: "acme", Server: "echo", Method: "tools/call", Tool: "echo", ArgumentsDigest: strings.Repeat("ab", 32),
			BundleVersion: "b1", PolicyIds: []string{"policy0", "policy1"}, CallId: strings.Repeat("0f", 16),
			Phase: auditv1.Phase_PHASE_DECISION,
		}, true},
		{"outcome", &auditv1.Record{
			Time: &timestamppb.Timestamp{Seconds: 1, Nanos: 1}, Server: "echo", Method: "tools/call",
			Outcome: auditv1.Outcome_OUTCOME_FAILED, Latency: &durationpb.Duration{Nanos: 340000},
			Error: "upstream said \"no\"\n\tat line 1\r\x00\x01\x1f\x7f\b\f\\", CallId: "c", Phase: auditv1.Phase_PHASE_OUTCOME,
			ResultDigest: "d",
		}, true},
		{"unicode and HTML characters are not escaped", &auditv1.Record{
			Principal: "ünïcødé 日本 😀 <script>&amp;</script> \u2028\u2029 \ufffd", PolicyIds: []string{""},
		}, true},
		{"zero time and zero latency are present", &auditv1.Record{Time: &timestamppb.Timestamp{}, Latency: &durationpb.Duration{}}, true},
		{"time with millisecond fraction", &auditv1.Record{Time: &timestamppb.Timestamp{Seconds: 1700000000, Nanos: 5000000}}, true},
		{"time with microsecond fraction", &auditv1.Record{Time: &timestamppb.Timestamp{Seconds: 1700000000, Nanos: 5000}}, true},
		{"earliest time", &auditv1.Record{Time: &timestamppb.Timestamp{Seconds: minTimestampSeconds}}, true},
		{"latest time", &auditv1.Record{Time: &timestamppb.Timestamp{Seconds: maxTimestampSeconds, Nanos: 999999999}}, true},
		{"latency seconds only", &auditv1.Record{Latency: &durationpb.Duration{Seconds: 61}}, true},
		{"latency milliseconds", &auditv1.Record{Latency: &durationpb.Duration{Seconds: 1, Nanos: 500000000}}, true},
		{"negative latency", &auditv1.Record{Latency: &durationpb.Duration{Seconds: -3, Nanos: -1000}}, true},
		{"negative sub-second latency", &auditv1.Record{Latency: &durationpb.Duration{Nanos: -1}}, true},
		{"unknown outcome", &auditv1.Record{Outcome: 99}, false},
		{"unknown phase", &auditv1.Record{Phase: 77}, false},
		{"time nanos one second", &auditv1.Record{Time: &timestamppb.Timestamp{Seconds: 5, Nanos: 1e9}}, false},
		{"latency with mismatched signs", &auditv1.Record{Latency: &durationpb.Duration{Seconds: 1, Nanos: -1}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, wantErr := marshalRecordProtojson(tc.rec)
			got, gotErr := marshalRecord("", tc.rec)
			if (wantErr != nil) != (gotErr != nil) {
				t.Fatalf("marshalRecord error %v, protojson error %v", gotErr, wantErr)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("marshalRecord differs from protojson:\n got %s\nwant %s", got, want)
			}
			if _, fast := appendRecordJSON(nil, tc.rec, ""); fast != tc.fast {
				t.Fatalf("appendRecordJSON handled it: %v, want %v", fast, tc.fast)
			}
		})
	}
}

// Invalid UTF-8 is refused by both encoders, wherever it is.
func TestMarshalRecordInvalidUTF8(t *testing.T) {
	for _, rec := range []*auditv1.Record{
		{Principal: "a\xffb"},
		{PolicyIds: []string{"ok", "\xc3"}},
		{ResultDigest: "\xed\xa0\x80"}, // a surrogate half
		{Input: &auditv1.DecisionInput{Groups: []string{"staff", "a\xffb"}}},
		{Input: &auditv1.DecisionInput{SourceAddress: "\xc3"}},
	} {
		if _, ok := appendRecordJSON(nil, rec, ""); ok {
			t.Errorf("appendRecordJSON wrote %v", rec)
		}
		if _, err := marshalRecord("", rec); err == nil {
			t.Errorf("marshalRecord accepted %v", rec)
		}
	}
}

func FuzzMarshalRecord(f *testing.F) {
	f.Add("alice", "tools/call", "x\"y\\z\n", "日本", int64(1764324000), int32(123), int64(0), int32(340000), int32(2), int32(1))
	f.Add("", "", "", "\x00\x7f\u2028", int64(-1), int32(999999999), int64(-2), int32(-5), int32(0), int32(0))
	f.Fuzz(func(t *testing.T, principal, method, errText, tool string, secs int64, nanos int32, dsecs int64, dnanos int32, outcome, phase int32) {
		rec := &auditv1.Record{
			Time: &timestamppb.Timestamp{Seconds: secs, Nanos: nanos}, Principal: principal, Method: method,
			Tool: tool, Error: errText, PolicyIds: []string{tool, principal}, Outcome: auditv1.Outcome(outcome),
			Latency: &durationpb.Duration{Seconds: dsecs, Nanos: dnanos}, Phase: auditv1.Phase(phase),
			Decision: auditv1.PolicyDecision(uint32(outcome) % 3), Input: &auditv1.DecisionInput{Groups: []string{tool}, Kind: principal, GroupsOmitted: phase%2 == 0},
		}
		want, wantErr := marshalRecordProtojson(rec)
		got, ok := appendRecordJSON(nil, rec, "")
		if ok && (wantErr != nil || !bytes.Equal(got, want)) {
			t.Fatalf("appendRecordJSON %s, protojson %s (%v)", got, want, wantErr)
		}
		if !ok && wantErr == nil && utf8.ValidString(principal+method+errText+tool) &&
			secs >= minTimestampSeconds && secs <= maxTimestampSeconds && nanos >= 0 && nanos < 1e9 &&
			auditv1.Outcome_name[outcome] != "" && auditv1.Phase_name[phase] != "" {
			if (dsecs >= 0 && dnanos >= 0 || dsecs <= 0 && dnanos <= 0) && dnanos > -1e9 && dnanos < 1e9 &&
				dsecs >= -maxDurationSeconds && dsecs <= maxDurationSeconds {
				t.Fatalf("appendRecordJSON left a record it should write to protojson: %v", rec)
			}
		}
	})
}

func BenchmarkMarshalRecord(b *testing.B) {
	rec := everyField(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := marshalRecord("", rec); err != nil {
			b.Fatal(err)
		}
	}
}
