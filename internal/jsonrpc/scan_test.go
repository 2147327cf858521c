package jsonrpc

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzValidate checks the hand-written validator against encoding/json: whatever it accepts
// encoding/json accepts, whatever encoding/json accepts it accepts too unless it refuses a
// duplicate key or deep nesting, and the members it reads are the ones encoding/json decodes.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
		`[1,2.5e-3,-0,true,false,null,"\u00e9\n",{"a":[]}]`,
		`{"a":1,"A":2}`, `{"\u0061":1,"a":2}`, `{"k":1,"\u212a":2}`, `"x"`, `-`, `01`, `1.`, `{"a" 1}`,
		`{"a":"\ud800"}`, "{\"a\":\"\x01\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !utf8.Valid(body) {
			return
		}
		err := validate(body)
		valid := json.Valid(body)
		if err == nil && !valid {
			t.Fatalf("validate accepted what encoding/json rejects: %q", body)
		}
		if err != nil && valid && AsError(err).Code == CodeParseError {
			t.Fatalf("validate rejected valid JSON as a parse error (%v): %q", err, body)
		}
		if err != nil {
			return
		}
		trimmed := bytes.TrimSpace(body)
		if trimmed[0] != '{' {
			return
		}
		want := map[string]json.RawMessage{}
		if err := json.Unmarshal(trimmed, &want); err != nil {
			t.Fatalf("encoding/json cannot decode an accepted object: %v", err)
		}
		got := 0
		_ = eachMember(trimmed, func(k string, v []byte) error {
			got++
			w, ok := want[k]
			if !ok || !bytes.Equal(bytes.TrimSpace(w), v) {
				t.Fatalf("member %q = %s, encoding/json has %s", k, v, w)
			}
			return nil
		})
		if got != len(want) {
			t.Fatalf("%d members read, encoding/json has %d", got, len(want))
		}
	})
}
