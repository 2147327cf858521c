package jsonredact_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/jsonredact"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		paths []string
		doc   string
		want  string
	}{
		{"member", []string{"$.password"}, `{"user":"a","password":"p"}`, `{"user":"a","password":"[redacted]"}`},
		{"absent member", []string{"$.password"}, `{"user":"a"}`, `{"user":"a"}`},
		{"nested", []string{"$.auth.token"}, `{"auth":{"user":"a","token":{"k":[1,2]}},"token":"kept"}`, `{"auth":{"user":"a","token":"[redacted]"},"token":"kept"}`},
		{"every element", []string{"$.items[*].secret"}, `{"items":[{"secret":1,"n":"a"},{"n":"b"},{"secret":null},7]}`, `{"items":[{"secret":"[redacted]","n":"a"},{"n":"b"},{"secret":"[redacted]"},7]}`},
		{"every member", []string{"$.*"}, `{"a":1,"b":{"c":2}}`, `{"a":"[redacted]","b":"[redacted]"}`},
		{"every member then name", []string{"$.*.key"}, `{"a":{"key":1,"x":2},"b":{"x":3},"c":[{"key":4}]}`, `{"a":{"key":"[redacted]","x":2},"b":{"x":3},"c":[{"key":4}]}`},
		{"star and name together", []string{"$.*.x", "$.a.y"}, `{"a":{"x":1,"y":2,"z":3},"b":{"x":4,"y":5}}`, `{"a":{"x":"[redacted]","y":"[redacted]","z":3},"b":{"x":"[redacted]","y":5}}`},
		{"prefix path wins", []string{"$.a", "$.a.b"}, `{"a":{"b":1}}`, `{"a":"[redacted]"}`},
		{"element path on an object matches nothing", []string{"$.a[*]"}, `{"a":{"b":1}}`, `{"a":{"b":1}}`},
		{"member path on an array matches nothing", []string{"$.a.b"}, `{"a":[{"b":1}]}`, `{"a":[{"b":1}]}`},
		{"top-level array", []string{"$[*].p"}, `[{"p":1},{"q":2}]`, `[{"p":"[redacted]"},{"q":2}]`},
		{"non-object arguments", []string{"$.password"}, `"password"`, `"password"`},
		{"null arguments", []string{"$.password"}, `null`, `null`},
		{"whitespace kept", []string{"$.p"}, " { \"p\" : \"x\" ,\n \"q\" : [ 1 ] } ", " { \"p\" : \"[redacted]\" ,\n \"q\" : [ 1 ] } "},
		{"escaped key", []string{"$.password"}, `{"pass\u0077ord":"p","a":"\"}"}`, `{"pass\u0077ord":"[redacted]","a":"\"}"}`},
		{"braces inside strings", []string{"$.b"}, `{"a":"{[\"","b":"]}","c":1}`, `{"a":"{[\"","b":"[redacted]","c":1}`},
		{"every occurrence in a deep array", []string{"$.a[*][*]"}, `{"a":[[1,2],[],3,[{"x":1}]]}`, `{"a":[["[redacted]","[redacted]"],[],3,["[redacted]"]]}`},
		{"empty containers", []string{"$.a.b", "$.c[*]"}, `{"a":{},"c":[]}`, `{"a":{},"c":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := jsonredact.Compile(tt.paths)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Redact([]byte(tt.doc), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("Redact(%s) =\n %s\nwant\n %s", tt.doc, got, tt.want)
			}
			if !json.Valid(got) {
				t.Fatalf("result is not JSON: %s", got)
			}
		})
	}
}

func TestRedactLimit(t *testing.T) {
	t.Parallel()
	p, err := jsonredact.Compile([]string{"$.big", "$.n"})
	if err != nil {
		t.Fatal(err)
	}
	big := `{"big":"` + strings.Repeat("x", 1000) + `","keep":"ab"}`
	// Masking the large value brings the document under the limit: the size that counts is
	// the result's.
	got, err := p.Redact([]byte(big), 40)
	if err != nil || string(got) != `{"big":"[redacted]","keep":"ab"}` {
		t.Fatalf("Redact = %s, %v", got, err)
	}
	if _, err := p.Redact([]byte(big), len(`{"big":"[redacted]","keep":"ab"}`)-1); !errors.Is(err, jsonredact.ErrTooLarge) {
		t.Fatalf("one byte over: err = %v, want ErrTooLarge", err)
	}
	// Masking can grow a document (1 becomes "[redacted]").
	if _, err := p.Redact([]byte(`{"n":1}`), 10); !errors.Is(err, jsonredact.ErrTooLarge) {
		t.Fatalf("grown: err = %v, want ErrTooLarge", err)
	}
}

func TestRedactMalformed(t *testing.T) {
	t.Parallel()
	p, err := jsonredact.Compile([]string{"$.a.b", "$.c[*]"})
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{``, `{`, `{"a":`, `{"a":{"b":1}`, `{"a" 1}`, `{"c":[1,}`, `{"c":[1 2]}`, `{"a":1}x`, `{"a":"\"}`, `}`, `{"a":{"b":]}}`, `{"\u":1}`} {
		if got, err := p.Redact([]byte(doc), 1<<20); err == nil {
			t.Errorf("Redact(%q) = %q, want an error", doc, got)
		}
	}
}

// A document far deeper than any path costs no recursion: values no path reaches are
// skipped flat.
func TestRedactDeepDocument(t *testing.T) {
	t.Parallel()
	p, err := jsonredact.Compile([]string{"$.a"})
	if err != nil {
		t.Fatal(err)
	}
	deep := `{"x":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `,"a":1}`
	got, err := p.Redact([]byte(deep), 1<<20)
	if err != nil || !strings.HasSuffix(string(got), `,"a":"[redacted]"}`) {
		t.Fatalf("Redact: %v", err)
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	tooMany := make([]string, jsonredact.MaxPaths+1)
	for i := range tooMany {
		tooMany[i] = "$.a"
	}
	tests := []struct {
		name  string
		paths []string
		want  string
	}{
		{"no dollar", []string{"password"}, `starting with "$"`},
		{"dollar alone", []string{"$"}, "would mask everything"},
		{"index", []string{"$.a[0]"}, "want .name, .* or [*]"},
		{"empty name", []string{"$..a"}, "empty member name"},
		{"trailing dot", []string{"$.a."}, "empty member name"},
		{"quoted name", []string{`$['a']`}, "want .name"},
		{"space", []string{"$.a b"}, "no spaces"},
		{"star in a name", []string{"$.a*"}, "'*'"},
		{"too deep", []string{"$" + strings.Repeat(".a", jsonredact.MaxDepth+1)}, "more than 16 segments"},
		{"too long", []string{"$." + strings.Repeat("a", jsonredact.MaxPathBytes)}, "longer than 256 bytes"},
		{"too many", tooMany, "more than the limit of 32"},
		{"invalid UTF-8", []string{"$.\xff"}, "UTF-8"},
		{"second path named", []string{"$.a", "$b"}, `[1] "$b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := jsonredact.Compile(tt.paths); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := jsonredact.Compile([]string{"$" + strings.Repeat(".a", jsonredact.MaxDepth), "$.*", "$[*]", "$.a-b_c.ü"}); err != nil {
		t.Fatalf("valid paths: %v", err)
	}
}

// FuzzRedact: whatever the document, Redact neither panics nor returns invalid JSON for a
// valid document, and leaves a document without the masked names unchanged.
func FuzzRedact(f *testing.F) {
	for _, s := range []string{`{"password":"p","user":"a"}`, `{"items":[{"secret":1}]}`, `[1,{"p":[]}]`, `"x"`, `{"a":{"b":{"c":"\\\""}}}`} {
		f.Add(s)
	}
	p, err := jsonredact.Compile([]string{"$.password", "$.items[*].secret", "$.*.c", "$[*].p"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		got, err := p.Redact([]byte(doc), 1<<20)
		if json.Valid([]byte(doc)) {
			if err != nil {
				t.Fatalf("valid document %q: %v", doc, err)
			}
			if !json.Valid(got) {
				t.Fatalf("Redact(%q) = %q: not JSON", doc, got)
			}
		}
	})
}
