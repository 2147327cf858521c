// Command echo is a small MCP server built with the official Go SDK. It is the
// upstream Gatehouse is measured and tested against: its own cost is tiny and the
// same for every path, so what a benchmark sees is the path in front of it.
//
// It offers two tools (echo, add), one resource (echo://readme) and one prompt
// (greet). It speaks stdio by default; with -http it serves Streamable HTTP at
// /mcp (and a liveness probe at /healthz) on a loopback address. Logs go to
// stderr only, because in stdio mode stdout is the protocol.
//
//	echo                              # stdio
//	echo -http 127.0.0.1:8931         # Streamable HTTP at http://127.0.0.1:8931/mcp
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse-mcp/gatehouse/examples/servers/echo/echoserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := echoserver.Run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}
