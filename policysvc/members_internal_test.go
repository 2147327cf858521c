package policysvc

import (
	"testing"
)

// convertMembers agrees with the full conversion on the members it converts, escapes and
// nesting included, and steps over the others.
func TestConvertMembersAgrees(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		`{}`,
		` { "a" : 1 , "b":"x\"}y" ,"c":[1,{"d":"]"}],"e":null,"f":true,"g":-1.25,"h":{"i":{"j":"\\"}}} `,
		`{"quote\"d":"v","back\\slash":{"k":[[],{}]}}`,
	} {
		full, err := convertArguments([]byte(raw))
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		all := map[string]bool{}
		for k := range full.All() {
			all[string(k)] = true
		}
		all["e"] = true // null: absent in both
		some, err := convertMembers([]byte(raw), all)
		if err != nil {
			t.Fatalf("%s: members: %v", raw, err)
		}
		if !some.Equal(full) {
			t.Fatalf("%s: members %v, full %v", raw, some, full)
		}
		none, err := convertMembers([]byte(raw), map[string]bool{"zz": true})
		if err != nil || none.Len() != 0 {
			t.Fatalf("%s: no member read: %v %v", raw, none, err)
		}
	}
	for _, raw := range []string{`[1]`, `{"a":1`, `{"a" 1}`, `{"a":1,}`, `{"a":1} x`, `{"a":"x}`, `{a:1}`} {
		if _, err := convertMembers([]byte(raw), map[string]bool{"a": true}); err == nil {
			t.Errorf("%s: converted", raw)
		}
	}
}
