package jsonnav_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/jsonnav"
)

// FuzzNavigate holds the navigator to encoding/json on valid objects (the same members, the
// same values) and to no panic on anything.
func FuzzNavigate(f *testing.F) {
	for _, seed := range []string{
		`{"a":1,"b":"x\"y","c":[1,{"d":"}"}],"e":{"f":null}}`,
		` { "k" : true , "l":-1.5e3 } `,
		`{"tools":[{"name":"a","inputSchema":{"type":"object"}},{"name":"b\u00e9"}]}`,
		`{}`, `[]`, `{"a":}`, `{"a":"`, `{"a":[1,2}`, `"x"`, `{"a\\":1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := map[string]string{}
		err := jsonnav.Members(b, func(k []byte, s, e int) bool {
			if s < 0 || e > len(b) || s > e {
				t.Fatalf("offsets %d..%d out of %d", s, e, len(b))
			}
			key, ok := jsonnav.StringOf(append(append([]byte{'"'}, k...), '"'))
			if ok {
				got[key] = string(b[s:e])
			}
			return true
		})
		_ = jsonnav.Elements(b, func(s, e int) {
			if s < 0 || e > len(b) || s > e {
				t.Fatalf("element offsets %d..%d out of %d", s, e, len(b))
			}
		})
		var want map[string]json.RawMessage
		if json.Unmarshal(b, &want) != nil || bytes.Contains(b, []byte(`\u0000`)) {
			return
		}
		if err != nil {
			t.Fatalf("members of valid %q: %v", b, err)
		}
		if len(got) != len(want) {
			return // duplicate keys: encoding/json keeps the last, the navigator is never given them
		}
		for k, v := range want {
			var a, c any
			g, ok := got[k]
			if !ok || json.Unmarshal([]byte(g), &a) != nil || json.Unmarshal(v, &c) != nil || !reflect.DeepEqual(a, c) {
				t.Fatalf("member %q: %q, want %q", k, g, v)
			}
		}
	})
}
