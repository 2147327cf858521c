package jsonrpc_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestWithTraceparent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string
		ok             bool
	}{
		{"replaced", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","_meta":{"a":1,"traceparent":"00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-00","b":2}}}`,
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","_meta":{"a":1,"traceparent":"` + tp + `","b":2}}}`, true},
		{"replaced, not a string", `{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":[1, 2]}}}`,
			`{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":"` + tp + `"}}}`, true},
		{"replaced, oversized", `{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":"` + strings.Repeat("f", 600) + `"}}}`,
			`{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":"` + tp + `"}}}`, true},
		{"into _meta", `{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"progressToken":7}}}`,
			`{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":"` + tp + `","progressToken":7}}}`, true},
		{"into an empty _meta", `{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{ }}}`,
			`{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":"` + tp + `" }}}`, true},
		{"into params", `{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"e","arguments":{"_meta":1}}}`,
			`{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"_meta":{"traceparent":"` + tp + `"},"name":"e","arguments":{"_meta":1}}}`, true},
		{"into empty params", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{}}`,
			`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"traceparent":"` + tp + `"}}}`, true},
		{"params added", `{"jsonrpc":"2.0","id":1,"method":"ping"}`,
			`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"traceparent":"` + tp + `"}}}`, true},
		{"params an array", `{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}`, `{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}`, false},
		{"_meta null", `{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":null}}`, `{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":null}}`, false},
		{"a notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, false},
		{"a response", `{"jsonrpc":"2.0","id":1,"result":{}}`, `{"jsonrpc":"2.0","id":1,"result":{}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := jsonrpc.Peek([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			out, ok := jsonrpc.WithTraceparent(&m, tp)
			if string(out) != tc.want || ok != tc.ok {
				t.Fatalf("got %s %v\nwant %s %v", out, ok, tc.want, tc.ok)
			}
			if ok {
				if back, err := jsonrpc.Peek(out); err != nil || back.Traceparent != tp {
					t.Fatalf("the result reads back as traceparent %q (%v)", back.Traceparent, err)
				}
			}
		})
	}
}

func TestWithTraceparentRefusesBadValues(t *testing.T) {
	t.Parallel()
	m, err := jsonrpc.Peek([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"", `00-"},"x":{"-`, strings.ToUpper(tp), tp[:54]} {
		if out, ok := jsonrpc.WithTraceparent(&m, v); ok || string(out) != string(m.Raw) {
			t.Errorf("%q: got %s %v, want the message unchanged", v, out, ok)
		}
	}
	hand := jsonrpc.Message{Raw: []byte(`{"jsonrpc":"2.0","id":1,"method":"x","params":{}}`), Kind: jsonrpc.KindRequest, Params: []byte(`{}`)}
	if _, ok := jsonrpc.WithTraceparent(&hand, tp); ok {
		t.Error("a Message whose slices do not alias Raw was spliced")
	}
}

func TestParseReadsMetaTraceContext(t *testing.T) {
	t.Parallel()
	ms, _, err := jsonrpc.Parse([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","_meta":{"traceparent":"`+tp+`","tracestate":"k=v"}}}`), false)
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].Traceparent != tp || ms[0].Tracestate != "k=v" {
		t.Fatalf("traceparent %q tracestate %q", ms[0].Traceparent, ms[0].Tracestate)
	}
}

// FuzzWithTraceparent holds the splice to encoding/json: what comes out decodes to what went
// in with params._meta.traceparent set, and nothing else changed.
func FuzzWithTraceparent(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add(`{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":1, "a":{}}}}`)
	f.Add(`{"jsonrpc":"2.0","id":1,"method":"x","params":{ "a" : [ ] }}`)
	f.Add(`{"jsonrpc":"2.0","id":1,"method":"x" }`)
	f.Fuzz(func(t *testing.T, in string) {
		m, err := jsonrpc.Peek([]byte(in))
		if err != nil {
			return
		}
		out, ok := jsonrpc.WithTraceparent(&m, tp)
		if !ok {
			if string(out) != in {
				t.Fatalf("not spliced, yet changed: %s", out)
			}
			return
		}
		var want, got map[string]any
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Skip() // encoding/json reads it otherwise (invalid UTF-8 replaced, say)
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		params, _ := want["params"].(map[string]any)
		if params == nil {
			params = map[string]any{}
			want["params"] = params
		}
		meta, _ := params["_meta"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
			params["_meta"] = meta
		}
		meta["traceparent"] = tp
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("in  %s\nout %s", in, out)
		}
		if _, err := jsonrpc.Peek(out); err != nil {
			t.Fatalf("the codec refuses what it spliced: %s: %v", out, err)
		}
	})
}
