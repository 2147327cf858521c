package jsonrpc_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

func TestPeek(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		kind    jsonrpc.Kind
		id      string
		method  string
		token   string
		meta    string
		version string
		isError bool
		wantErr bool
	}{
		{name: "request", in: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"p1"}}}`, kind: jsonrpc.KindRequest, id: `7`, method: "tools/call", token: `"p1"`, meta: `{"progressToken":"p1"}`},
		{name: "request token before method", in: `{"params":{"_meta":{"progressToken":3}},"method":"tools/call","id":"a","jsonrpc":"2.0"}`, kind: jsonrpc.KindRequest, id: `"a"`, method: "tools/call", token: `3`, meta: `{"progressToken":3}`},
		{name: "request ignores params.progressToken", in: `{"jsonrpc":"2.0","id":1,"method":"x","params":{"progressToken":5}}`, kind: jsonrpc.KindRequest, id: `1`, method: "x"},
		{name: "progress notification", in: `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p1","progress":1}}`, kind: jsonrpc.KindNotification, method: "notifications/progress", token: `"p1"`},
		{name: "other notification has no token", in: `{"jsonrpc":"2.0","method":"notifications/message","params":{"progressToken":"p1","_meta":{"progressToken":2}}}`, kind: jsonrpc.KindNotification, method: "notifications/message", meta: `{"progressToken":2}`},
		{name: "initialize result", in: ` {"jsonrpc":"2.0","id":0,"result":{"capabilities":{"tools":{}},"protocolVersion":"2025-11-25"}} `, kind: jsonrpc.KindResponse, id: `0`, version: "2025-11-25"},
		{name: "error response", in: `{"jsonrpc":"2.0","id":"x","error":{"code":-32601,"message":"nope"}}`, kind: jsonrpc.KindResponse, id: `"x"`, isError: true},
		{name: "null id error", in: `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}`, kind: jsonrpc.KindResponse, id: `null`, isError: true},
		{name: "fraction id", in: `{"jsonrpc":"2.0","id":1.5,"result":{}}`, kind: jsonrpc.KindResponse, id: `1.5`},
		{name: "escaped keys and method", in: `{"jsonrpc":"2.0","\u0069d":1,"method":"tools\/list"}`, kind: jsonrpc.KindRequest, id: `1`, method: "tools/list"},
		{name: "unknown top-level member tolerated", in: `{"jsonrpc":"2.0","id":1,"result":{},"extra":true}`, kind: jsonrpc.KindResponse, id: `1`},
		{name: "unicode and nesting", in: `{"jsonrpc":"2.0","id":1,"result":{"a":[1,-2.5e+3,true,false,null,{"b":"é\ud83d\ude00"}]}}`, kind: jsonrpc.KindResponse, id: `1`},
		{name: "not an object", in: `[1]`, wantErr: true},
		{name: "batch", in: `[{"jsonrpc":"2.0","method":"x"}]`, wantErr: true},
		{name: "empty", in: ``, wantErr: true},
		{name: "missing jsonrpc", in: `{"id":1,"method":"x"}`, wantErr: true},
		{name: "wrong jsonrpc", in: `{"jsonrpc":"1.0","id":1,"method":"x"}`, wantErr: true},
		{name: "duplicate id", in: `{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}`, wantErr: true},
		{name: "case-variant method after method", in: `{"jsonrpc":"2.0","method":"a","METHOD":"b"}`, wantErr: true},
		{name: "case-variant method alone", in: `{"jsonrpc":"2.0","id":1,"result":{},"METHOD":"b"}`, wantErr: true},
		{name: "long-s variant of params", in: `{"jsonrpc":"2.0","method":"a","paramſ":{}}`, wantErr: true},
		{name: "escaped duplicate", in: `{"jsonrpc":"2.0","method":"a","\u006dethod":"b"}`, wantErr: true},
		{name: "duplicate deep in a result", in: `{"jsonrpc":"2.0","id":1,"result":{"a":[{"k":1,"K":2}]}}`, wantErr: true},
		{name: "case-variant progress token", in: `{"jsonrpc":"2.0","method":"notifications/progress","params":{"ProgressToken":1}}`, wantErr: true},
		{name: "case-variant _meta token", in: `{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"progresstoken":1}}}`, wantErr: true},
		{name: "case-variant result protocolVersion", in: `{"jsonrpc":"2.0","id":1,"result":{"protocolversion":"2025-11-25"}}`, wantErr: true},
		{name: "result and error", in: `{"jsonrpc":"2.0","id":1,"result":{},"error":{}}`, wantErr: true},
		{name: "method and result", in: `{"jsonrpc":"2.0","id":1,"method":"x","result":{}}`, wantErr: true},
		{name: "response without id", in: `{"jsonrpc":"2.0","result":{}}`, wantErr: true},
		{name: "object id", in: `{"jsonrpc":"2.0","id":{},"method":"x"}`, wantErr: true},
		{name: "null request id", in: `{"jsonrpc":"2.0","id":null,"method":"x"}`, wantErr: true},
		{name: "trailing data", in: `{"jsonrpc":"2.0","method":"x"} {}`, wantErr: true},
		{name: "truncated", in: `{"jsonrpc":"2.0","method":"x","params":{"a":[1,2`, wantErr: true},
		{name: "bad number", in: `{"jsonrpc":"2.0","method":"x","params":{"a":01}}`, wantErr: true},
		{name: "control char", in: "{\"jsonrpc\":\"2.0\",\"method\":\"x\ty\"}", wantErr: true},
		{name: "invalid utf8", in: "{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}", wantErr: true},
		{name: "too deep", in: `{"jsonrpc":"2.0","method":"x","params":{"a":` + strings.Repeat("[", jsonrpc.MaxDepth) + strings.Repeat("]", jsonrpc.MaxDepth) + `}}`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := jsonrpc.Peek([]byte(tc.in))
			if tc.wantErr {
				var e *jsonrpc.Error
				if !errors.Is(err, jsonrpc.ErrInvalidMessage) || !errors.As(err, &e) {
					t.Fatalf("Peek = %+v, %v; want ErrInvalidMessage and an *Error", m, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Peek: %v", err)
			}
			if m.Kind != tc.kind || string(m.ID) != tc.id || m.Method != tc.method || string(m.ProgressToken) != tc.token ||
				string(m.Meta) != tc.meta || m.ProtocolVersion != tc.version || m.IsError != tc.isError {
				t.Fatalf("Peek = kind %v id %s method %q token %s meta %s version %q error %v", m.Kind, m.ID, m.Method, m.ProgressToken, m.Meta, m.ProtocolVersion, m.IsError)
			}
			if string(m.Raw) != strings.TrimSpace(tc.in) {
				t.Fatalf("Raw = %q", m.Raw)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	t.Parallel()
	in := ` [ {"jsonrpc":"2.0","id":1,"result":{}} , {"jsonrpc":"2.0","method":"n"}] `
	msgs, err := jsonrpc.Split([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || string(msgs[0].Raw) != `{"jsonrpc":"2.0","id":1,"result":{}}` || string(msgs[1].Raw) != `{"jsonrpc":"2.0","method":"n"}` {
		t.Fatalf("Split = %+v", msgs)
	}
	for _, bad := range []string{`[]`, `[1]`, `[{"jsonrpc":"2.0","method":"n"}`, `[{"jsonrpc":"2.0","method":"n"}]x`, `[{"jsonrpc":"2.0","method":"n"};]`,
		`[{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","method":"n","Method":"m"}]`} {
		if _, err := jsonrpc.Split([]byte(bad)); !errors.Is(err, jsonrpc.ErrInvalidMessage) {
			t.Errorf("Split(%s) = %v, want ErrInvalidMessage", bad, err)
		}
	}
}

func TestIDKey(t *testing.T) {
	t.Parallel()
	same := [][2]string{{`"ab"`, `"a\u0062"`}, {`"a/b"`, `"a\/b"`}, {"\"\x7f\"", `"\u007f"`}, {`"é"`, `"\u00e9"`}}
	for _, p := range same {
		if jsonrpc.IDKey([]byte(p[0])) != jsonrpc.IDKey([]byte(p[1])) {
			t.Errorf("IDKey(%s) != IDKey(%s)", p[0], p[1])
		}
	}
	differ := [][2]string{{`1`, `"1"`}, {`"a"`, `"A"`}, {`1`, `1.0`}, {`null`, `"null"`}}
	for _, p := range differ {
		if jsonrpc.IDKey([]byte(p[0])) == jsonrpc.IDKey([]byte(p[1])) {
			t.Errorf("IDKey(%s) == IDKey(%s)", p[0], p[1])
		}
	}
	for _, raw := range []string{`"a\`, `"\u12`, `"`, `"a"b"`, `"\x"`, "\"\xff\""} {
		if got := jsonrpc.IDKey([]byte(raw)); got != raw {
			t.Errorf("IDKey(%q) = %q, want the bytes themselves", raw, got)
		}
	}
	m := jsonrpc.Message{Kind: jsonrpc.KindResponse, ID: []byte(`"a\/b"`)}
	if !m.IsResponseTo([]byte(`"a/b"`)) || m.IsResponseTo(nil) || m.IsResponseTo([]byte(`"a/c"`)) {
		t.Error("IsResponseTo does not compare normalised ids")
	}
}

// TestIsResponseToEchoedAllocs: the common case, an id echoed as it was written, is matched
// without normalising either id (the bridge asks for every upstream message). Not parallel:
// AllocsPerRun.
func TestIsResponseToEchoedAllocs(t *testing.T) {
	echoed := jsonrpc.Message{Kind: jsonrpc.KindResponse, ID: []byte(`"call-7"`)}
	id := []byte(`"call-7"`)
	if allocs := testing.AllocsPerRun(100, func() {
		if !echoed.IsResponseTo(id) {
			t.Fatal("an echoed id is not matched")
		}
	}); allocs != 0 {
		t.Errorf("IsResponseTo of an id echoed as written: %v allocations, want 0", allocs)
	}
}
