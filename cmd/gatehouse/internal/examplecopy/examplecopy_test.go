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
		{"server file added", func(repo, _ string) { write(t, repo+"/examples/servers/echo/hang.go", "package main\n") }, "internal/echoserver/hang.go: missing"},
		{"server file removed", func(repo, _ string) { _ = os.Remove(repo + "/examples/servers/echo/server.go") }, "internal/echoserver/server.go: no longer in"},
		{"copy edited", func(_, mod string) { write(t, mod+"/internal/echoserver/main.go", "package echoserver\n") }, "internal/echoserver/main.go"},
		// A hand-written file beside the copies is not drift; tests are not copied.
		{"hand-written and test files", func(repo, mod string) {
			write(t, mod+"/internal/echoserver/run.go", "package echoserver\n")
			write(t, repo+"/examples/servers/echo/main_test.go", "package main\n")
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo, mod := t.TempDir(), t.TempDir()
			write(t, repo+"/examples/policies/default.cedar", "forbid(principal, action, resource);")
			write(t, repo+"/examples/policies/README.md", "not copied")
			write(t, repo+"/examples/servers/echo/main.go", "// Command echo.\npackage main\n\nfunc main() {}\n")
			write(t, repo+"/examples/servers/echo/server.go", "package main\n\nfunc newServer() {}\n")
			if err := examplecopy.Write(repo, mod); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(mod + "/internal/echoserver/server.go")
			if err != nil || !strings.HasPrefix(string(got), examplecopy.Generated) || !strings.Contains(string(got), "\npackage echoserver\n") {
				t.Fatalf("copy %q %v: want a generated file of package echoserver", got, err)
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
