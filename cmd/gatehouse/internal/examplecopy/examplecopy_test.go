package examplecopy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/cmd/gatehouse/internal/examplecopy"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDrift: Write makes the copies, and every kind of divergence is then reported.
func TestDrift(t *testing.T) {
	tests := []struct {
		name   string
		change func(repo, mod string)
		want   string
	}{
		{"in sync", func(string, string) {}, ""},
		{"policy changed", func(repo, _ string) {
			write(t, repo+"/examples/policies/default.cedar", "permit(principal, action, resource);")
		}, "embedded/policies/default.cedar: differs"},
		{"policy added", func(repo, _ string) { write(t, repo+"/examples/policies/extra.cedar", "x") }, "embedded/policies/extra.cedar: missing"},
		{"policy removed", func(repo, _ string) { _ = os.Remove(repo + "/examples/policies/default.cedar") }, "embedded/policies/default.cedar: no longer in"},
		{"copy edited", func(_, mod string) { write(t, mod+"/embedded/policies/default.cedar", "edited") }, "embedded/policies/default.cedar: differs"},
		// Files the copy does not match (docs beside the policies) are not drift.
		{"other files", func(repo, _ string) { write(t, repo+"/examples/policies/NOTES.md", "x") }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo, mod := t.TempDir(), t.TempDir()
			write(t, repo+"/examples/policies/default.cedar", "forbid(principal, action, resource);")
			write(t, repo+"/examples/policies/README.md", "not copied")
			write(t, repo+"/examples/policies/schema.cedarschema", "namespace X {}")
			if err := examplecopy.Write(repo, mod); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(mod + "/embedded/policies/schema.cedarschema"); err != nil || string(got) != "namespace X {}" {
				t.Fatalf("copy %q %v: want the schema as it is", got, err)
			}
			if _, err := os.Stat(mod + "/embedded/policies/README.md"); !os.IsNotExist(err) {
				t.Fatalf("README.md copied (%v): only policies and the schema are", err)
			}
			tt.change(repo, mod)
			drift, err := examplecopy.Drift(repo, mod)
			if err != nil {
				t.Fatal(err)
			}
			joined := strings.Join(drift, "\n")
			if tt.want == "" && joined != "" || tt.want != "" && !strings.Contains(joined, tt.want) {
				t.Fatalf("drift %q, want %q", joined, tt.want)
			}
		})
	}
}
