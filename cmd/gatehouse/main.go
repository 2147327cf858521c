// Command gatehouse is the single-process gateway (`gatehouse up`) and the operator CLI.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gatehouse:", err)
		os.Exit(1)
	}
}

const usage = `usage: gatehouse <command> [flags]

commands:
  up        run every service in one process, on one port (single-process mode)
  token     issue, list and revoke gateway API tokens
  policy    write, check and roll out Cedar policies: validate, test, explain, apply
  servers   the registry: list, show, approve quarantined tools, import server.json
  audit     the audit log: query, tail, replay a session, test a policy change on past calls, verify
  dev       development helpers: certs DIR (etcd TLS certificates for split mode)
  example-server echo
            the example MCP server the embedded default config runs

Run 'gatehouse <command> -h' for a command's flags.`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("no command")
	}
	switch args[0] {
	case "up":
		return up(ctx, args[1:], getenv, stdout, stderr)
	case "token":
		return tokenCmd(ctx, args[1:], getenv, stdout, stderr)
	case "example-server":
		return exampleServer(ctx, args[1:], stdout, stderr)
	case "dev":
		return dev(args[1:], stdout, stderr)
	case "policy":
		return policyCmd(ctx, args[1:], getenv, stdout, stderr)
	case "servers":
		return serversCmd(ctx, args[1:], getenv, stdout, stderr)
	case "audit":
		return auditCmd(ctx, args[1:], getenv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
