package jsonrpc_test

import (
	"fmt"
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
		// message, when set, is the error message expected
		message string
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
		{name: "case-variant method after method", body: `{"jsonrpc":"2.0","method":"a","METHOD":"b"}`, code: jsonrpc.CodeInvalidRequest},
		{name: "escaped duplicate key", body: `{"jsonrpc":"2.0","id":1,"method":"ping","\u006dethod":"tools/call"}`, code: jsonrpc.CodeInvalidRequest},
		{name: "long-s duplicate deep in arguments", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":[{"s":1,"ſ":2}]}}}`, code: jsonrpc.CodeInvalidRequest},
		{name: "lone case-variant name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"a"}}`, code: jsonrpc.CodeInvalidParams},
		{name: "lone case-variant arguments", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","ARGUMENTS":{}}}`, code: jsonrpc.CodeInvalidParams},
		{name: "lone case-variant uri", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"URI":"file:///a"}}`, code: jsonrpc.CodeInvalidParams},
		{name: "variant of an unread params member", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"Name":"a"}}`, kind: jsonrpc.KindRequest, method: "tools/list"},
		{name: "escaped name", body: `{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"n\u0061me":"\u0065cho"}}`, kind: jsonrpc.KindRequest, method: "tools/call", tool: "echo"},
		{name: "resources/read uri", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}`, kind: jsonrpc.KindRequest, method: "resources/read", tool: "file:///a"},
		{name: "keys at the object bound", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":` + keysObject(jsonrpc.MaxObjectKeys) + `}}`, kind: jsonrpc.KindRequest, method: "tools/call", tool: "a"},
		{name: "keys over the object bound", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":` + keysObject(jsonrpc.MaxObjectKeys+1) + `}}`, code: jsonrpc.CodeInvalidRequest, message: "an object with more than 4096 members"},
		{name: "members over the message bound", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":[` + strings.TrimSuffix(strings.Repeat(keysObject(jsonrpc.MaxObjectKeys)+",", jsonrpc.MaxMembers/jsonrpc.MaxObjectKeys), ",") + `]}}}`, code: jsonrpc.CodeInvalidRequest, message: "more than 131072 object members in one message"},
		{name: "batch at the bound", body: batch(jsonrpc.MaxBatch), batch: true, kind: jsonrpc.KindRequest, method: "ping"},
		{name: "batch over the bound", body: batch(jsonrpc.MaxBatch + 1), batch: true, code: jsonrpc.CodeInvalidRequest, message: "a batch of more than 1024 messages"},
		{name: "batch with a bad message then bad JSON", body: `[{"jsonrpc":"1.0","id":1,"method":"ping"},{"jsonrpc":]`, batch: true, code: jsonrpc.CodeParseError},
		{name: "batch not allowed wins over a bad message", body: `[{"jsonrpc":"1.0","id":1,"method":"ping"}]`, code: jsonrpc.CodeInvalidRequest, message: "batches are not allowed in this protocol revision"},
		{name: "bad message then trailing data", body: `{"jsonrpc":"1.0","id":1,"method":"ping"} x`, code: jsonrpc.CodeParseError},
		{name: "invalid utf8 in a key", body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"\xc3\x28\":1}}", code: jsonrpc.CodeParseError},
		{name: "utf8 surrogate half", body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"a\":\"\xed\xa0\x80\"}}", code: jsonrpc.CodeParseError},
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
				if tc.message != "" && err.Error() != tc.message {
					t.Fatalf("error %q, want %q", err, tc.message)
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

// keysObject returns a JSON object of n distinct members.
func keysObject(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":%d`, i, i)
	}
	b.WriteByte('}')
	return b.String()
}

// batch returns a batch of n pings.
func batch(n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i)
	}
	b.WriteByte(']')
	return b.String()
}
