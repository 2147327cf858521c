package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// `gatehouse audit`: the audit log. Each subcommand lives in a file of its own
// (auditverify.go, …) and is listed in auditCommands.

// auditCommand is one `gatehouse audit` subcommand.
type auditCommand struct {
	synopsis string // the usage line after "gatehouse audit "
	run      func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error
}

// auditCommands are the subcommands by name.
var auditCommands = map[string]auditCommand{
	"verify": {auditVerifySynopsis, auditVerify},
}

func auditUsage() string {
	var b strings.Builder
	b.WriteString("usage: gatehouse audit <command> [flags]\n\ncommands:\n")
	names := make([]string, 0, len(auditCommands))
	for n := range auditCommands {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %s\n", auditCommands[n].synopsis)
	}
	b.WriteString("\nRun 'gatehouse audit <command> -h' for a command's flags.")
	return b.String()
}

func auditCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, auditUsage())
		return errors.New("audit: no command")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, auditUsage())
		return nil
	}
	c, ok := auditCommands[args[0]]
	if !ok {
		fmt.Fprintln(stderr, auditUsage())
		return fmt.Errorf("audit: unknown command %q", args[0])
	}
	err := c.run(ctx, args[1:], getenv, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}
