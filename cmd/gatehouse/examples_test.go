package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/cmd/gatehouse/internal/examplecopy"
)

// TestExamplesInSync: the binary's copies of examples/policies and examples/servers/echo are
// what `go generate ./cmd/gatehouse` makes of them now.
func TestExamplesInSync(t *testing.T) {
	drift, err := examplecopy.Drift("../..", ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(drift) > 0 {
		t.Fatalf("the copies of examples/ have drifted; run `go generate ./cmd/gatehouse`:\n%s", strings.Join(drift, "\n"))
	}
}

func TestDefaultPoliciesWritten(t *testing.T) {
	dir, err := writeDefaultPolicies(t.TempDir() + "/p")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"default.cedar", "gatehouse.cedarschema"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", name, st, err)
		}
	}
}

func TestDefaultConfigRunsThisBinary(t *testing.T) {
	file, err := loadConfig("", "/opt/bin/gatehouse")
	if err != nil {
		t.Fatal(err)
	}
	if len(file.Servers) != 1 {
		t.Fatalf("servers %v", file.Servers)
	}
	if got := strings.Join(file.Servers[0].GetCommand(), " "); got != "/opt/bin/gatehouse example-server echo" {
		t.Fatalf("command %q, want the running binary's example-server echo", got)
	}
}
