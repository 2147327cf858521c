package toolpin_test

import (
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/toolpin"
)

const base = `{"name":"echo","description":"Echoes its input","inputSchema":{"type":"object","properties":{"text":{"type":"string"},"n":{"type":"number"}},"required":["text"]},"annotations":{"readOnlyHint":true}}`

func digest(t *testing.T, item string) string {
	t.Helper()
	name, d, err := toolpin.Digest([]byte(item))
	if err != nil {
		t.Fatalf("Digest(%s): %v", item, err)
	}
	if name != "echo" {
		t.Fatalf("name = %q", name)
	}
	if !toolpin.ValidDigest(d) {
		t.Fatalf("digest %q is not valid", d)
	}
	return d
}

func TestDigestIgnoresForm(t *testing.T) {
	t.Parallel()
	want := digest(t, base)
	for name, item := range map[string]string{
		"reordered keys": `{"annotations":{"readOnlyHint":true},"inputSchema":{"required":["text"],"properties":{"n":{"type":"number"},"text":{"type":"string"}},"type":"object"},"description":"Echoes its input","name":"echo"}`,
		"whitespace":     strings.ReplaceAll(strings.ReplaceAll(base, ",", ",\n  "), ":", " : "),
		"string escapes": strings.Replace(base, `"Echoes its input"`, `"Echoes its \u0069nput"`, 1),
		"presentation":   strings.Replace(base, `{"name":"echo",`, `{"name":"echo","title":"Echo","_meta":{"x":1},`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := digest(t, item); got != want {
				t.Errorf("digest %s, want %s (same content)", got, want)
			}
		})
	}
}

func TestDigestSeesContent(t *testing.T) {
	t.Parallel()
	orig := digest(t, base)
	for name, item := range map[string]string{
		"description":      strings.Replace(base, "Echoes its input", "Echoes its input, and mails it", 1),
		"schema":           strings.Replace(base, `"required":["text"]`, `"required":["text","n"]`, 1),
		"array order":      strings.Replace(base, `"required":["text"]`, `"required":["text",""]`, 1),
		"annotations":      strings.Replace(base, `"readOnlyHint":true`, `"readOnlyHint":false`, 1),
		"outputSchema":     strings.Replace(base, `"annotations"`, `"outputSchema":{"type":"object"},"annotations"`, 1),
		"no annotations":   strings.Replace(base, `,"annotations":{"readOnlyHint":true}`, ``, 1),
		"null description": strings.Replace(base, `"Echoes its input"`, `null`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := digest(t, item); got == orig {
				t.Errorf("digest unchanged by a change of %s", name)
			}
		})
	}
}

func TestDigestRefuses(t *testing.T) {
	t.Parallel()
	for name, item := range map[string]string{
		"not an object":  `["echo"]`,
		"no name":        `{"description":"x"}`,
		"empty name":     `{"name":""}`,
		"name not text":  `{"name":7}`,
		"long name":      `{"name":"` + strings.Repeat("a", toolpin.MaxNameBytes+1) + `"}`,
		"duplicate":      `{"name":"echo","description":"a","description":"b"}`,
		"nested dup":     `{"name":"echo","inputSchema":{"type":"object","type":"string"}}`,
		"deep":           `{"name":"echo","inputSchema":` + strings.Repeat(`[`, 100) + strings.Repeat(`]`, 100) + `}`,
		"deep objects":   `{"name":"echo","inputSchema":` + strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat(`}`, 100) + `}`,
		"truncated":      `{"name":"echo","description":"a`,
		"trailing data":  `{"name":"echo"} {}`,
		"invalid syntax": `{"name":"echo",}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, d, err := toolpin.Digest([]byte(item)); err == nil {
				t.Errorf("Digest(%.80s) = %s, want an error", item, d)
			}
		})
	}
}

func FuzzDigest(f *testing.F) {
	f.Add([]byte(base))
	f.Add([]byte(`{"name":"a","inputSchema":{"b":[1,2,{"c":null}]}}`))
	f.Fuzz(func(t *testing.T, item []byte) {
		name, d, err := toolpin.Digest(item)
		if err != nil {
			return
		}
		if name == "" || !toolpin.ValidDigest(d) {
			t.Fatalf("Digest accepted %q with name %q digest %q", item, name, d)
		}
	})
}
