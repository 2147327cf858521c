package cedarpolicy_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"

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
