package cedarpolicy_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
)

// FuzzNew: whatever files a bundle holds (ApplyBundle takes them from the network), New
// returns a bundle or an *Error whose problems name files of the bundle, and never panics.
func FuzzNew(f *testing.F) {
	schema, err := os.ReadFile("../../examples/policies/gatehouse.cedarschema")
	if err != nil {
		f.Fatal(err)
	}
	policies, err := os.ReadFile("../../examples/policies/default.cedar")
	if err != nil {
		f.Fatal(err)
	}
	f.Add("default.cedar", policies, schema)
	f.Add("a.cedar", []byte(policyA+"\n"+policyB), schema)
	f.Add("a.cedar", []byte("permit (principal, action, resource)\nwhen { 1 + };"), schema)
	f.Add("a.cedar", []byte(`@id("x") permit (principal, action, resource) when { resource.nope };`), []byte("namespace X { entity A; }"))
	f.Add("../a.cedar", []byte(policyA), []byte("entity {"))
	f.Add("a.txt", []byte{0xff, 0}, []byte{})
	f.Fuzz(func(t *testing.T, name string, policy, schema []byte) {
		files := []cedarpolicy.File{{Name: name, Content: policy}, {Name: "s.cedarschema", Content: schema}}
		b, err := cedarpolicy.New(files)
		if err == nil {
			if !strings.HasPrefix(b.Version(), "sha256:") || b.Version() != cedarpolicy.Digest([]cedarpolicy.File{files[1], files[0]}) && b.Version() != cedarpolicy.Digest(files) {
				t.Fatalf("version %s", b.Version())
			}
			return
		}
		var perr *cedarpolicy.Error
		if !errors.As(err, &perr) || len(perr.Problems) == 0 {
			t.Fatalf("err = %v, want problems", err)
		}
		for _, p := range perr.Problems {
			if p.File != "" && p.File != name && p.File != "s.cedarschema" {
				t.Fatalf("problem in an unknown file: %+v", p)
			}
			if p.Line < 0 || p.Column < 0 {
				t.Fatalf("negative position: %+v", p)
			}
		}
	})
}
