package cedarpolicy_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
)

const (
	policyA = `@id("a") permit (principal, action == Gatehouse::Action::"initialize", resource);`
	policyB = `@id("b") forbid (principal, action == Gatehouse::Action::"tools/call", resource);`
)

func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func load(t *testing.T, files map[string]string) *cedarpolicy.Bundle {
	t.Helper()
	b, err := cedarpolicy.Load(writeDir(t, files))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return b
}

// TestDigestFormat pins the documented encoding, which other tools (the CLI, a bundle store)
// must reproduce: per file in name order, u64 BE name length, name, u64 BE content length,
// content.
func TestDigestFormat(t *testing.T) {
	t.Parallel()
	h := sha256.New()
	for _, f := range [][2]string{{"a.cedar", policyA}, {"b.cedar", policyB}} {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(f[0]))))
		h.Write([]byte(f[0]))
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(f[1]))))
		h.Write([]byte(f[1]))
	}
	want := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if got := load(t, map[string]string{"b.cedar": policyB, "a.cedar": policyA}).Version(); got != want {
		t.Fatalf("version = %s, want %s", got, want)
	}
	// New takes files in name order whatever order they come in.
	b, err := cedarpolicy.New([]cedarpolicy.File{{Name: "b.cedar", Content: []byte(policyB)}, {Name: "a.cedar", Content: []byte(policyA)}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Version() != want {
		t.Fatalf("New: version = %s, want %s", b.Version(), want)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	base := map[string]string{"a.cedar": policyA, "b.cedar": policyB}
	v := load(t, base).Version()
	tests := []struct {
		name  string
		files map[string]string
		same  bool
	}{
		{"same content elsewhere", map[string]string{"a.cedar": policyA, "b.cedar": policyB}, true},
		{"other files ignored", map[string]string{"a.cedar": policyA, "b.cedar": policyB, "README.md": "x", ".hidden.cedar": "junk"}, true},
		{"content changed", map[string]string{"a.cedar": policyA, "b.cedar": policyB + "\n"}, false},
		{"file renamed", map[string]string{"a.cedar": policyA, "c.cedar": policyB}, false},
		{"content moved between files", map[string]string{"a.cedar": policyA + policyB, "b.cedar": ""}, false},
		{"file added", map[string]string{"a.cedar": policyA, "b.cedar": policyB, "c.cedar": ""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := load(t, tt.files).Version()
			if (got == v) != tt.same {
				t.Errorf("version %s vs base %s: same = %v, want %v", got, v, got == v, tt.same)
			}
		})
	}
}

func TestLoadFollowsSymlinks(t *testing.T) {
	t.Parallel()
	// A Kubernetes ConfigMap volume: the files are symlinks into a hidden data directory.
	dir := t.TempDir()
	data := filepath.Join(dir, "..data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "a.cedar"), []byte(policyA), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "a.cedar"), filepath.Join(dir, "a.cedar")); err != nil {
		t.Fatal(err)
	}
	b, err := cedarpolicy.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(b.Files(), []string{"a.cedar"}) || b.Len() != 1 {
		t.Fatalf("files %q, %d policies; want a.cedar with 1", b.Files(), b.Len())
	}
}

func TestPolicyIDs(t *testing.T) {
	t.Parallel()
	b := load(t, map[string]string{"p.cedar": policyA + "\n\npermit (principal, action, resource);\n"})
	var ids []string
	for id := range b.All() {
		ids = append(ids, string(id))
	}
	if want := []string{"a", "p.cedar:3"}; !slices.Equal(ids, want) {
		t.Fatalf("ids = %q, want %q", ids, want)
	}
}

func shippedSchema(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../../examples/policies/gatehouse.cedarschema")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestProblems: New reports every problem it finds, each at its file and, where cedar-go
// gives one, its line and column, in file and position order.
func TestProblems(t *testing.T) {
	t.Parallel()
	schema := shippedSchema(t)
	_, err := cedarpolicy.New([]cedarpolicy.File{
		{Name: "z.cedar", Content: []byte("permit (principal, action, resource)\nwhen { 1 + };\n")},
		{Name: "gatehouse.cedarschema", Content: schema},
		{Name: "b.cedar", Content: []byte("// two problems in one policy\n@id(\"two\")\npermit (principal, action == Gatehouse::Action::\"initialize\", resource is Gatehouse::Server)\nwhen { resource.owner == principal.team };\n" +
			"@id(\"a\") permit (principal, action == Gatehouse::Action::\"initialize\", resource);\n")},
		{Name: "a.cedar", Content: []byte(policyA)},
		{Name: "../x.cedar", Content: []byte(policyA)},
	})
	var perr *cedarpolicy.Error
	if !errors.As(err, &perr) {
		t.Fatalf("err = %v, want a *cedarpolicy.Error", err)
	}
	var got []string
	for _, p := range perr.Problems {
		got = append(got, p.String())
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`^file name "\.\./x\.cedar": must be a base name`),
		regexp.MustCompile("^b\\.cedar:2:1: .*attribute `owner`"),
		regexp.MustCompile("^b\\.cedar:2:1: .*attribute `team`"),
		regexp.MustCompile(`^b\.cedar:5:1: policy id "a" already used at a\.cedar:1$`),
		regexp.MustCompile(`^z\.cedar:2:13: parser error: parse error at ";"`),
	}
	if len(got) != len(want) {
		t.Fatalf("problems:\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	for i, w := range want {
		if !w.MatchString(got[i]) {
			t.Errorf("problem %d = %q, want %v", i, got[i], w)
		}
	}
	if err.Error() != strings.Join(got, "\n") {
		t.Errorf("Error() = %q, want the problems one a line", err.Error())
	}
}

func TestSchemaProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, schema, want string
	}{
		{"syntax", "namespace X {\n entity A {\n x: String \n}", "s.cedarschema:4:2: expected ';', got EOF"},
		{"undefined type", "namespace X {\n entity A { x: Strin };\n}", `s.cedarschema: resolve schema: entity "X::A" shape: attribute "x": undefined type "Strin"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := cedarpolicy.New([]cedarpolicy.File{{Name: "s.cedarschema", Content: []byte(tt.schema)}, {Name: "a.cedar", Content: []byte("// none\n")}})
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestProblemLimit: a bundle with a problem in every one of thousands of policies reports a
// bounded list, and says how many more there were.
func TestProblemLimit(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	for i := range 500 {
		fmt.Fprintf(&b, "@id(\"p%d\") permit (principal, action == Gatehouse::Action::\"nope\", resource);\n", i)
	}
	_, err := cedarpolicy.New([]cedarpolicy.File{{Name: "s.cedarschema", Content: shippedSchema(t)}, {Name: "a.cedar", Content: []byte(b.String())}})
	var perr *cedarpolicy.Error
	if !errors.As(err, &perr) {
		t.Fatalf("err = %v", err)
	}
	last := perr.Problems[len(perr.Problems)-1]
	if len(perr.Problems) != 101 || !strings.HasPrefix(last.Message, "and ") || !strings.HasSuffix(last.Message, " more problems") {
		t.Fatalf("%d problems, last %q; want 100 and a count of the rest", len(perr.Problems), last)
	}
}

// TestValidateRequest: requests are checked against the schema for the actions it declares,
// and left alone for those it does not (the gateway asks about every method).
func TestValidateRequest(t *testing.T) {
	t.Parallel()
	b, err := cedarpolicy.New([]cedarpolicy.File{{Name: "s.cedarschema", Content: shippedSchema(t)}, {Name: "a.cedar", Content: []byte(policyA)}})
	if err != nil {
		t.Fatal(err)
	}
	principal := types.NewEntityUID(cedarpolicy.TypePrincipal, "alice")
	server := types.NewEntityUID(cedarpolicy.TypeServer, "files")
	initialize := types.NewEntityUID(cedarpolicy.TypeAction, "initialize")
	valid := types.NewRecord(types.RecordMap{
		"time":   types.NewRecord(types.RecordMap{"unix": types.Long(0), "hour": types.Long(0), "weekday": types.Long(4)}),
		"source": types.String("127.0.0.1"), "session": types.String(""), "revision": types.String(""), "method": types.String("initialize"),
	})
	if err := b.ValidateRequest(cedar.Request{Principal: principal, Action: initialize, Resource: server, Context: valid}); err != nil {
		t.Errorf("a valid request: %v", err)
	}
	withContext := types.NewRecord(types.RecordMap{"force": types.True})
	if err := b.ValidateRequest(cedar.Request{Principal: principal, Action: initialize, Resource: server, Context: withContext}); err == nil {
		t.Error("a context the schema does not declare passed")
	}
	tool := types.NewEntityUID(cedarpolicy.TypeTool, "files/read")
	if err := b.ValidateRequest(cedar.Request{Principal: principal, Action: initialize, Resource: tool}); err == nil {
		t.Error("a resource type the action does not apply to passed")
	}
	undeclared := types.NewEntityUID(cedarpolicy.TypeAction, "experimental/frobnicate")
	if err := b.ValidateRequest(cedar.Request{Principal: principal, Action: undeclared, Resource: server, Context: withContext}); err != nil {
		t.Errorf("an undeclared action: %v", err)
	}
}

func TestReadDir(t *testing.T) {
	t.Parallel()
	dir := writeDir(t, map[string]string{"b.cedar": policyB, "a.cedar": policyA, "s.cedarschema": "x", "notes.md": "x", ".h.cedar": "x"})
	if err := os.Mkdir(filepath.Join(dir, "tests.cedar"), 0o700); err != nil {
		t.Fatal(err)
	}
	files, err := cedarpolicy.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
	}
	if want := []string{"a.cedar", "b.cedar", "s.cedarschema"}; !slices.Equal(names, want) {
		t.Fatalf("files %q, want %q", names, want)
	}
}

// TestNestingLimit: brackets nested deeper than MaxNesting are refused before cedar-go sees
// them (its validator takes time more than linear in record nesting: 40,000 levels took
// seconds), with the position of the first bracket too many; brackets in strings and
// comments do not count.
func TestNestingLimit(t *testing.T) {
	t.Parallel()
	schema := shippedSchema(t)
	deep := "// deep\npermit (principal, action, resource) when { " + strings.Repeat("{a:", 40000) + "1" + strings.Repeat("}", 40000) + " == {} };"
	start := time.Now()
	_, err := cedarpolicy.New([]cedarpolicy.File{{Name: "s.cedarschema", Content: schema}, {Name: "a.cedar", Content: []byte(deep)}})
	// The parenthesis of the scope is the first level, so the 64th brace is one too many.
	want := fmt.Sprintf("a.cedar:2:%d: nested more than %d deep", len("permit (principal, action, resource) when { ")+3*(cedarpolicy.MaxNesting-1)+1, cedarpolicy.MaxNesting)
	if err == nil || err.Error() != want {
		t.Fatalf("err = %.200v, want %s", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Logf("took %v", d) // not asserted: the machine may be slow; the error above is the check
	}
	quoted := "// " + strings.Repeat("(", 100) + "\n@id(\"" + strings.Repeat("[", 100) + "\") permit (principal, action, resource) when { context has \"" + strings.Repeat("{", 100) + "\\\"\" };"
	if _, err := cedarpolicy.New([]cedarpolicy.File{{Name: "s.cedarschema", Content: schema}, {Name: "a.cedar", Content: []byte(quoted)}}); err != nil && strings.Contains(err.Error(), "nested") {
		t.Fatalf("brackets in comments and strings counted: %v", err)
	}
	deepSchema := "namespace X { entity A { a: " + strings.Repeat("{ a: ", 100) + "Long" + strings.Repeat(" }", 100) + " }; }"
	if _, err := cedarpolicy.New([]cedarpolicy.File{{Name: "s.cedarschema", Content: []byte(deepSchema)}, {Name: "a.cedar", Content: []byte(policyA)}}); err == nil || !strings.Contains(err.Error(), "s.cedarschema:1:") {
		t.Fatalf("a deep schema: %v", err)
	}
}

// TestLongMessages: a problem's message is bounded, however large the type cedar-go spells out.
func TestLongMessages(t *testing.T) {
	t.Parallel()
	var fields []string
	for i := range 500 {
		fields = append(fields, fmt.Sprintf("field%d: 1", i))
	}
	p := "permit (principal, action == Gatehouse::Action::\"initialize\", resource) when { {" + strings.Join(fields, ", ") + "} == {} };"
	_, err := cedarpolicy.New([]cedarpolicy.File{{Name: "s.cedarschema", Content: shippedSchema(t)}, {Name: "a.cedar", Content: []byte(p)}})
	var perr *cedarpolicy.Error
	if !errors.As(err, &perr) {
		t.Fatalf("err = %v, want problems", err)
	}
	for _, pr := range perr.Problems {
		if len(pr.Message) > 1100 {
			t.Fatalf("a message of %d bytes", len(pr.Message))
		}
		if !strings.HasSuffix(pr.Message, "(truncated)") {
			t.Fatalf("message %q: want the type cut short", pr.Message)
		}
	}
}

// The members of the arguments a bundle's policies read are found in their text; a use of
// the record as a whole needs them all.
func TestArgumentMembers(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		text    string
		all     bool
		members string
	}{
		{`permit (principal, action, resource) when { context has arguments && context.arguments has force && context.arguments.force };`, false, "force"},
		{`permit (principal, action, resource) when { context.arguments["dry run"] == true && context.arguments . mode == "x" };`, false, "dry run,mode"},
		{`permit (principal, action, resource) when { context.arguments == {} };`, true, ""},
		{`permit (principal, action, resource);`, false, ""},
	} {
		b, err := cedarpolicy.New([]cedarpolicy.File{{Name: "p.cedar", Content: []byte(tt.text)}})
		if err != nil {
			t.Fatal(err)
		}
		all, members := b.ArgumentMembers()
		got := slices.Sorted(maps.Keys(members))
		if all != tt.all || strings.Join(got, ",") != tt.members {
			t.Errorf("%s: all %v members %v, want %v %q", tt.text, all, got, tt.all, tt.members)
		}
	}
}
