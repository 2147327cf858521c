package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/gatehouse-mcp/gatehouse/internal/devcerts"
)

const devUsage = `usage: gatehouse dev certs DIR

  certs DIR   write a development CA, an etcd server certificate (localhost, 127.0.0.1, ::1)
              and a client certificate for the services into DIR (mode 0700; keys 0600),
              for etcd with --client-cert-auth (deploy/local/run.sh uses it)`

// dev runs the development helpers.
func dev(args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(stdout, devUsage)
		return nil
	}
	if len(args) != 2 || args[0] != "certs" {
		fmt.Fprintln(stderr, devUsage)
		return errors.New("dev: want `certs DIR`")
	}
	p, err := devcerts.Generate(args[1])
	if err != nil {
		return fmt.Errorf("dev certs: %w", err)
	}
	fmt.Fprintf(stdout, "CA %s\nserver %s %s\nclient %s %s\n", p.CA, p.ServerCert, p.ServerKey, p.ClientCert, p.ClientKey)
	return nil
}
