package upstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPeek(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		kind    Kind
		id      string
		method  string
		token   string
		version string
		wantErr bool
	}{
		{name: "request", in: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"p1"}}}`, kind: KindRequest, id: `7`, method: "tools/call", token: `"p1"`},
		{name: "request token before method", in: `{"params":{"_meta":{"progressToken":3}},"method":"tools/call","id":"a","jsonrpc":"2.0"}`, kind: KindRequest, id: `"a"`, method: "tools/call", token: `3`},
		{name: "request ignores params.progressToken", in: `{"jsonrpc":"2.0","id":1,"method":"x","params":{"progressToken":5}}`, kind: KindRequest, id: `1`, method: "x"},
		{name: "progress notification", in: `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p1","progress":1}}`, kind: KindNotification, method: "notifications/progress", token: `"p1"`},
		{name: "other notification has no token", in: `{"jsonrpc":"2.0","method":"notifications/message","params":{"progressToken":"p1","_meta":{"progressToken":2}}}`, kind: KindNotification, method: "notifications/message"},
		{name: "initialize result", in: ` {"jsonrpc":"2.0","id":0,"result":{"capabilities":{"tools":{}},"protocolVersion":"2025-11-25"}} `, kind: KindResponse, id: `0`, version: "2025-11-25"},
		{name: "error response", in: `{"jsonrpc":"2.0","id":"x","error":{"code":-32601,"message":"nope"}}`, kind: KindResponse, id: `"x"`},
		{name: "null id error", in: `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}`, kind: KindResponse, id: `null`},
		{name: "escaped keys and method", in: `{"jsonrpc":"2.0","\u0069d":1,"method":"tools\/list"}`, kind: KindRequest, id: `1`, method: "tools/list"},
		{name: "unicode and nesting", in: `{"jsonrpc":"2.0","id":1,"result":{"a":[1,-2.5e+3,true,false,null,{"b":"é\ud83d\ude00"}]}}`, kind: KindResponse, id: `1`},
		{name: "not an object", in: `[1]`, wantErr: true},
		{name: "empty", in: ``, wantErr: true},
		{name: "missing jsonrpc", in: `{"id":1,"method":"x"}`, wantErr: true},
		{name: "wrong jsonrpc", in: `{"jsonrpc":"1.0","id":1,"method":"x"}`, wantErr: true},
		{name: "duplicate id", in: `{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}`, wantErr: true},
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
		{name: "too deep", in: `{"jsonrpc":"2.0","method":"x","params":{"a":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}}`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Peek([]byte(tc.in))
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidMessage) {
					t.Fatalf("Peek = %+v, %v; want ErrInvalidMessage", m, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Peek: %v", err)
			}
			if m.Kind != tc.kind || string(m.ID) != tc.id || m.Method != tc.method || string(m.ProgressToken) != tc.token || m.ProtocolVersion != tc.version {
				t.Fatalf("Peek = kind %v id %s method %q token %s version %q", m.Kind, m.ID, m.Method, m.ProgressToken, m.ProtocolVersion)
			}
			if string(m.Raw) != tc.in {
				t.Fatalf("Raw = %q", m.Raw)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	t.Parallel()
	in := ` [ {"jsonrpc":"2.0","id":1,"result":{}} , {"jsonrpc":"2.0","method":"n"}] `
	msgs, err := Split([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || string(msgs[0].Raw) != `{"jsonrpc":"2.0","id":1,"result":{}}` || string(msgs[1].Raw) != `{"jsonrpc":"2.0","method":"n"}` {
		t.Fatalf("Split = %+v", msgs)
	}
	for _, bad := range []string{`[]`, `[1]`, `[{"jsonrpc":"2.0","method":"n"}`, `[{"jsonrpc":"2.0","method":"n"}]x`, `[{"jsonrpc":"2.0","method":"n"};]`} {
		if _, err := Split([]byte(bad)); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("Split(%s) = %v, want ErrInvalidMessage", bad, err)
		}
	}
}

func TestIDKey(t *testing.T) {
	t.Parallel()
	if IDKey([]byte(`"ab"`)) != IDKey([]byte(`"a\u0062"`)) {
		t.Error("escaped and plain spellings of one string id differ")
	}
	if IDKey([]byte(`1`)) == IDKey([]byte(`"1"`)) {
		t.Error("number and string ids collide")
	}
	m := Message{Kind: KindResponse, ID: []byte(`"a\/b"`)}
	if !m.IsResponseTo([]byte(`"a/b"`)) {
		t.Error("IsResponseTo does not normalise escapes")
	}
}

func TestValidProtocolVersion(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{"2025-11-25": true, "": false, "2025-11-25\r\nX: y": false, strings.Repeat("1", 33): false} {
		if got := ValidProtocolVersion(v); got != want {
			t.Errorf("ValidProtocolVersion(%q) = %v", v, got)
		}
	}
}

// FuzzPeek checks that Peek never accepts what encoding/json rejects, and that the members it
// reads agree with encoding/json's reading of the same bytes.
func FuzzPeek(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"t"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":0.5}}`,
		`{"jsonrpc":"2.0","id":"x","result":{"protocolVersion":"2025-06-18"}}`,
		`[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","method":"a"}]`,
		`{"jsonrpc":"2.0","id":1,"result":{"s":"\u00e9\ud83d\ude00\n"}}`,
		`{"jsonrpc":"2.0","id":-0.5e10,"error":{"code":1}}`,
		`{"a":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := Split(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("error does not wrap ErrInvalidMessage: %v", err)
			}
			return
		}
		if !json.Valid(data) || !utf8.Valid(data) {
			t.Fatalf("Split accepted invalid JSON %q", data)
		}
		for _, m := range msgs {
			var v struct {
				ID     json.RawMessage `json:"id"`
				Method string          `json:"method"`
				Params struct {
					Token json.RawMessage `json:"progressToken"`
					Meta  struct {
						Token json.RawMessage `json:"progressToken"`
					} `json:"_meta"`
				} `json:"params"`
			}
			if json.Unmarshal(m.Raw, &v) != nil {
				// Only a params/_meta that is not an object fails here; Peek skips those.
				continue
			}
			if m.Method != v.Method || !bytes.Equal(m.ID, v.ID) && !(m.ID == nil && string(v.ID) == "null") {
				t.Fatalf("Peek read method %q id %s; encoding/json read %q %s", m.Method, m.ID, v.Method, v.ID)
			}
		}
	})
}

func BenchmarkPeek(b *testing.B) {
	msg := []byte(`{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":"` + strings.Repeat("lorem ipsum ", 4096) + `"}],"structuredContent":{"a":[1,2,3],"b":{"c":true}}}}`)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Peek(msg); err != nil {
			b.Fatal(err)
		}
	}
}
