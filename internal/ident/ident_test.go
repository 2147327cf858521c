package ident_test

import (
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/ident"
)

func TestValidServerName(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		in   string
		want bool
	}{
		{"simple", "echo", true},
		{"digits and separators inside", "0a.b_c-d", true},
		{"longest", strings.Repeat("a", ident.MaxServerNameBytes), true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", ident.MaxServerNameBytes+1), false},
		{"upper case", "Echo", false},
		{"separator first", "-echo", false},
		{"dot first", ".echo", false},
		{"slash", "a/b", false},
		{"space", "a b", false},
		{"non-ASCII", "échο", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := ident.ValidServerName(tt.in); got != tt.want {
				t.Fatalf("ValidServerName(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
