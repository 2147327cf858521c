//go:build ignore

// generate.go refreshes the binary's copies of examples/ (see internal/examplecopy). Run it
// with `go generate ./cmd/gatehouse` after changing examples/policies; TestExamplesInSync
// fails until then.
package main

import (
	"fmt"
	"os"

	"github.com/gatehouse-mcp/gatehouse/cmd/gatehouse/internal/examplecopy"
)

func main() {
	if err := examplecopy.Write("../..", "."); err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		os.Exit(1)
	}
}
