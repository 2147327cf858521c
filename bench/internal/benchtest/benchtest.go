// Package benchtest holds what the benchmark's tests share.
package benchtest

import (
	"os"
	"path/filepath"
	"testing"
)

// RepoRoot finds the Gatehouse work tree (the directory holding go.work) above the test's
// directory, and skips the test when there is none.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("not inside the Gatehouse work tree")
		}
		dir = parent
	}
}
