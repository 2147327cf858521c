// Command authsvc serves Gatehouse's authentication (split mode): API tokens kept in etcd as
// digests, and optional anonymous access to named servers.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse-mcp/gatehouse/authsvc"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "authsvc:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. Logs (JSON) and flag usage go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg authsvc.Config
	return svcmain.Main(ctx, svcmain.Spec{
		Name:  "auth",
		Flags: cfg.RegisterFlags,
		Etcd:  svcmain.EtcdRequired,
		Build: func(ctx context.Context, env *svcmain.Env) (*svcmain.Serving, error) {
			svc, err := authsvc.New(cfg, env.Etcd, env.Logger)
			if err != nil {
				return nil, err
			}
			return &svcmain.Serving{
				Handlers: svc.Handlers(),
				// Closing the service ends the WatchRevocations streams, which would otherwise
				// hold the drain until its deadline; the ingresses resubscribe elsewhere.
				Stopping: func() { _ = svc.Close(context.Background()) },
				Close:    svc.Close,
			}, nil
		},
	}, args, getenv, stdout)
}
