// Command gatebench measures Gatehouse against its floors (a raw loopback
// HTTP echo, the MCP client straight to the upstream, and a bare reverse
// proxy) and writes a Markdown report. Run it from the repository root:
//
//	go run ./bench/cmd/gatebench -sessions 1,32 -repeats 5 -out docs/benchmarks.md
//
// See /work/shared/BENCH.md (docs/benchmarks.md once written) for what is
// measured and why.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gatebench:", err)
		os.Exit(1)
	}
}
