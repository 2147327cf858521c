// Package echoserver is examples/servers/echo (the example MCP server, a main package) as a
// package: the other files are generated copies of it (see ../examplecopy), this one exports
// its entry point for `gatehouse example-server echo`.
package echoserver

import (
	"context"
	"io"
)

// Run runs the echo server with the command line args (stdio by default), logging to stderr,
// until ctx ends or stdin closes.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	return run(ctx, args, stderr)
}
