package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gatehouse-mcp/gatehouse/examples/servers/echo/echoserver"
)

//go:generate go run generate.go

// defaultPolicies are examples/policies (copied by go generate): the policies `gatehouse up`
// uses without --policy-dir.
//
//go:embed embedded/policies
var defaultPolicies embed.FS

// writeDefaultPolicies replaces dir's contents with the embedded default policies and returns
// dir: policysvc loads a directory, and this one belongs to gatehouse (it is rewritten at
// every start, so an upgrade brings the new defaults).
func writeDefaultPolicies(dir string) (string, error) {
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("default policies: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("default policies: %w", err)
	}
	sub, err := fs.Sub(defaultPolicies, "embedded/policies")
	if err != nil {
		return "", err
	}
	err = fs.WalkDir(sub, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(sub, path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, filepath.Base(path)), data, 0o600)
	})
	if err != nil {
		return "", fmt.Errorf("default policies: %w", err)
	}
	return dir, nil
}

const exampleUsage = `usage: gatehouse example-server echo [flags]

  echo    the example MCP server of examples/servers/echo (stdio, or -http ADDR); the
          embedded default config runs it, so gatehouse up needs nothing else`

// exampleServer runs an example MCP server built into this binary.
func exampleServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "echo" {
		if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(stdout, exampleUsage)
			return nil
		}
		fmt.Fprintln(stderr, exampleUsage)
		return errors.New("example-server: want `echo`")
	}
	return echoserver.Run(ctx, args[1:], stderr)
}
