package jsonrpc_test

import (
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

func TestParse(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	cases := []struct {
		name   string
		body   string
		batch  bool
		code   int // 0: ok
		kind   jsonrpc.Kind
		method string
		tool   string
	}{
		{name: "tools/call", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`, kind: jsonrpc.KindRequest, method: "tools/call", tool: "echo"},
		{name: "string id", body: `{"jsonrpc":"2.0","id":"a","method":"ping"}`, kind: jsonrpc.KindRequest, method: "ping"},
		{name: "notification", body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`, kind: jsonrpc.KindNotification, method: "notifications/initialized"},
		{name: "response", body: `{"jsonrpc":"2.0","id":7,"result":{}}`, kind: jsonrpc.KindResponse},
		{name: "error response", body: `{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"x"}}`, kind: jsonrpc.KindResponse},
		{name: "truncated", body: `{"jsonrpc":"2.0","id":1,"method":`, code: jsonrpc.CodeParseError},
		{name: "not json", body: `hello`, code: jsonrpc.CodeParseError},
		{name: "empty", body: ``, code: jsonrpc.CodeParseError},
		{name: "invalid utf8", body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}", code: jsonrpc.CodeParseError},
		{name: "raw NUL", body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\x00\"}", code: jsonrpc.CodeParseError},
		{name: "trailing data", body: `{"jsonrpc":"2.0","id":1,"method":"ping"} {}`, code: jsonrpc.CodeParseError},
		{name: "duplicate key", body: `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`, code: jsonrpc.CodeInvalidRequest},
		{name: "case-variant key", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}`, code: jsonrpc.CodeInvalidRequest},
		{name: "unicode case-variant key", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"paramſ":{"name":"b"}}`, code: jsonrpc.CodeInvalidRequest},
		{name: "kelvin-sign case-variant key", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"k":1,"K":2}}}`, code: jsonrpc.CodeInvalidRequest},
		{name: "unknown top-level member", body: `{"jsonrpc":"2.0","id":1,"method":"ping","ID":2}`, code: jsonrpc.CodeInvalidRequest},
		{name: "name too long", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + strings.Repeat("n", 1025) + `"}}`, code: jsonrpc.CodeInvalidParams},
		{name: "non-ASCII keys that differ", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"é":1,"è":2}}}`, kind: jsonrpc.KindRequest, method: "tools/call", tool: "a"},
		{name: "wrong case member", body: `{"jsonrpc":"2.0","id":1,"Method":"ping"}`, code: jsonrpc.CodeInvalidRequest},
		{name: "wrong jsonrpc", body: `{"jsonrpc":"1.0","id":1,"method":"ping"}`, code: jsonrpc.CodeInvalidRequest},
		{name: "missing jsonrpc", body: `{"id":1,"method":"ping"}`, code: jsonrpc.CodeInvalidRequest},
		{name: "null id", body: `{"jsonrpc":"2.0","id":null,"method":"ping"}`, code: jsonrpc.CodeInvalidRequest},
		{name: "object id", body: `{"jsonrpc":"2.0","id":{},"method":"ping"}`, code: jsonrpc.CodeInvalidRequest},
		{name: "fraction id", body: `{"jsonrpc":"2.0","id":1.5,"method":"ping"}`, code: jsonrpc.CodeInvalidRequest},
		{name: "method and result", body: `{"jsonrpc":"2.0","id":1,"method":"a","result":{}}`, code: jsonrpc.CodeInvalidRequest},
		{name: "scalar params", body: `{"jsonrpc":"2.0","id":1,"method":"a","params":3}`, code: jsonrpc.CodeInvalidRequest},
		{name: "tools/call without name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`, code: jsonrpc.CodeInvalidParams},
		{name: "deep nesting", body: deep, code: jsonrpc.CodeInvalidRequest},
		{name: "batch refused", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, code: jsonrpc.CodeInvalidRequest},
		{name: "batch allowed", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, batch: true, kind: jsonrpc.KindRequest, method: "ping"},
		{name: "empty batch", body: `[]`, batch: true, code: jsonrpc.CodeInvalidRequest},
		{name: "array body not message", body: `[1]`, batch: true, code: jsonrpc.CodeInvalidRequest},
		{name: "scalar body", body: `1`, code: jsonrpc.CodeInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			msgs, _, err := jsonrpc.Parse([]byte(tc.body), tc.batch)
			if tc.code != 0 {
				if err == nil {
					t.Fatalf("Parse succeeded, want error code %d", tc.code)
				}
				if got := jsonrpc.AsError(err).Code; got != tc.code {
					t.Fatalf("code = %d (%v), want %d", got, err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			m := msgs[0]
			if m.Kind != tc.kind || m.Method != tc.method || m.Name != tc.tool {
				t.Fatalf("got kind=%v method=%q name=%q, want %v %q %q", m.Kind, m.Method, m.Name, tc.kind, tc.method, tc.tool)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"x"}]`,
		`{"jsonrpc":"2.0","id":"x","result":{"a":[1,2,{"b":null}]}}`,
		`{"a":1,"A":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, _, err := jsonrpc.Parse(body, true)
		if err != nil {
			if jsonrpc.AsError(err).Code == 0 {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		for _, m := range msgs {
			if m.Kind == 0 {
				t.Fatalf("message without a kind")
			}
		}
	})
}
